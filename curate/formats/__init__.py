"""Trainer-format exporters, and the importers that read those formats back into canonical rows.

What it computes. ``export_version`` writes one store version in the layout a trainer reads, plus a small
``curate.json`` beside the data (ref, version id, format, row count, files; ``<file>.curate.json`` when ``--out``
names the data file itself, so no ``curate.json`` lands in the folder that file sits in), and returns the command or
config lines that trainer needs. ``--out -`` (``out="-"``) writes a jsonl format's data to stdout (the CLI prints
only the jsonl there, the note to stderr; the Python API returns it as ``ExportResult.text``). ``read_export`` /
``read_import`` turn such files (ours or anyone's in that layout) back into canonical rows (``id``, ``messages`` /
``prompt``, ``answer``, ``data_source`` + extra columns).

======================  ====================================================  =========================================
format                  files                                                 columns
======================  ====================================================  =========================================
``trl-sft``             ``<name>.jsonl`` (+ ``<name>.chat_template.jinja``,   ``messages`` (or ``prompt`` and
                        a training chat template for                          ``completion`` chat lists with
                        ``assistant_only_loss``)                              ``style="prompt-completion"``);
                                                                              pre-tokenised versions: ``input_ids``
                                                                              + ``labels`` as they are
``trl-grpo``            ``<name>.jsonl``                                      ``prompt`` + ``solution`` (= ``answer``)
                                                                              + the other columns (reward kwargs)
``verl``                ``<name>.parquet``                                    ``data_source``, ``prompt``, ``ability``,
                                                                              ``reward_model{style, ground_truth}``,
                                                                              ``extra_info{index, split, id,
                                                                              dataset_version, dataset_ref, answer,
                                                                              scores..}``
``verl-sft``            ``<name>.parquet``                                    ``messages`` (multi-turn SFT)
``openrlhf``            ``<name>.jsonl``                                      ``input``, ``label``, ``datasource``
``llamafactory``        ``<name>.jsonl`` + ``dataset_info.json`` entry        ``messages`` (sharegpt formatting with
                                                                              OpenAI role/content tags)
``trl-dpo``             ``<name>.jsonl``                                      ``prompt``, ``chosen``, ``rejected``
                                                                              (message lists) + ``margin``, rewards
``llamafactory-dpo``    ``<name>.jsonl`` + ``dataset_info.json`` entry with   ``messages`` (the prompt turns),
                        ``ranking: true``                                     ``chosen`` / ``rejected`` (one message
                                                                              each)
``openrlhf-dpo``        ``<name>.jsonl``                                      ``prompt``, ``chosen``, ``rejected``
                                                                              (chat lists) + ``margin``
``hf``                  a ``save_to_disk`` folder + ``README.md`` card        every column, lineage in the card
``jsonl`` / ``parquet`` ``<name>.jsonl`` / ``<name>.parquet``                 every column as stored
======================  ====================================================  =========================================

One file per trainer family: ``trl.py``, ``verl.py``, ``openrlhf.py``, ``llamafactory.py``, ``hf.py``, ``plain.py``,
each on the ``Format`` base in ``base.py``. Field names follow the trainers' own docs and code: TRL
``docs/source/dataset_formats.md`` and ``SFTTrainer``'s pre-tokenised path (a ``labels`` column is used as is); verl
``examples/data_preprocess/gsm8k.py`` and ``verl/utils/dataset/README.md``; OpenRLHF's
``--data.input_key``/``--data.label_key`` flags; LLaMA-Factory ``data/README.md`` and its sharegpt converter
(user/assistant turns must alternate after an optional system turn).

The three pairwise formats (``pairwise = True``) take a preference-pairs version (``prompt``, ``chosen``,
``rejected``: ``curate select ROLLOUTS --method pairs``) and nothing else; the other trainer formats refuse a pairs
version and name them.

A selection is written in its order (``stage``, then the latest ``<method>_rank``). Only a curriculum (a ``stage``
column, or a selection ordered as one: ``--method difficulty --order ...``) gets the note on turning the trainer's
shuffling off; any other selection's order is its pick order, free to shuffle. Token-level labels only go to formats
that can hold them (``carries_labels``: ``trl-sft``, ``hf``, ``parquet``, ``jsonl``); any other format refuses such
a version.

Outputs: ``--out`` must lie outside the store (``curate.outputs.check_out``). A non-empty ``--out`` folder, or an
existing ``--out`` file, needs ``--overwrite``, unless it holds this same export (same version, format and options,
every file matching the sha256 ``curate.json`` recorded), which is written again. Each file is written to a
temporary name and renamed into place; temporaries a killed export left are removed by the next export there.

Departures: verl's ``extra_info.index`` is the row's position in the export (verl uses it as a per-row key); the
curate row id goes to ``extra_info.id``. RL exports carry the prompt, the answer and the non-canonical columns
(scores, ranks, stage, pass rate), not the SFT ``messages``. TRL has no per-sample loss weights, so a ``weight``
column is exported but TRL ignores it. ``hf`` replaces its whole output folder (only an earlier ``hf`` export).

A new format is one file with one ``Format`` subclass (name, suffix, carries_labels, an options dataclass, ``write``
and optionally ``read``) plus one ``register(...)`` line below; ``register`` also works at runtime, from any module.

    curate export math-curriculum --format verl --out exports/verl
    curate import exports/verl --name math-back --format verl
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.errors import CurateError, InputError
from curate.formats.base import (
    MANIFEST,
    TOKEN_COLUMNS,
    ExportContext,
    ExportResult,
    Format,
    NoOptions,
    check_overwrite,
    curriculum_order,
    file_sums,
    meta_for,
    out_location,
    sidecar,
    with_ids,
    write_json,
)
from curate.formats.hf import HF
from curate.formats.llamafactory import LlamaFactory, LlamaFactoryDpo
from curate.formats.openrlhf import OpenRLHF, OpenRLHFDpo
from curate.formats.plain import Jsonl, Parquet
from curate.formats.trl import TrlDpo, TrlGrpo, TrlSft
from curate.formats.verl import Verl, VerlSft
from curate.options import params_of
from curate.outputs import check_out, sweep_temps
from curate.records import to_table
from curate.store import Version, curate_version, sha256_file

__all__ = [
    "FORMATS",
    "MANIFEST",
    "TOKEN_COLUMNS",
    "ExportContext",
    "ExportResult",
    "Format",
    "NoOptions",
    "export_version",
    "get_format",
    "holds_export",
    "make_options",
    "read_export",
    "read_import",
    "register",
]

# The only place a format name maps to a class: the CLI, the Python API and the recipes all read it.
FORMATS: dict[str, type[Format]] = {}
#: ``--out -``: the jsonl goes to stdout, the note to stderr
STDOUT = "-"
# export_version's own keywords: an option of the same name could never reach the format.
_RESERVED_OPTIONS = ("version", "format", "out", "overwrite", "drop_labels")


def register(cls: type[Format]) -> type[Format]:
    """Add a format to ``FORMATS`` under ``cls.name`` (also a class decorator); a taken name is refused.

    >>> class Toy(Format):
    ...     name = "toy-doc"
    ...     suffix = ".jsonl"
    >>> register(Toy) is Toy and get_format("toy-doc") is Toy
    True
    >>> del FORMATS["toy-doc"]
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise CurateError(f"format class {cls.__qualname__} has no name")
    if name in FORMATS:
        raise CurateError(f"export format {name!r} is already registered ({FORMATS[name].__qualname__})")
    if not cls.whole_folder and not cls.folder_data_suffix():
        raise CurateError(f"export format {name!r}: writes into a folder but declares no suffix or data_suffix")
    if not dataclasses.is_dataclass(cls.options):
        raise CurateError(f"export format {name!r}: options must be a dataclass, got {cls.options!r}")
    if taken := [f.name for f in dataclasses.fields(cls.options) if f.name in _RESERVED_OPTIONS]:
        raise CurateError(f"export format {name!r}: option(s) {', '.join(taken)} clash with export_version's own")
    FORMATS[name] = cls
    return cls


