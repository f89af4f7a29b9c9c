"""Readers: jsonl, json, parquet, csv (each also gzipped: ``.jsonl.gz`` ...), saved HF datasets, hub ids.
(Trainer formats, both ways, live in ``curate/formats/``.)

Readers return raw rows plus a content digest of the source, which goes into the import's recipe: the
same bytes imported twice give the same version id. A file that cannot be read is an ``InputError`` naming the
file and, where there is one, the line.

JSONL is streamed: ``Source.chunks()`` reads it ``CHUNK_BYTES`` of text at a time, so an import's memory does not
grow with the file. Lines are parsed by orjson when it is installed and the line is one orjson reads exactly as
``json`` does; any other line (NaN, an integer past 64 bits, a lone surrogate, an error) goes through ``json``,
so values and error messages are the same either way.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.records import CANONICAL_TYPES, MAX_DEPTH, Chunk
from curate.store import sha256_file

READERS = ("jsonl", "json", "parquet", "csv", "hf-disk", "hub")


try:  # optional: ~4x faster parsing of plain lines; json reads every line it would not read exactly alike
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

#: text read, parsed and normalised at a time when a JSONL file is streamed (an import holds about this much
#: source, as Python objects and as Arrow, at once)
CHUNK_BYTES = 8 << 20
_BOM = b"\xef\xbb\xbf"
# orjson turns an integer past 64 bits (a run of 19 digits, for a negative one) into a float where json keeps it
# (for the "too large" error), and a "\ud800"-style escape needs the surrogate check: a line holding a run of 19
# digits is read by json, and a chunk holding such an escape has every row checked in full.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class Source:
    """Raw rows of one source, its digest, kind and name; ``lines`` (where known) the line of each row.

    A JSONL source is read lazily: ``chunks()`` streams it, ``rows`` reads it whole when asked.
    """

    def __init__(
        self,
        rows: list[dict[str, Any]] | None,
        digest: str,
        kind: str,
        name: str,
        lines: list[int] | None = None,
        *,
        chunks: Callable[[], Iterator[Chunk]] | None = None,
    ):
        self._rows, self.digest, self.kind, self.name, self._lines = rows, digest, kind, name, lines
        self._chunks = chunks

    def _load(self) -> None:
        if self._rows is None:
            rows: list[dict[str, Any]] = []
            lines: list[int] = []
            for c in self.chunks():
                rows += c.rows
                lines += c.lines or []
            self._rows, self._lines = rows, lines

    @property
    def rows(self) -> list[dict[str, Any]]:
        self._load()
        return self._rows

    @property
    def lines(self) -> list[int] | None:
        self._load()
        return self._lines

    @property
    def streamed(self) -> bool:
        return self._chunks is not None

    def chunks(self) -> Iterator[Chunk]:
        """The rows in chunks of about ``CHUNK_BYTES`` of source (one chunk for a source read whole)."""
        if self._chunks is not None:
            return self._chunks()
        return iter([Chunk(self._rows, self._lines)])


def _kind_of(path: Path) -> str:
    if path.is_dir():
        if (
            (path / "dataset_info.json").exists()
            or (path / "dataset_dict.json").exists()
            or (path / "state.json").exists()
        ):
            return "hf-disk"
        return "folder"
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return {".json": "json", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(Path(name).suffix, "")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise InputError(f"{path}: not a readable gzip file ({e or type(e).__name__})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    return data


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or an error naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def read_source(source: str, *, split: str = "train") -> Source:
    """Read any supported source into raw rows.

    >>> src = read_source("../shared/data/gsm8k/test.jsonl")   # doctest: +SKIP
    >>> len(src.rows), src.kind                               # doctest: +SKIP
    (1319, 'jsonl')
    """
    path = Path(source).expanduser()
    if not path.exists():
        if "/" in source and not source.startswith((".", "/", "~")) and source.count("/") == 1:
            return _read_hub(source, split)
        raise InputError(f"{source}: no such file or directory")
    kind = _kind_of(path)
    # The file kinds a plain import reads, by what _kind_of calls them.
    readers = {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet, "csv": _read_csv}
    if kind in readers:
        return readers[kind](path)
    if kind == "hf-disk":
        return _read_hf_disk(path, split)
    if kind == "folder":
        return _read_folder(path, readers)
    raise InputError(
        f"{path}: unknown file type {path.suffix!r} "
        "(expected .jsonl, .json, .parquet, .csv, one of those gzipped (.gz), or a dir)"
    )


def _loads(text: str | bytes) -> Any:
    """``json.loads`` whose failures are all ``ValueError``: a nesting deep enough to exhaust the stack included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# Files an export writes beside its data, never data themselves.
