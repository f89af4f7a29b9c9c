"""Resumable per-row caches: the work a killed run already did is read back, never redone.

Each expensive per-row stage (features, token losses, rollouts, LLM calls) writes its results under
``<store>/cache/<kind>/<key>/`` as Parquet shards, each published with an atomic rename as soon as it is
computed (on object storage, which has no rename, each shard is one PUT of a uniquely named object: there
whole or not at all). ``key`` hashes everything that determines the values (model identity, tokenizer,
settings); each row is addressed by a hash of its content, so the same row in another dataset is a hit too.
Values are plain Arrow columns (lists of floats for arrays): no pickle.

Example:
    >>> cache = RowCache(store, "features", settings_key({"model": "m", "dim": 64}))   # doctest: +SKIP
    >>> done = cache.load(); cache.write([{"key": "ab12", "rows": 3, "values": [...]}])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.store import Store, StorePath, canonical_json, parquet_bytes, read_parquet


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of the settings that determine a cache's values."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:20]


def content_key(obj: Any) -> str:
    """A stable hash of a row's content (the part of the row the computation reads)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:24]


class RowCache:
    """Rows keyed by ``key`` under ``<store>/cache/<kind>/<settings key>/shard-*.parquet``."""

    def __init__(self, store: Store, kind: str, key: str, settings: dict[str, Any] | None = None):
        self.dir: StorePath = store.cache_dir(kind, key)
        self.settings = settings

    def load(self, keys: Iterable[str] | None = None, columns: Sequence[str] | None = None) -> dict[str, dict]:
        """All cached rows (or just ``keys``) as ``{key: row}``; later shards win on duplicates."""
        wanted = set(keys) if keys is not None else None
        out: dict[str, dict] = {}
        if not self.dir.exists():
            return out
        for shard in sorted(self.dir.glob("shard-*.parquet")):
            cols = None if columns is None else ["key", *[c for c in columns if c != "key"]]
            for row in read_parquet(shard, columns=cols).to_pylist():
                if wanted is None or row["key"] in wanted:
                    out[row["key"]] = row
        return out

    def write(self, rows: Sequence[dict[str, Any]], schema: pa.Schema | None = None) -> None:
        """Publish one shard atomically (write to a temp name, then rename; one PUT on object storage)."""
        if not rows:
            return
        if not isinstance(self.dir, Path):
            if self.settings is not None:
                with contextlib.suppress(FileExistsError):
                    (self.dir / "settings.json").write_text(canonical_json(self.settings), exclusive=True)
            table = pa.Table.from_pylist(list(rows), schema=schema)
            (self.dir / f"shard-{uuid.uuid4().hex}.parquet").write_bytes(parquet_bytes(table))
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.settings is not None and not (self.dir / "settings.json").exists():
            tmp = self.dir / f".settings.{uuid.uuid4().hex}.tmp"
            tmp.write_text(canonical_json(self.settings))
            os.replace(tmp, self.dir / "settings.json")
        table = pa.Table.from_pylist(list(rows), schema=schema)
        name = f"shard-{uuid.uuid4().hex}.parquet"
        tmp = self.dir / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, self.dir / name)
