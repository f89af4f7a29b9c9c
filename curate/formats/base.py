"""The format base: what every export format declares, and the helpers its writer and reader share.

A format is one ``Format`` subclass. It declares once its ``name``, whether token-level labels survive in it
(``carries_labels``), the single data file it writes (``suffix``; ``--out file.ext`` names that file directly),
its export options (a dataclass, one docstring per field) and implements ``write``; a format that can be read back
also implements ``read``. Everything else an export does (the ``--out`` checks, curriculum order, the token-label
refusal, ``curate.json``) is shared and lives here or in ``curate.formats``.

The helpers below are the building blocks the trainer files use: writers that write to a temporary name and
rename it into place, column checks with one-line errors, curriculum ordering, and the readers that turn
jsonl / json / parquet files back into rows.

Preference pairs (``curate select ROLLOUTS --method pairs``) are rows with a ``prompt`` and two message lists,
``chosen`` and ``rejected`` (``PAIR_COLUMNS``). Only formats with ``pairwise = True`` write them; the other trainer
formats refuse such a version and name the pairwise ones. ``pair_row`` reads a pair back from any of the layouts
the trainers accept (message lists, single message objects, plain strings, or an implicit prompt shared by both).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import CurateError, InputError
from curate.outputs import atomic_write
from curate.records import CANONICAL_TYPES, ROLES, row_id
from curate.store import Version, canonical_json, sha256_file

MANIFEST = "curate.json"
#: the record of a single-file export sits beside the file as ``<file>.curate.json`` (``sidecar``)
SIDECAR_SUFFIX = ".curate.json"
TOKEN_COLUMNS = ("input_ids", "labels")
# Columns of a long-format rollouts version: one row per sampled completion, so a prompt repeats.
LONG_FORMAT = ("prompt_id", "sample")
# Columns of a preference-pairs version besides its ``prompt``: the preferred and the dispreferred turns.
PAIR_COLUMNS = ("chosen", "rejected")


def holds_pairs(columns: Sequence[str]) -> bool:
    """Whether a table with these columns holds preference pairs (``chosen`` and ``rejected``).

    >>> holds_pairs(["id", "prompt", "chosen", "rejected"]), holds_pairs(["id", "messages"])
    (True, False)
    """
    return all(c in columns for c in PAIR_COLUMNS)


@dataclass
class ExportResult:
    """What an export wrote: the folder, the files (data first, ``curate.json`` last) and the trainer note; with
    ``out="-"``, ``text`` holds the jsonl (the CLI prints it to stdout) and ``files`` is empty."""

    out_dir: Path
    files: list[Path]
    note: str
    text: str | None = None

    def __str__(self) -> str:
        return self.note


@dataclass
class ExportContext:
    """Where and what one export writes: handed to ``Format.write``."""

    version: Version
    out_dir: Path
    stem: str
    fmt: str
    curriculum: str | None
    # Fields an exporter made up (not columns of the version): the importer drops them again.
    added: dict[str, list[str]] = field(default_factory=dict)
    # The registered formats that write preference pairs: named when another format refuses a pairs version.
    pairwise_formats: tuple[str, ...] = ()


@dataclass
class NoOptions:
    """This format takes no export options."""


class Format:
    """One export format. Subclasses set the class attributes, implement ``write`` and, if readable, ``read``.

    >>> from curate.formats import get_format
    >>> get_format("verl").suffix, get_format("verl").carries_labels
    ('.parquet', False)
    """

    name: ClassVar[str]
    suffix: ClassVar[str | None] = None
    """The single data file it writes, so ``--out x<suffix>`` names that file; None: it writes into a folder only."""
    data_suffix: ClassVar[str | None] = None
    """The data file's suffix in a folder export, where it differs from ``suffix`` (a format with no single-file
    form, like llamafactory); None: ``suffix``."""
    carries_labels: ClassVar[bool] = False
    """Token-level labels (``input_ids``, ``labels``) survive in this format; other formats refuse such a version."""
    options: ClassVar[type] = NoOptions
    """The dataclass of this format's export options (each field documented); ``NoOptions`` when it has none."""
    whole_folder: ClassVar[bool] = False
    """The export is the whole ``--out`` folder, written in one piece and replacing it (hf); an import of it hashes
    the whole folder."""
    reads_split: ClassVar[bool] = False
    """``read`` picks a split of a multi-split source, so the split is part of the import's identity."""
    plain_import: ClassVar[bool] = False
    """``curate import --format NAME`` is the plain import (every column as stored), not ``read``."""
    pairwise: ClassVar[bool] = False
    """It writes preference pairs (``prompt``, ``chosen``, ``rejected``) and takes only a pairs version."""

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        """Write ``table`` (already in curriculum order) under ``ctx.out_dir``: the files written, data first, and
        the note lines telling the trainer how to read them.

        Write through ``write_jsonl`` / ``write_parquet`` / ``write_json`` or ``curate.outputs.atomic_write``: they
        make the folder on first write (a refused export leaves none) and rename each file into place."""
        raise NotImplementedError

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        """Rows in canonical field names from ``path`` (a file or folder in this format) and the files read.

        ``src`` is the source as given (for messages); ``split`` matters only where ``reads_split`` is set."""
        raise CurateError(f"--format {self.name} cannot be read back")

    @classmethod
    def readable(cls) -> bool:
        """Whether the format implements ``read``."""
        return cls.read is not Format.read

    @classmethod
    def folder_data_suffix(cls) -> str | None:
        """The suffix of the data file a folder export of this format holds (None for a ``whole_folder`` format)."""
        return cls.data_suffix or cls.suffix