_NOT_DATA = ("curate.json",)


def _read_folder(path: Path, readers: dict[str, Callable[[Path], Source]]) -> Source:
    """A folder of data files of one kind (after the saved-HF-dataset check): those files, in name order.

    One file reads as that file (the same version as importing it); several are one source whose digest hashes
    each file's name and digest, their rows in order (JSONL streamed, each error naming its file and line).
    """
    files = sorted(
        f
        for f in path.iterdir()
        if f.is_file() and not f.name.startswith((".", "_")) and f.name not in _NOT_DATA and _kind_of(f) in readers
    )
    kinds = sorted({_kind_of(f) for f in files})
    if not files:
        raise InputError(
            f"{path}: a directory, but not a saved Hugging Face dataset (no dataset_info.json) and no data files "
            "(.jsonl, .json, .parquet, .csv) in it"
        )
    if len(kinds) > 1:
        raise InputError(f"{path}: a directory of files of more than one kind ({', '.join(kinds)}): import one file")
    if len(files) == 1:
        return readers[kinds[0]](files[0])
    sources = [readers[kinds[0]](f) for f in files]
    h = hashlib.sha256()
    for f, src in zip(files, sources, strict=True):
        h.update(f.name.encode())
        h.update(src.digest.encode())
    if kinds[0] == "jsonl":

        def chunks() -> Iterator[Chunk]:
            for f, src in zip(files, sources, strict=True):
                for c in src.chunks():
                    c.source = str(f)
                    yield c

        return Source(None, h.hexdigest(), "jsonl", path.name, chunks=chunks)
    return Source([r for src in sources for r in src.rows], h.hexdigest(), kinds[0], path.name)


def _open_text(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _stream_errors(path: Path, e: BaseException) -> InputError:
    if isinstance(e, gzip.BadGzipFile | EOFError | zlib.error):
        return InputError(f"{path}: not a readable gzip file ({e or type(e).__name__})")
    return InputError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})")


def _digest(path: Path) -> str:
    """sha256 of the file's bytes, gunzipped when its name ends in ``.gz``, read a block at a time."""
    h = hashlib.sha256()
    try:
        with _open_text(path) as f:
            while block := f.read(1 << 22):
                h.update(block)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise _stream_errors(path, e) from None
    return h.hexdigest()


def _read_jsonl(path: Path) -> Source:
    # The digest (the import's recipe) is needed before anything is parsed: a re-import is then a lookup.
    return Source(None, _digest(path), "jsonl", path.name, chunks=lambda: _jsonl_chunks(path, CHUNK_BYTES))


def _jsonl_chunks(path: Path, chunk_bytes: int) -> Iterator[Chunk]:
    lineno = 0
    total = 0
    pending: list[bytes] = []
    try:
        with _open_text(path) as f:
            while True:
                block = f.read(chunk_bytes)
                if block and b"\n" not in block:  # a line longer than a chunk: keep reading
                    pending.append(block)
                    continue
                if block:
                    cut = block.rfind(b"\n")
                    body = b"".join([*pending, block[:cut]])
                    pending = [block[cut + 1 :]]
                else:
                    body = b"".join(pending)
                chunk = _parse_lines(path, body, lineno)
                lineno += body.count(b"\n") + 1
                total += len(chunk.rows)
                if chunk.rows:
                    yield chunk
                if not block:
                    break
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise _stream_errors(path, e) from None
    if not total:
        raise InputError(f"{path}: empty file (no rows)")