# One line per format. The order is the one messages list formats in ("formats that can: trl-sft, hf, ...").
register(TrlSft)
register(TrlGrpo)
register(Verl)
register(VerlSft)
register(OpenRLHF)
register(LlamaFactory)
register(HF)
register(Parquet)
register(Jsonl)
register(TrlDpo)
register(LlamaFactoryDpo)
register(OpenRLHFDpo)


def get_format(name: str) -> type[Format]:
    """The format class registered as ``name``; an unknown name fails with the list of formats.

    >>> get_format("verl").suffix
    '.parquet'
    """
    cls = FORMATS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CurateError(f"unknown export format {name!r} (available: {', '.join(sorted(FORMATS))})")
    return cls


def make_options(format: str, options: dict[str, Any]) -> Any:
    """The format's options dataclass filled from ``options``; an unknown key fails with the accepted ones.

    >>> make_options("verl", {"split": "test"})
    VerlOptions(split='test', ability=None, reward_style='rule')
    """
    cls = get_format(format)
    accepted = [p.name for p in params_of(cls.options)]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise CurateError(
            f"--format {format}: unknown option(s) {', '.join(unknown)} "
            f"(accepted: {', '.join([*accepted, 'drop_labels']) or 'none'})"
        )
    return cls.options(**options)