# ---------------------------------------------------------------------------------------------- file writing
def jsonable(v: Any) -> Any:
    # Strict JSON readers (pyarrow's, used by `datasets`) reject NaN and Infinity: a missing score becomes null.
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as strict JSON lines (NaN and infinities become null), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(jsonable(row), ensure_ascii=False, allow_nan=False, default=str) + "\n")

    return atomic_write(path, write)


def write_parquet(path: Path, table: pa.Table) -> Path:
    """Write ``table`` as zstd parquet, atomically."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8), atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n"))


# ---------------------------------------------------------------------------------------------- shared checks
def _pairs_hint(ctx: ExportContext) -> str:
    return f"export it with a pairwise format ({', '.join(ctx.pairwise_formats) or 'none registered'})"


def require(table: pa.Table, ctx: ExportContext, column: str, why: str) -> None:
    """Refuse a version without ``column`` or with an empty value in it, naming the first such row."""
    if column not in table.column_names:
        pairs = f"; it holds preference pairs: {_pairs_hint(ctx)}" if holds_pairs(table.column_names) else ""
        raise CurateError(
            f"{ctx.version.ref}: --format {ctx.fmt} needs a {column!r} column ({why}); "
            f"the version has: {', '.join(table.column_names)}{pairs}"
        )
    if nulls := table.column(column).null_count:
        first = table.column(column).is_null().to_pylist().index(True)
        raise CurateError(f"{ctx.version.ref}: row {first}: field {column!r}: empty ({nulls} rows have none)")


def require_prompt_rows(table: pa.Table, ctx: ExportContext) -> None:
    """RL formats: a ``prompt`` on every row, and one row per prompt (not a rollouts version, not pairs)."""
    if holds_pairs(table.column_names):
        raise CurateError(
            f"{ctx.version.ref}: --format {ctx.fmt} wants one RL prompt per row, but this version holds preference "
            f"pairs (chosen, rejected); {_pairs_hint(ctx)}"
        )
    require(table, ctx, "prompt", "an RL prompt as a list of {role, content} turns")
    if all(c in table.column_names for c in LONG_FORMAT):
        raise CurateError(
            f"{ctx.version.ref}: --format {ctx.fmt} wants one row per prompt, but this is a rollouts version (one row "
            "per sampled completion: prompt_id, sample); select or aggregate it to prompts first "
            "(e.g. curate select REF --method difficulty)"
        )


def require_pairs(table: pa.Table, ctx: ExportContext) -> None:
    """Pairwise formats: ``prompt``, ``chosen`` and ``rejected`` on every row, each a non-empty list of turns."""
    missing = [c for c in ("prompt", *PAIR_COLUMNS) if c not in table.column_names]
    if missing:
        raise CurateError(
            f"{ctx.version.ref}: --format {ctx.fmt} writes preference pairs and needs columns prompt, chosen and "
            f"rejected (missing {', '.join(missing)}; make them from rollouts with curate select REF --method pairs)"
        )
    ids = table.column("id").to_pylist() if "id" in table.column_names else list(range(table.num_rows))
    for column in ("prompt", *PAIR_COLUMNS):
        kind = table.schema.field(column).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            raise CurateError(
                f"{ctx.version.ref}: field {column!r}: expected a list of {{role, content}} turns, got {kind}"
            )
        for i, turns in enumerate(table.column(column).to_pylist()):
            if not turns:
                raise CurateError(f"{ctx.version.ref}: row {i} (id {ids[i]}): field {column!r}: empty")


def extras(table: pa.Table, keep_canonical: Sequence[str] = ()) -> list[str]:
    """Non-canonical columns (scores, ranks, stage, pass rate, tags ...) plus the canonical ones asked for."""
    return [c for c in table.column_names if c not in CANONICAL_TYPES or c in keep_canonical]


def rows_of(table: pa.Table, columns: Sequence[str], rename: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``table`` as dicts, only ``columns`` that exist, keys renamed by ``rename``."""
    rename = rename or {}
    sub = table.select([c for c in columns if c in table.column_names])
    return [{rename.get(k, k): v for k, v in r.items()} for r in sub.to_pylist()]


