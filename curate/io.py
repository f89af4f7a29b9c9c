"""Readers: jsonl, json, parquet, csv (each also gzipped: ``.jsonl.gz`` ...), saved HF datasets, hub ids.
(Trainer formats, both ways, live in ``curate/formats/``.)

Readers return raw rows plus a content digest of the source, which goes into the import's recipe: the
same bytes imported twice give the same version id. A file that cannot be read is an ``InputError`` naming the
file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.records import CANONICAL_TYPES
from curate.store import sha256_file

READERS = ("jsonl", "json", "parquet", "csv", "hf-disk", "hub")


@dataclass
class Source:
    rows: list[dict[str, Any]]
    digest: str
    kind: str
    name: str
    lines: list[int] | None = None


def _kind_of(path: Path) -> str:
    if path.is_dir():
        if (
            (path / "dataset_info.json").exists()
            or (path / "dataset_dict.json").exists()
            or (path / "state.json").exists()
        ):
            return "hf-disk"
        raise InputError(f"{path}: a directory, but not a saved Hugging Face dataset (no dataset_info.json)")
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


def _read_jsonl(path: Path) -> Source:
    rows, lines = [], []
    data = _read_bytes(path)
    h = hashlib.sha256(data)
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        text = raw.strip()
        if not text:
            continue
        try:
            obj = _loads(_decode_line(path, lineno, text))
        except ValueError as e:  # JSONDecodeError is a ValueError
            raise InputError(f"{path}: line {lineno}: invalid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append(obj)
        lines.append(lineno)
    if not rows:
        raise InputError(f"{path}: empty file (no rows)")
    return Source(rows, h.hexdigest(), "jsonl", path.name, lines)


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