def _parse_lines(path: Path, body: bytes, before: int) -> Chunk:
    """The rows of ``body`` (whole lines, the first being line ``before + 1``)."""
    if not body:
        return Chunk([], [], [])
    fast = orjson is not None
    # (a translate and a find run at memory speed; a regex over every byte did not)
    long_digits = fast and _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO)
    escapes = _SURROGATE_ESCAPE.search(body) is not None
    if fast and not (before == 0 and body.startswith(_BOM)):
        # The common chunk, a JSON object on every line, in one go; a blank line, a line orjson refuses or a
        # value that is not an object sends the chunk through the line-by-line reader below.
        texts = body.split(b"\n")
        try:
            rows = [orjson.loads(t) for t in texts]
            if long_digits:  # (small floats have long runs too: 0.000123...) those lines as json reads them
                for i, t in enumerate(texts):
                    if _LONG_DIGITS in t.translate(_DIGITS_AS_ZERO):
                        rows[i] = _loads(t.decode("utf-8"))
        except (orjson.JSONDecodeError, ValueError):
            rows = None
        if rows is not None and set(map(type, rows)) == {dict}:
            full = None if escapes else [i for i, t in enumerate(texts) if t.count(b"[") + t.count(b"{") > MAX_DEPTH]
            return Chunk(rows, list(range(before + 1, before + 1 + len(rows))), full)
    rows, lines, full = [], [], []
    for lineno, raw in enumerate(body.split(b"\n"), before + 1):
        text = raw.strip()
        if not text:
            continue
        obj = None
        if fast and not (long_digits and _LONG_DIGITS in text.translate(_DIGITS_AS_ZERO)):
            try:
                obj = orjson.loads(text[3:] if lineno == 1 and text.startswith(_BOM) else text)
            except orjson.JSONDecodeError:
                obj = None  # json below reads it, or names the error as it always has
        if obj is None:
            try:
                obj = _loads(_decode_line(path, lineno, text))
            except ValueError as e:  # JSONDecodeError is a ValueError
                raise InputError(f"{path}: line {lineno}: invalid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        # Only a line with a surrogate escape or enough brackets to nest past MAX_DEPTH can fail the value check.
        if escapes or text.count(b"[") + text.count(b"{") > MAX_DEPTH:
            full.append(len(rows))
        rows.append(obj)
        lines.append(lineno)
    return Chunk(rows, lines, full if not escapes else None)


def _read_parquet(path: Path) -> Source:
    gz = path.name.lower().endswith(".gz")
    data = _read_bytes(path) if gz else None
    try:
        table = pq.read_table(pa.BufferReader(data) if gz else path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    digest = hashlib.sha256(data).hexdigest() if gz else sha256_file(path)
    return Source(table.to_pylist(), digest, "parquet", path.name)


def _decode_line(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def _read_json(path: Path) -> Source:
    data = _read_bytes(path)
    try:
        obj = _loads(_decode(path, data))
    except ValueError as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a list of objects (or an object holding exactly one list)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a list of objects, got {type(obj).__name__}")
    if not obj:
        raise InputError(f"{path}: empty file (no rows)")
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise InputError(f"{path}: item {i}: expected a JSON object, got {type(item).__name__}")
    return Source(obj, hashlib.sha256(data).hexdigest(), "json", path.name)


# Python's default (128 KiB) refuses a long cell; a text field of a few hundred KB is ordinary data.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


_NUMERIC_PARSERS = {"double": float, "float": float, "int64": int}


def _csv_number(cell: str | None, parse: type) -> Any:
    """A numeric cell as a number, an empty one as missing; anything else stays text, for the type check to name."""
    if cell is None or not cell.strip():
        return None
    try:
        return parse(cell)
    except ValueError:
        return cell


def _read_csv(path: Path) -> Source:
    data = _read_bytes(path)
    text = _decode(path, data)
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        header = next(reader, None)
        if header is not None:
            seen: set[str] = set()
            for col in header:
                if col in seen and col:  # unnamed columns (trailing commas from a spreadsheet) may repeat
                    raise InputError(f"{path}: line 1: the header names column {col!r} twice")
                seen.add(col)
        end = reader.line_num
        # CSV cells are all text; a canonical numeric column (weight, reward, sample) is read as numbers.
        numeric = {
            c: _NUMERIC_PARSERS[t] for c in header or () if (t := str(CANONICAL_TYPES.get(c))) in _NUMERIC_PARSERS
        }
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells:
                continue
            if len(cells) > len(header):
                raise InputError(f"{path}: line {start}: {len(cells)} cells, but the header names {len(header)}")
            # A short row leaves its last columns empty, as csv.DictReader does.
            row = dict(zip(header, [*cells, *[None] * (len(header) - len(cells))], strict=True))
            for col, parse in numeric.items():
                row[col] = _csv_number(row[col], parse)
            rows.append(row)
            lines.append(start)
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    if not rows:
        raise InputError(f"{path}: empty file (no rows)")
    return Source(rows, hashlib.sha256(data).hexdigest(), "csv", path.name, lines)


def _read_hf_disk(path: Path, split: str) -> Source:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError) as e:  # a missing or garbled file among the dataset's own
        raise InputError(f"{path}: not a readable saved Hugging Face dataset ({' '.join(str(e).split())})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{path}: no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(path).as_posix().encode())
            h.update(sha256_file(f).encode())
    return Source(ds.to_list(), h.hexdigest(), "hf-disk", path.name)


def _read_hub(repo_id: str, split: str) -> Source:
    import datasets

    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except Exception as e:  # offline, unknown id, gated: all end the same way for the user
        raise InputError(
            f"{repo_id}: not a local path, and the hub could not provide it ({type(e).__name__})"
        ) from None
    fingerprint = getattr(ds, "_fingerprint", "") or ""
    return Source(ds.to_list(), f"hub:{repo_id}:{split}:{fingerprint}", "hub", repo_id)