def curriculum_order(table: pa.Table, op: dict[str, Any] | None = None) -> tuple[pa.Table, str | None]:
    """Rows in selection order (``stage`` ascending, then the latest ``*_rank``; ties keep stored order) and the
    curriculum's label, or None when the order is no curriculum: only a staged version (a ``stage`` column) or one
    a selector ordered as a curriculum (its recorded ``params`` hold an ``order``, as ``--method difficulty
    --order easy-to-hard`` does) asks the trainer to keep it. Any other selection's rank is its pick order, which a
    trainer may shuffle freely.

    >>> curriculum_order(pa.table({"x": [1, 2], "random_rank": [2, 1]}))[1] is None
    True
    """
    keys = ["stage"] if "stage" in table.column_names else []
    ranks = [c for c in table.column_names if c.endswith("_rank")]
    if ranks:
        keys.append(ranks[-1])  # a selector appends its rank column last, so the last one is the latest op's
    if not keys:
        return table, None
    pos = "__curate_row__"
    indexed = table.append_column(pos, pa.array(range(table.num_rows), pa.int64()))
    # pyarrow puts nulls last by default: rows without a stage or rank go after the curriculum.
    order = pc.sort_indices(indexed, sort_keys=[(k, "ascending") for k in [*keys, pos]])
    params = (op or {}).get("params")
    ordered = isinstance(params, dict) and isinstance(params.get("order"), str)
    label = ", then ".join(keys) + (f" ({params['order']})" if ordered and "stage" not in keys else "")
    return table.take(order), label if "stage" in keys or ordered else None


def shuffle_line(curriculum: str | None, how: str) -> list[str]:
    """The note line saying the rows are a curriculum and ``how`` to keep the trainer from shuffling them."""
    if curriculum is None:
        return []
    return [f"Curriculum: rows are in {curriculum} order. {how}"]


def tokenizer_of(version: Version) -> str | None:
    """The tokenizer (or model) a pre-tokenised version was made with, as its manifest records it."""
    m = version.manifest
    for where in (m, m.get("op", {}), m.get("stats", {})):
        for key in ("tokenizer", "model"):
            if isinstance(where.get(key), str):
                return where[key]
    return None


# ---------------------------------------------------------------------------------------------- where an export goes
def out_location(out: Path, fmt: type[Format], version: Version) -> tuple[Path, str, Path | None]:
    """The folder to write in, the data file stem, and the file itself when ``out`` names one."""
    suffix = fmt.suffix
    if suffix and out.suffix == suffix:
        if out.is_dir():
            raise CurateError(f"--out {out}: a folder; a --out ending in {suffix} names the file to write")
        return out.parent, out.stem, out
    if out.exists() and not out.is_dir():
        raise CurateError(f"--out {out}: an existing file; --format {fmt.name} writes into a directory")
    if fmt.whole_folder and out.is_dir() and any(out.iterdir()) and meta_for(out).get("format") != fmt.name:
        raise CurateError(
            f"--out {out}: a non-empty directory that is not an {fmt.name} export by curate; the {fmt.name} format "
            "replaces the whole folder, so pick an empty or new one"
        )
    return out, version.name, None