def holds_export(out: str | Path, format: str) -> bool:
    """Whether ``out`` (a folder, or the file a ``--out`` names) holds an earlier curate export in ``format``.

    >>> holds_export("exports/verl", "verl")   # doctest: +SKIP
    True
    """
    path = Path(out).expanduser()
    return path.exists() and meta_for(path).get("format") == format


def export_version(
    version: Version,
    *,
    format: str,
    out: str | Path,
    overwrite: bool = False,
    drop_labels: bool = False,
    **options: Any,
) -> ExportResult:
    """Write ``version`` in a trainer's format under ``out``; returns the files and the note to print.

    ``out`` must lie outside the store. An existing non-empty folder (or an existing file, when ``out`` names
    one) needs ``overwrite=True``, unless it holds this same export, untouched since it was written.

    >>> r = export_version(curate.load("math-curriculum"), format="verl", out="exports/verl")   # doctest: +SKIP
    >>> print(r.note)                                                                           # doctest: +SKIP
    """
    if str(out) == STDOUT:
        return _to_stdout(version, format=format, drop_labels=drop_labels, **options)
    fmt = get_format(format)
    opts = make_options(format, options)
    recorded = dict(sorted({**options, **({"drop_labels": True} if drop_labels else {})}.items()))
    out_path = check_out(out, version.store, replaces=fmt.whole_folder)
    out_dir, stem, single = out_location(out_path, fmt, version)
    sweep_temps(out_dir)
    if fmt.whole_folder:
        sweep_temps(out_dir.parent)  # the folder is staged beside itself
    check_overwrite(out_dir, single, version, fmt, recorded, overwrite)
    table = version.to_arrow()
    if table.num_rows == 0:
        raise CurateError(f"{version.ref}: no rows to export")
    token_cols = [c for c in TOKEN_COLUMNS if c in table.column_names]
    if token_cols and not fmt.carries_labels:
        if not drop_labels:
            carriers = [n for n, c in FORMATS.items() if c.carries_labels]
            raise CurateError(
                f"{version.ref}: rows carry token-level labels ({', '.join(token_cols)}) and --format {format} "
                f"cannot hold them; formats that can: {', '.join(carriers)} "
                "(or pass drop_labels=True / --drop-labels to export the text without the token masks)"
            )
        table = table.drop_columns(token_cols)
    table, curriculum = curriculum_order(table, version.op)
    ctx = ExportContext(
        version=version,
        out_dir=out_dir,
        stem=stem,
        fmt=format,
        curriculum=curriculum,
        pairwise_formats=tuple(n for n, c in FORMATS.items() if c.pairwise),
    )
    files, lines = fmt().write(table, ctx, opts)
    meta = {
        "ref": version.ref,
        "name": version.name,
        "version_id": version.id,
        "format": format,
        "rows": table.num_rows,
        "files": [p.name for p in files],
        "sha256": file_sums(out_dir, [p.name for p in files]),
        "options": recorded,
        "curriculum": curriculum,
        "added": ctx.added,
        "curate": curate_version(),
    }
    manifest = write_json(sidecar(single) if single else out_dir / MANIFEST, meta)
    head = f"Exported {version.ref} (id {version.id}, {table.num_rows} rows) as {format} to {out_dir}"
    return ExportResult(out_dir=out_dir, files=[*files, manifest], note="\n".join([head, *lines]))


