"""The versioned dataset store.

Every dataset version is an immutable folder of Parquet files plus a ``manifest.json`` written last:
a version exists iff its manifest exists. A version id is the hash of its *recipe* (parent ids, the
operation and its parameters, the curate version), so the same recipe run twice lands on the same id
and the second run is free. Versions are staged under ``tmp/`` and published with one atomic rename;
``refs.json`` (version numbers and tags) is changed under a file lock. Nothing is overwritten or deleted.

    .curate/datasets/<name>/refs.json
    .curate/datasets/<name>/<version-id>/manifest.json   data-00000.parquet ...   decisions.parquet
    .curate/cache/<kind>/<key>/...
    .curate/tmp/

Example:
    >>> import pyarrow as pa, curate
    >>> v = curate.save(pa.table({"id": ["a"], "x": [1]}), name="toy")   # doctest: +SKIP
    >>> curate.load("toy@v1").to_polars()                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from curate.errors import IntegrityError, RefError

STORE_ENV = "CURATE_STORE"
ROWS_PER_FILE = 100_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VNUM_RE = re.compile(r"^v(\d+)$")
_HEX_RE = re.compile(r"^[0-9a-f]{4,64}$")
ID_LEN = 16


def curate_version() -> str:
    from curate import __version__

    return __version__


def validate_name(name: str, what: str = "dataset name") -> str:
    """Reject names that could escape the store (``/``, ``..``) or confuse ref parsing (``@``)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise RefError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (no '/', '..', '@'; at most 128 chars)"
        )
    return name


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def recipe_id(parents: Sequence[str], op: dict[str, Any]) -> str:
    """The version id: a hash of everything that determines the result."""
    recipe = {"parents": list(parents), "op": op, "curate": curate_version()}
    return hashlib.sha256(canonical_json(recipe).encode()).hexdigest()[:ID_LEN]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def table_digest(table: pa.Table) -> str:
    """A content hash of an Arrow table (schema + values), independent of chunking."""
    h = hashlib.sha256(table.schema.to_string().encode())
    for batch in table.combine_chunks().to_batches():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as w:
            w.write_batch(batch)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def environment() -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform(), "curate": curate_version()}
    for mod in ("pyarrow", "torch", "transformers", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    return env


@dataclass(frozen=True)
class Version:
    """One committed, immutable dataset version.

    Example:
        >>> v = curate.load("gsm8k")          # doctest: +SKIP
        >>> v.ref, v.id, len(v)               # doctest: +SKIP
    """

    store: Store
    name: str
    id: str
    manifest: dict[str, Any]

    @property
    def number(self) -> int | None:
        return self.store.number(self.name, self.id)

    @property
    def ref(self) -> str:
        num = self.number
        return f"{self.name}@v{num}" if num else f"{self.name}@{self.id}"

    @property
    def path(self) -> Path:
        return self.store.dataset_dir(self.name) / self.id

    @property
    def parents(self) -> list[dict[str, str]]:
        return self.manifest.get("parents", [])

    @property
    def op(self) -> dict[str, Any]:
        return self.manifest.get("op", {})

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    def __repr__(self) -> str:
        return f"Version({self.ref}, id={self.id}, rows={len(self)})"

    def data_files(self) -> list[Path]:
        return [self.path / f["path"] for f in self.manifest["files"]]

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        files = self.data_files()
        if not files:
            return pa.schema([]).empty_table()
        tables = [pq.read_table(f, columns=columns) for f in files]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def to_polars(self, columns: Sequence[str] | None = None):
        import polars as pl

        return pl.from_arrow(self.to_arrow(columns))

    def to_hf(self):
        """The version as a ``datasets.Dataset`` (in memory, no copy of the store)."""
        import datasets

        return datasets.Dataset(self.to_arrow())

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.to_arrow().to_pylist()

    def decisions(self) -> pa.Table | None:
        p = self.path / "decisions.parquet"
        return pq.read_table(p) if p.exists() else None

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in self.manifest.get("schema", [])]