def file_sums(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """sha256 of each named file in ``folder``."""
    return {n: sha256_file(folder / n) for n in names}


def same_export(
    out_dir: Path, single: Path | None, version: Version, fmt: type[Format], options: dict[str, Any]
) -> bool:
    """Whether ``out`` already holds this very export, untouched since: writing it again loses nothing."""
    meta = meta_for(single or out_dir)
    files = meta.get("files")
    sums = meta.get("sha256")
    if (
        meta.get("version_id") != version.id
        or meta.get("name") != version.name
        or meta.get("format") != fmt.name
        or meta.get("options") != options
        or not isinstance(files, list)
        or not all(isinstance(n, str) and n and Path(n).name == n for n in files)
        or not isinstance(sums, dict)
        or set(files) != set(sums)
    ):
        return False
    if fmt.whole_folder:
        # The export replaces the folder: anything beside its own files would be lost.
        if {p.name for p in out_dir.iterdir()} != {*files, MANIFEST}:
            return False
    else:
        data = single.name if single else f"{version.name}{fmt.folder_data_suffix()}"
        if data not in files:
            return False
    return all((out_dir / n).is_file() and sha256_file(out_dir / n) == sums[n] for n in files)


def check_overwrite(
    out_dir: Path,
    single: Path | None,
    version: Version,
    fmt: type[Format],
    options: dict[str, Any],
    overwrite: bool,
) -> None:
    """Refuse to write over an existing ``--out`` without ``overwrite``, unless it holds this same export."""
    if overwrite:
        return
    if single is not None:
        if not single.exists():
            return
        what = "exists"
    else:
        if not out_dir.is_dir() or not any(out_dir.iterdir()):
            return
        what = "is a non-empty folder"
    if same_export(out_dir, single, version, fmt, options):
        return
    raise CurateError(
        f"--out {single or out_dir}: {what}; pass --overwrite (overwrite=True) to write over "
        f"{'it' if single else 'the files of the same name'}, or choose another --out"
    )


# ---------------------------------------------------------------------------------------------- reading back
def sidecar(path: Path) -> Path:
    """The ``curate.json`` of an export written to the single file ``path``: ``<file>.curate.json`` beside it, so a
    ``--out data.jsonl`` leaves no ``curate.json`` in the folder it lands in.

    >>> sidecar(Path("runs/data.jsonl")).as_posix()
    'runs/data.jsonl.curate.json'
    """
    return path.with_name(path.name + SIDECAR_SUFFIX)


def meta_for(path: Path) -> dict[str, Any]:
    """The export record of ``path``: a file's ``<file>.curate.json``, else the ``curate.json`` beside it (a
    folder's own, or one that lists the file); {} when none describes ``path``."""
    candidates = [sidecar(path), path.parent / MANIFEST] if path.is_file() else [path / MANIFEST]
    for p in candidates:
        if not p.exists():
            continue
        try:
            meta = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(meta, dict):
            continue
        # A curate.json written for another file in the same folder says nothing about this one.
        files = meta.get("files")
        if path.is_file() and (not isinstance(files, list) or path.name not in files):
            continue
        return meta
    return {}


def data_files(path: Path, suffixes: tuple[str, ...], fmt: str) -> list[Path]:
    """The data files to read: ``path`` itself, the files its ``curate.json`` lists, or every file of a suffix."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or directory")
    meta = meta_for(path)
    if meta.get("files"):
        files = [path / f for f in meta["files"] if f.endswith(suffixes) and (path / f).is_file()]
    else:
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and p.name.endswith(suffixes)
            and p.name not in (MANIFEST, "dataset_info.json")
            and not p.name.endswith(SIDECAR_SUFFIX)
        )
    if not files:
        raise InputError(f"{path}: no {' / '.join(suffixes)} data file for --format {fmt}")
    return files


def read_rows(files: Sequence[Path]) -> list[dict[str, Any]]:
    """Every row of ``files`` (parquet, a JSON list, or JSON lines, by suffix), with one-line errors."""
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.name.endswith(".parquet"):
            try:
                rows += pq.read_table(f).to_pylist()
            except (pa.ArrowInvalid, OSError) as e:
                raise InputError(f"{f}: not a readable Parquet file ({e})") from None
        elif f.name.endswith(".json"):
            try:
                obj = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{f}: invalid JSON ({e})") from None
            if not isinstance(obj, list):
                raise InputError(f"{f}: expected a JSON list of rows")
            rows += obj
        else:
            with open(f, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{f}: line {lineno}: invalid JSON ({e})") from None
                    if not isinstance(obj, dict):
                        raise InputError(f"{f}: line {lineno}: expected a JSON object")
                    rows.append(obj)
    return rows


def chat(value: Any, where: str, default_role: str) -> list[dict[str, str]]:
    """A list of {role, content} turns from ``value`` (a string becomes one turn of ``default_role``)."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: expected a non-empty list of {{role, content}} messages or a string")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}[{j}]: expected an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise InputError(f"{where}[{j}].role: unknown role {m['role']!r} (expected one of {', '.join(ROLES)})")
        out.append({"role": m["role"], "content": "" if m["content"] is None else str(m["content"])})
    return out