def _to_stdout(version: Version, *, format: str, drop_labels: bool, **options: Any) -> ExportResult:
    """An export whose data is one jsonl file, with that file's text in ``text`` (for stdout) and the note naming
    what else the format writes, which stdout cannot carry."""
    fmt = get_format(format)
    if fmt.whole_folder or fmt.suffix != ".jsonl":
        jsonl = sorted(n for n, c in FORMATS.items() if c.suffix == ".jsonl" and not c.whole_folder)
        raise CurateError(
            f"--out -: --format {format} does not write one jsonl file (formats that do: {', '.join(jsonl)})"
        )
    with tempfile.TemporaryDirectory(prefix="curate-stdout-") as tmp:
        data = Path(tmp) / f"{version.name}.jsonl"
        result = export_version(version, format=format, out=data, drop_labels=drop_labels, **options)
        text = data.read_text(encoding="utf-8")
        left = [p.name for p in result.files[1:] if p != sidecar(data)]
        # the temporary folder is gone when the note is read: name its files as they would sit in the working dir
        lines = result.note.replace(f"{tmp}/", "").splitlines()
    head = f"Exported {version.ref} (id {version.id}, {text.count(chr(10))} rows) as {format} jsonl to stdout"
    if left:
        lines.append(f"Not written with --out -: {', '.join(left)} (export to a folder to get them).")
    return ExportResult(out_dir=Path(STDOUT), files=[], note="\n".join([head, *lines[1:]]), text=text)


def _read(source: str | Path, format: str, *, data_source: str | None, split: str) -> tuple[pa.Table, list[Path]]:
    fmt = FORMATS.get(format) if isinstance(format, str) else None
    if fmt is None or not fmt.readable():
        readable = sorted(n for n, c in FORMATS.items() if c.readable())
        plain = sorted(n for n, c in FORMATS.items() if c.plain_import)
        raise CurateError(
            f"cannot import --format {format!r} (readable: {', '.join(readable)}; plain {' and '.join(plain)} "
            "import without --format)"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{source}: no such file or directory")
    rows, files = fmt().read(path, str(source), split)
    if not rows:
        raise InputError(f"{source}: no rows")
    rows = with_ids(rows, str(source))
    fill = data_source or meta_for(path).get("name") or (path.stem if path.is_file() else path.name)
    for r in rows:
        if r.get("data_source") is None:
            r["data_source"] = fill
    head = ["id", "messages", "prompt", "answer", "data_source"]
    rows = [{**{k: r[k] for k in head if k in r}, **{k: v for k, v in r.items() if k not in head}} for r in rows]
    return to_table(rows, source=str(source)), files


def read_export(source: str | Path, *, format: str, data_source: str | None = None, split: str = "train") -> pa.Table:
    """Canonical rows (an Arrow table) from files in a trainer format, e.g. a verl parquet or a TRL jsonl.

    >>> t = read_export("exports/verl", format="verl")       # doctest: +SKIP
    >>> t.column_names[:4]                                     # doctest: +SKIP
    ['id', 'prompt', 'answer', 'data_source']
    """
    return _read(source, format, data_source=data_source, split=split)[0]


def read_import(
    source: str | Path, *, format: str, data_source: str | None = None, split: str = "train"
) -> tuple[pa.Table, dict[str, Any]]:
    """The canonical rows of a trainer-format source and the op an import of it records (``curate import --format``).

    The op names the files read, not the path given, so a folder and its data file import as one version. The
    caller looks it up and commits: ``store.lookup(name, [], op)``, else
    ``store.commit(table, name=name, op=op, stats={"layout": format, "rows": table.num_rows})``. A format with
    ``plain_import`` (jsonl, parquet) is not read here: the caller imports it as plain data.

    >>> table, op = read_import("exports/verl", format="verl")   # doctest: +SKIP
    >>> op["name"], op["source"]                                  # doctest: +SKIP
    ('import', 'math-curriculum.parquet')
    """
    table, files = _read(source, format, data_source=data_source, split=split)
    fmt = FORMATS[format]
    root = Path(source).expanduser() if fmt.whole_folder else files[0].parent
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(sha256_file(f).encode())
    op = {
        "name": "import",
        "format": format,
        "source": root.name if fmt.whole_folder else files[0].name,
        "digest": h.hexdigest(),
        "data_source": data_source,
        "split": split if fmt.reads_split else None,
    }
    return table, op
