"""Resumable per-row caches: the work a killed run already did is read back, never redone.

Each expensive per-row stage (features, token losses, rollouts, LLM calls) writes its results under
``<store>/cache/<kind>/<key>/`` as Parquet shards, each published with an atomic rename as soon as it is
computed (on object storage, which has no rename, each shard is one PUT: there whole or not at all). ``key``
hashes everything that determines the values (model identity, tokenizer, settings); each row is addressed by a
hash of its content, so the same row in another dataset is a hit too. Values are plain Arrow columns (lists of
floats for arrays): no pickle.

A shard is content-addressed: its name is ``shard-<sha256 of its bytes>.parquet``, so the name is the record of
what was published, on a local disk and on object storage alike, with no index to keep in step. Every read
re-hashes the bytes it parses; a shard that fails (a flipped bit, an edit, a truncation, a name without a hash
from before this scheme) is never used: its rows are computed again, one warning line names it, and
``curate gc --remove`` deletes it.

Example:
    >>> cache = RowCache(store, "features", settings_key({"model": "m", "dim": 64}))   # doctest: +SKIP
    >>> done = cache.load(); cache.write([{"key": "ab12", "rows": 3, "values": [...]}])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.store import Store, StorePath, canonical_json, check_shard, parquet_bytes, sha256_file

# A shard is reported once per process: a run reads the same cache several times.
_warned: set[str] = set()


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of the settings that determine a cache's values."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:20]


def content_key(obj: Any) -> str:
    """A stable hash of a row's content (the part of the row the computation reads)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:24]


def _warn(path: StorePath, problem: str) -> None:
    from curate.progress import console

    if str(path) in _warned:
        return
    _warned.add(str(path))
    console.print(
        f"warning: cache shard {path} {problem}; ignoring it (its rows are recomputed; `curate gc --remove` "
        "deletes it)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


class RowCache:
    """Rows keyed by ``key`` under ``<store>/cache/<kind>/<settings key>/shard-<sha256>.parquet``."""

    def __init__(self, store: Store, kind: str, key: str, settings: dict[str, Any] | None = None):
        self.dir: StorePath = store.cache_dir(kind, key)
        self.settings = settings

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Every shard that passes its hash check, as a table (in name order); a failing one is skipped with one
        warning line on stderr."""
        if not self.dir.exists():
            return
        cols = None if columns is None else ["key", *[c for c in columns if c != "key"]]
        for shard in sorted(self.dir.glob("shard-*.parquet")):
            table, problem = check_shard(shard, cols)
            if table is None:
                _warn(shard, problem or "is unreadable")
                continue
            yield table

    def load(self, keys: Iterable[str] | None = None, columns: Sequence[str] | None = None) -> dict[str, dict]:
        """All cached rows (or just ``keys``) as ``{key: row}``; later shards win on duplicates."""
        wanted = set(keys) if keys is not None else None
        out: dict[str, dict] = {}
        for table in self.tables(columns):
            for row in table.to_pylist():
                if wanted is None or row["key"] in wanted:
                    out[row["key"]] = row
        return out

    def write(self, rows: Sequence[dict[str, Any]], schema: pa.Schema | None = None) -> None:
        """Publish one shard atomically, named by the sha256 of its bytes (temp file + rename locally, one PUT on
        object storage)."""
        if not rows:
            return
        table = pa.Table.from_pylist(list(rows), schema=schema)
        if not isinstance(self.dir, Path):
            if self.settings is not None:
                with contextlib.suppress(FileExistsError):
                    (self.dir / "settings.json").write_text(canonical_json(self.settings), exclusive=True)
            data = parquet_bytes(table)
            # Same name, same bytes: a second writer of identical rows overwrites nothing that differs.
            (self.dir / f"shard-{hashlib.sha256(data).hexdigest()}.parquet").write_bytes(data)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.settings is not None and not (self.dir / "settings.json").exists():
            tmp = self.dir / f".settings.{uuid.uuid4().hex}.tmp"
            tmp.write_text(canonical_json(self.settings))
            os.replace(tmp, self.dir / "settings.json")
        # Written to disk and hashed from there, not built in memory: a features shard can be hundreds of MB.
        tmp = self.dir / f".shard-{uuid.uuid4().hex}.parquet.tmp"
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, self.dir / f"shard-{sha256_file(tmp)}.parquet")
        finally:
            tmp.unlink(missing_ok=True)