class Store:
    """A store rooted at a local directory (default ``./.curate`` or ``$CURATE_STORE``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get(STORE_ENV) or ".curate").expanduser()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---------------------------------------------------------------- layout
    def dataset_dir(self, name: str) -> Path:
        return self.root / "datasets" / validate_name(name)

    def cache_dir(self, kind: str, key: str) -> Path:
        validate_name(kind, "cache kind")
        validate_name(key, "cache key")
        return self.root / "cache" / kind / key

    def _refs_path(self, name: str) -> Path:
        return self.dataset_dir(name) / "refs.json"

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        d = self.dataset_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with FileLock(str(d / "refs.json.lock"), timeout=120):
            yield

    def _read_refs(self, name: str) -> dict[str, Any]:
        p = self._refs_path(name)
        if not p.exists():
            return {"versions": [], "tags": {}}
        return json.loads(p.read_text())

    def _write_refs(self, name: str, refs: dict[str, Any]) -> None:
        p = self._refs_path(name)
        tmp = p.with_name(f".refs.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(refs, indent=1))
        os.replace(tmp, p)

    # ---------------------------------------------------------------- reading
    def datasets(self) -> list[str]:
        d = self.root / "datasets"
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and (p / "refs.json").exists())

    def versions(self, name: str) -> list[Version]:
        refs = self._read_refs(name)
        return [self._version(name, e["id"]) for e in refs["versions"]]

    def tags(self, name: str) -> dict[str, str]:
        return dict(self._read_refs(name)["tags"])

    def has_version(self, name: str, vid: str) -> bool:
        return (self.dataset_dir(name) / vid / "manifest.json").exists()

    def _version(self, name: str, vid: str) -> Version:
        mp = self.dataset_dir(name) / vid / "manifest.json"
        try:
            manifest = json.loads(mp.read_text())
        except FileNotFoundError:
            raise RefError(f"{name}@{vid}: version has no manifest (not committed)") from None
        return Version(self, name, vid, manifest)

    def resolve(self, ref: str) -> tuple[str, str]:
        """``name``, ``name@latest``, ``name@v3``, ``name@<id-prefix>``, ``name@<tag>`` -> (name, version id)."""
        if not isinstance(ref, str) or not ref:
            raise RefError(f"invalid ref {ref!r}")
        name, _, spec = ref.partition("@")
        validate_name(name)
        refs = self._read_refs(name)
        versions = refs["versions"]
        if not versions:
            known = ", ".join(self.datasets()) or "none"
            raise RefError(f"unknown dataset {name!r} in store {self.root} (datasets: {known})")
        if spec in ("", "latest"):
            return name, versions[-1]["id"]
        if m := _VNUM_RE.match(spec):
            n = int(m.group(1))
            for e in versions:
                if e["number"] == n:
                    return name, e["id"]
            raise RefError(f"{ref}: {name} has versions v1..v{versions[-1]['number']}")
        if spec in refs["tags"]:
            return name, refs["tags"][spec]
        if _HEX_RE.match(spec):
            hits = [e["id"] for e in versions if e["id"].startswith(spec)]
            if len(hits) == 1:
                return name, hits[0]
            if len(hits) > 1:
                raise RefError(f"{ref}: id prefix is ambiguous ({', '.join(hits)})")
        raise RefError(f"{ref}: no version, tag or id prefix {spec!r} in {name}")

    def load(self, ref: str | Version) -> Version:
        if isinstance(ref, Version):
            return ref
        name, vid = self.resolve(ref)
        return self._version(name, vid)

    # ---------------------------------------------------------------- writing
    def lookup(self, name: str, parents: Sequence[Version], op: dict[str, Any]) -> Version | None:
        """The version this recipe would produce, if it was already committed (a free re-run)."""
        vid = recipe_id([p.id for p in parents], op)
        if self.has_version(name, vid):
            self._register(name, vid)
            return self._version(name, vid)
        return None

    def commit(
        self,
        table: pa.Table,
        *,
        name: str,
        parents: Sequence[Version] = (),
        op: dict[str, Any],
        decisions: pa.Table | None = None,
        stats: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Version:
        """Write ``table`` as a new version of ``name``; return the existing one if the recipe already ran.

        The data, decisions and manifest are staged in ``tmp/`` and published with one rename, so a killed
        process leaves no partial version behind.
        """
        validate_name(name)
        parent_ids = [p.id for p in parents]
        vid = recipe_id(parent_ids, op)
        if self.has_version(name, vid):
            self._register(name, vid)
            return self._version(name, vid)

        t0 = time.perf_counter()
        stage = self.root / "tmp" / f"{name}-{vid}-{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        try:
            files = []
            for i, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
                part = table.slice(start, ROWS_PER_FILE)
                fname = f"data-{i:05d}.parquet"
                pq.write_table(part, stage / fname, compression="zstd")
                files.append({"path": fname, "rows": part.num_rows})
            manifest: dict[str, Any] = {
                "id": vid,
                "name": name,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "parents": [{"name": p.name, "id": p.id} for p in parents],
                "op": op,
                "rows": table.num_rows,
                "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
                "stats": stats or {},
                "env": environment(),
            }
            if decisions is not None:
                pq.write_table(decisions, stage / "decisions.parquet", compression="zstd")
                files.append({"path": "decisions.parquet", "rows": decisions.num_rows, "kind": "decisions"})
            for f in files:
                p = stage / f["path"]
                f["sha256"] = sha256_file(p)
                f["bytes"] = p.stat().st_size
            manifest["files"] = [f for f in files if f.get("kind") != "decisions"]
            manifest["aux_files"] = [f for f in files if f.get("kind") == "decisions"]
            manifest["timings"] = {**(timings or {}), "commit_s": round(time.perf_counter() - t0, 4)}
            if extra:
                manifest.update(extra)
            # Written last inside the staging folder; the rename below publishes everything at once.
            (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
            target = self.dataset_dir(name) / vid
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(stage, target)
            except OSError:
                if not self.has_version(name, vid):  # a concurrent writer with the same recipe won the race
                    raise
                shutil.rmtree(stage, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        self._register(name, vid)
        return self._version(name, vid)

    def _register(self, name: str, vid: str) -> int:
        with self._locked(name):
            refs = self._read_refs(name)
            for e in refs["versions"]:
                if e["id"] == vid:
                    return e["number"]
            number = refs["versions"][-1]["number"] + 1 if refs["versions"] else 1
            refs["versions"].append({"number": number, "id": vid})
            self._write_refs(name, refs)
        return number

    def number(self, name: str, vid: str) -> int | None:
        for e in self._read_refs(name)["versions"]:
            if e["id"] == vid:
                return e["number"]
        return None

    def tag(self, ref: str, tag: str) -> Version:
        validate_name(tag, "tag")
        if tag == "latest" or _VNUM_RE.match(tag):
            raise RefError(f"invalid tag {tag!r}: 'latest' and v<N> are reserved")
        name, vid = self.resolve(ref)
        with self._locked(name):
            refs = self._read_refs(name)
            refs["tags"][tag] = vid
            self._write_refs(name, refs)
        return self._version(name, vid)

    # ---------------------------------------------------------------- checking
    def verify(self, ref: str | None = None) -> list[str]:
        """Re-hash every data file; return one line per problem (empty list = all good)."""
        if ref is not None:
            versions = [self.load(ref)]
        else:
            versions = [v for name in self.datasets() for v in self.versions(name)]
        problems = []
        for v in versions:
            for f in v.manifest["files"] + v.manifest.get("aux_files", []):
                p = v.path / f["path"]
                if not p.exists():
                    problems.append(f"{p}: missing (manifest of {v.ref})")
                elif sha256_file(p) != f["sha256"]:
                    problems.append(f"{p}: sha256 mismatch (manifest of {v.ref})")
        return problems

    def check(self, ref: str | None = None) -> None:
        if problems := self.verify(ref):
            raise IntegrityError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
