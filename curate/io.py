"""Readers: jsonl, json, parquet, csv, saved HF datasets, hub ids. (Exports live in ``curate/exports.py``.)

Readers return raw rows plus a content digest of the source, which goes into the import's recipe: the
same bytes imported twice give the same version id.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError
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
    suffix = path.suffix.lower()
    if path.name.lower().endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        return "jsonl"
    return {".json": "json", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix, "")


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
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "json":
        return _read_json(path)
    if kind == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{path}: not a readable Parquet file ({e})") from None
        return Source(table.to_pylist(), sha256_file(path), kind, path.name)
    if kind == "csv":
        return _read_csv(path)
    if kind == "hf-disk":
        return _read_hf_disk(path, split)
    raise InputError(f"{path}: unknown file type {path.suffix!r} (expected .jsonl, .json, .parquet, .csv or a dir)")


def _read_jsonl(path: Path) -> Source:
    rows, lines = [], []
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            h.update(raw)
            text = raw.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{path}: line {lineno}: invalid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
            lines.append(lineno)
    if not rows:
        raise InputError(f"{path}: empty file (no rows)")
    return Source(rows, h.hexdigest(), "jsonl", path.name, lines)


def _read_json(path: Path) -> Source:
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: invalid JSON ({e})") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a list of objects (or an object holding exactly one list)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise InputError(f"{path}: expected a list of objects")
    if not obj:
        raise InputError(f"{path}: empty file (no rows)")
    return Source(obj, sha256_file(path), "json", path.name)


def _read_csv(path: Path) -> Source:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [dict(r) for r in csv.DictReader(f)]
    if not rows:
        raise InputError(f"{path}: empty file (no rows)")
    return Source(rows, sha256_file(path), "csv", path.name)


def _read_hf_disk(path: Path, split: str) -> Source:
    import datasets

    ds = datasets.load_from_disk(str(path))
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