def _turns(value: Any, where: str, default_role: str) -> list[dict[str, str]]:
    # One message object (LLaMA-Factory's sharegpt pairs) is a one-turn list; strings and lists go through chat().
    if isinstance(value, dict):
        value = [value]
    return chat(value, where, default_role)


def pair_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A preference row in canonical form: ``prompt``, ``chosen`` and ``rejected`` as lists of {role, content} turns.

    Accepts message lists, single message objects and plain strings (a prompt string is a user turn, a
    chosen/rejected string an assistant turn). Without a ``prompt`` the two conversations share an implicit one:
    the turns they have in common, as TRL's ``extract_prompt`` reads it.

    >>> q, a, b = ({"role": r, "content": c} for r, c in (("user", "Q"), ("assistant", "A"), ("assistant", "B")))
    >>> row = pair_row({"chosen": [q, a], "rejected": [q, b]}, "x")
    >>> row["prompt"], row["chosen"]
    ([{'role': 'user', 'content': 'Q'}], [{'role': 'assistant', 'content': 'A'}])
    """
    row = dict(row)
    for column in PAIR_COLUMNS:
        if row.get(column) is None:
            raise InputError(f"{where}: field {column!r}: missing (a preference row needs chosen and rejected)")
    chosen = _turns(row.pop("chosen"), f"{where}: field 'chosen'", "assistant")
    rejected = _turns(row.pop("rejected"), f"{where}: field 'rejected'", "assistant")
    if row.get("prompt") is not None:
        prompt = chat(row.pop("prompt"), f"{where}: field 'prompt'", "user")
    else:
        row.pop("prompt", None)
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise InputError(
                f"{where}: field 'prompt': missing, and chosen and rejected share no turns to take it from"
            )
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **row}


def as_text(value: Any) -> str | None:
    """An answer as text: a string as is, a one-element list of strings unwrapped, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]  # verl's README shows ground_truth as a one-element list
    return canonical_json(value)


def with_ids(rows: list[dict[str, Any]], src: str) -> list[dict[str, Any]]:
    """Keep the rows' own ids when every row has one (refusing duplicates); else content ids, numbered on repeats."""
    if rows and all(r.get("id") is not None for r in rows):
        seen: dict[str, int] = {}
        for i, r in enumerate(rows):
            r["id"] = str(r["id"])
            if r["id"] in seen:
                first = seen[r["id"]]
                raise InputError(f"{src}: row {i}: field 'id': duplicate id {r['id']!r} (first at row {first})")
            seen[r["id"]] = i
        return rows
    counts: dict[str, int] = {}
    for r in rows:
        keys = ("messages", "prompt", "answer", "input_ids", *PAIR_COLUMNS)
        base = row_id({k: r.get(k) for k in keys if r.get(k) is not None})
        n = counts.get(base, 0)
        counts[base] = n + 1
        r["id"] = base if n == 0 else f"{base}-{n}"
    return rows
