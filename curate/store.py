"""The versioned dataset store, on a local directory or on object storage (S3, GCS, any fsspec URL).

Every dataset version is an immutable folder of Parquet files plus a ``manifest.json`` written last:
a version exists iff its manifest exists. A version id is the hash of its *recipe* (parent ids, the
operation and its parameters, the curate version), so the same recipe run twice lands on the same id
and the second run is free. Nothing is overwritten or deleted by an operation.

A local store (the default) stages each version under ``tmp/`` and publishes it with one atomic rename;
``refs.json`` (version numbers and tags) is changed under a file lock.

    .curate/datasets/<name>/refs.json
    .curate/datasets/<name>/<version-id>/manifest.json   data-00000.parquet ...   decisions.parquet
    .curate/cache/<kind>/<key>/...
    .curate/tmp/

A store on object storage (root ``s3://bucket/prefix``, ``gs://...``, ``memory://...``) has no rename and no
lock, so it is built from create-once objects instead:

    <root>/datasets/<name>/<version-id>/data-00000-<attempt>.parquet ...  decisions-<attempt>.parquet
    <root>/datasets/<name>/<version-id>/manifest.json       written last, create-if-absent
    <root>/datasets/<name>/refs/v000001.json                 {"number": 1, "id": ...}, create-if-absent
    <root>/datasets/<name>/tags/<tag>.json                   {"tag": ..., "id": ...}, last writer wins
    <root>/cache/<kind>/<key>/shard-<uuid>.parquet           immutable, unique names

- Commit: the data files go straight to their final keys (``<attempt>`` is random, so two writers of the same
  recipe never overwrite each other's bytes), then the manifest. A writer killed before the manifest leaves
  only unlisted files behind: no version, nothing ``verify`` looks at; ``Store.gc`` lists and removes them.
- Version numbers: a writer claims ``v<N>`` by creating ``refs/v<N>.json`` with a conditional write
  (S3 ``If-None-Match: *``, through ``fsspec``'s ``pipe_file(mode="create")``). The loser of a race gets
  ``FileExistsError``, lists ``refs/`` again and claims the next number, so concurrent writers on any number of
  machines get distinct numbers without a lock. This needs a backend whose create-if-absent is atomic: s3fs on
  AWS S3 or an S3-compatible server that honours ``If-None-Match`` (MinIO, Cloudflare R2, moto). Elsewhere
  fsspec falls back to check-then-write: keep to one writer per dataset there.
- Tags are plain overwrites: when two writers move the same tag at once, the last one wins.

Pointing at a bucket: ``--store s3://bucket/prefix`` or ``CURATE_STORE=s3://bucket/prefix``. Credentials,
region and endpoint come from the usual places: the AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``) and, for an S3-compatible server,
``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``, or fsspec's ``FSSPEC_S3_ENDPOINT_URL``). Any other fsspec
option goes in ``FSSPEC_<PROTOCOL>_<OPTION>`` or ``Store(url, storage_options={...})``. The bucket must exist.

Example:
    >>> import pyarrow as pa, curate
    >>> v = curate.save(pa.table({"id": ["a"], "x": [1]}), name="toy")   # doctest: +SKIP
    >>> curate.load("toy@v1").to_polars()                                   # doctest: +SKIP
    >>> s3 = Store("s3://my-bucket/curate"); s3.load("toy@v1").to_arrow()   # doctest: +SKIP
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

from curate.errors import CurateError, IntegrityError, RefError

STORE_ENV = "CURATE_STORE"
# Test hook: seconds to sleep after a commit's data files are written and before its manifest, so a test can
# kill the writer at the one moment that matters. Read only in that spot.
PAUSE_ENV = "CURATE_TEST_COMMIT_PAUSE"
ROWS_PER_FILE = 100_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VNUM_RE = re.compile(r"^v(\d+)$")
_REF_FILE_RE = re.compile(r"^v(\d+)\.json$")
_HEX_RE = re.compile(r"^[0-9a-f]{4,64}$")
ID_LEN = 16
# Each lost race means another writer landed a version, so this bounds how many commits can overtake one writer.
_MAX_CLAIMS = 1000


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


def sha256_file(path: str | Path | RemotePath, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") if isinstance(path, RemotePath) else open(path, "rb") as f:
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


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class RemotePath:
    """A key in an fsspec filesystem with the few ``pathlib.Path`` methods the store uses.

    A store on object storage hands these out where a local store hands out ``Path``, so code that reads a
    version (``v.path / "manifest.json"``, ``v.data_files()[0].read_bytes()``) works on both. ``str()`` is the
    full URL. There is deliberately no ``__fspath__``: ``open()`` on a remote key must fail, not read a local file.

    Example:
        >>> p = Store("memory://demo").root / "datasets"; str(p)   # doctest: +SKIP
        'memory:///demo/datasets'
    """

    __slots__ = ("fs", "path")

    def __init__(self, fs: Any, path: str):
        self.fs = fs
        self.path = path.rstrip("/") or path

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.path}/{part}")

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __lt__(self, other: RemotePath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.fs, self.path.rsplit("/", 1)[0])

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes, *, exclusive: bool = False) -> None:
        """Write the object; with ``exclusive`` only if it does not exist yet (``FileExistsError`` otherwise)."""
        self.fs.pipe_file(self.path, data, mode="create" if exclusive else "overwrite")

    def write_text(self, text: str, *, exclusive: bool = False) -> None:
        self.write_bytes(text.encode("utf-8"), exclusive=exclusive)

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)

    def iterdir(self) -> Iterator[RemotePath]:
        try:
            names = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return
        for n in names:
            if n.rstrip("/") != self.path:  # some servers list a folder's own marker object
                yield RemotePath(self.fs, n)

    def glob(self, pattern: str) -> list[RemotePath]:
        try:
            return [RemotePath(self.fs, p) for p in self.fs.glob(f"{self.path}/{pattern}")]
        except FileNotFoundError:
            return []

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a prefix exists once an object is under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise


StorePath = Path | RemotePath


def read_parquet(path: StorePath, columns: Sequence[str] | None = None) -> pa.Table:
    """Read one Parquet file from a local path or a ``RemotePath`` (through its filesystem)."""
    if isinstance(path, RemotePath):
        # One GET of the whole object: pyarrow's own remote reader spends several round trips (size, footer,
        # body) per file, and latency, not bandwidth, is what a store's files (<= ROWS_PER_FILE rows) cost.
        return pq.read_table(pa.BufferReader(path.read_bytes()), columns=columns)
    return pq.read_table(path, columns=columns)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table as the bytes of one zstd Parquet file (what a remote store uploads in one PUT)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


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
    def path(self) -> StorePath:
        """The version's folder: a ``Path`` in a local store, a ``RemotePath`` on object storage."""
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

    def data_files(self) -> list[StorePath]:
        return [self.path / f["path"] for f in self.manifest["files"]]

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        files = self.data_files()
        if not files:
            return pa.schema([]).empty_table()
        tables = [read_parquet(f, columns=columns) for f in files]
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
        # A remote commit names the file per attempt; the manifest says which one belongs to this version.
        aux = [f for f in self.manifest.get("aux_files", []) if f.get("kind") == "decisions"]
        if aux:
            return read_parquet(self.path / aux[0]["path"])
        p = self.path / "decisions.parquet"
        return read_parquet(p) if p.exists() else None

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in self.manifest.get("schema", [])]


def _open_root(root: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec.core

    # Listings are never cached: another process may have claimed a version number since the last look.
    opts = {"use_listings_cache": False, **(storage_options or {})}
    return fsspec.core.url_to_fs(root, **opts)


def _is_url(root: Any) -> bool:
    return isinstance(root, str) and ("://" in root or "::" in root)


class Store:
    """A store rooted at a local directory (default ``./.curate`` or ``$CURATE_STORE``) or an fsspec URL.

    Example:
        >>> Store("/tmp/st").root, Store("s3://bucket/curate").remote   # doctest: +SKIP
        (PosixPath('/tmp/st'), True)
    """

    def __init__(self, root: str | Path | None = None, *, storage_options: dict[str, Any] | None = None):
        raw = root or os.environ.get(STORE_ENV) or ".curate"
        self.fs: Any = None
        self.root: StorePath
        # Ref objects never change once created, so what was read once is kept: {name: {file name: (n, id)}}.
        self._ref_memo: dict[str, dict[str, tuple[int, str]]] = {}
        if _is_url(raw):
            fs, path = _open_root(raw, storage_options)
            if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
                self.root = Path(path)
            else:
                self.fs = fs
                self.root = RemotePath(fs, path)
        else:
            self.root = Path(raw).expanduser()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def remote(self) -> bool:
        """True for a store on object storage (no rename, no lock: create-once objects instead)."""
        return self.fs is not None

    # ---------------------------------------------------------------- layout
    def dataset_dir(self, name: str) -> StorePath:
        return self.root / "datasets" / validate_name(name)

    def cache_dir(self, kind: str, key: str) -> StorePath:
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
        if self.remote:
            return {"versions": self._remote_versions(name), "tags": self._remote_tags(name)}
        p = self._refs_path(name)
        if not p.exists():
            return {"versions": [], "tags": {}}
        return json.loads(p.read_text())

    def _write_refs(self, name: str, refs: dict[str, Any]) -> None:
        p = self._refs_path(name)
        tmp = p.with_name(f".refs.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(refs, indent=1))
        os.replace(tmp, p)

    def _version_list(self, name: str) -> list[dict[str, Any]]:
        return self._remote_versions(name) if self.remote else self._read_refs(name)["versions"]

    def _remote_versions(self, name: str) -> list[dict[str, Any]]:
        known = self._ref_memo.setdefault(name, {})
        refs_dir = self.dataset_dir(name) / "refs"
        new = [p for p in refs_dir.iterdir() if _REF_FILE_RE.match(p.name) and p.name not in known]
        if new:
            for key, data in self.fs.cat([p.path for p in new]).items():
                fname = key.rsplit("/", 1)[-1]
                known[fname] = (int(_REF_FILE_RE.match(fname).group(1)), json.loads(data)["id"])
        out, seen = [], set()
        for n, vid in sorted(known.values()):
            if vid not in seen:  # two claims of one id cannot happen by design; keep the first if one ever does
                seen.add(vid)
                out.append({"number": n, "id": vid})
        return out

    def _remote_tags(self, name: str) -> dict[str, str]:
        files = [p for p in (self.dataset_dir(name) / "tags").iterdir() if p.name.endswith(".json")]
        if not files:
            return {}
        blobs = self.fs.cat([p.path for p in files])
        return {key.rsplit("/", 1)[-1][: -len(".json")]: json.loads(blobs[key])["id"] for key in sorted(blobs)}

    def _tag_target(self, name: str, tag: str) -> str | None:
        if not self.remote:
            return self._read_refs(name)["tags"].get(tag)
        if not _NAME_RE.match(tag) or ".." in tag:
            return None
        try:
            return json.loads((self.dataset_dir(name) / "tags" / f"{tag}.json").read_text())["id"]
        except FileNotFoundError:
            return None

    # ---------------------------------------------------------------- reading
    def datasets(self) -> list[str]:
        d = self.root / "datasets"
        if self.remote:
            return sorted(p.name for p in d.iterdir() if (p / "refs").exists())
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and (p / "refs.json").exists())

    def versions(self, name: str) -> list[Version]:
        return [self._version(name, e["id"]) for e in self._version_list(name)]

    def tags(self, name: str) -> dict[str, str]:
        return self._remote_tags(name) if self.remote else dict(self._read_refs(name)["tags"])

    def has_version(self, name: str, vid: str) -> bool:
        return (self.dataset_dir(name) / vid / "manifest.json").exists()

    def _version(self, name: str, vid: str) -> Version:
        if (v := self._try_version(name, vid)) is None:
            raise RefError(f"{name}@{vid}: version has no manifest (not committed)")
        return v

    def _try_version(self, name: str, vid: str) -> Version | None:
        # Reading the manifest is also the existence test: one request on object storage, not two.
        try:
            manifest = json.loads((self.dataset_dir(name) / vid / "manifest.json").read_text())
        except FileNotFoundError:
            return None
        return Version(self, name, vid, manifest)

    def resolve(self, ref: str) -> tuple[str, str]:
        """``name``, ``name@latest``, ``name@v3``, ``name@<id-prefix>``, ``name@<tag>`` -> (name, version id)."""
        if not isinstance(ref, str) or not ref:
            raise RefError(f"invalid ref {ref!r}")
        name, _, spec = ref.partition("@")
        validate_name(name)
        versions = self._version_list(name)
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
        if (tagged := self._tag_target(name, spec)) is not None:
            return name, tagged
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
        if (v := self._try_version(name, vid)) is not None:
            self._register(name, vid)
        return v

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

        Locally the data, decisions and manifest are staged in ``tmp/`` and published with one rename; on object
        storage the manifest is the last object written. Either way a killed process leaves no version behind.
        """
        validate_name(name)
        parent_ids = [p.id for p in parents]
        vid = recipe_id(parent_ids, op)
        if (v := self._try_version(name, vid)) is not None:
            self._register(name, vid)
            return v

        t0 = time.perf_counter()
        manifest: dict[str, Any] = {
            "id": vid,
            "name": name,
            "created": _now(),
            "parents": [{"name": p.name, "id": p.id} for p in parents],
            "op": op,
            "rows": table.num_rows,
            "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "stats": stats or {},
            "env": environment(),
        }
        publish = self._publish_remote if self.remote else self._publish_local
        publish(table, decisions, manifest, name, vid, extra=extra, timings=timings, t0=t0)
        self._register(name, vid)
        return self._version(name, vid)

    @staticmethod
    def _finish_manifest(
        manifest: dict[str, Any],
        files: list[dict[str, Any]],
        extra: dict[str, Any] | None,
        timings: dict[str, float] | None,
        t0: float,
    ) -> str:
        manifest["files"] = [f for f in files if f.get("kind") != "decisions"]
        manifest["aux_files"] = [f for f in files if f.get("kind") == "decisions"]
        manifest["timings"] = {**(timings or {}), "commit_s": round(time.perf_counter() - t0, 4)}
        if extra:
            manifest.update(extra)
        if pause := float(os.environ.get(PAUSE_ENV) or 0):
            time.sleep(pause)
        return json.dumps(manifest, indent=1, default=str)

    def _publish_local(self, table, decisions, manifest, name, vid, *, extra, timings, t0) -> None:
        stage = self.root / "tmp" / f"{name}-{vid}-{uuid.uuid4().hex[:8]}"
        stage.mkdir(parents=True)
        try:
            files = []
            for i, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
                part = table.slice(start, ROWS_PER_FILE)
                fname = f"data-{i:05d}.parquet"
                pq.write_table(part, stage / fname, compression="zstd")
                files.append({"path": fname, "rows": part.num_rows})
            if decisions is not None:
                pq.write_table(decisions, stage / "decisions.parquet", compression="zstd")
                files.append({"path": "decisions.parquet", "rows": decisions.num_rows, "kind": "decisions"})
            for f in files:
                p = stage / f["path"]
                f["sha256"] = sha256_file(p)
                f["bytes"] = p.stat().st_size
            text = self._finish_manifest(manifest, files, extra, timings, t0)
            # Written last inside the staging folder; the rename below publishes everything at once.
            (stage / "manifest.json").write_text(text)
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

    def _publish_remote(self, table, decisions, manifest, name, vid, *, extra, timings, t0) -> None:
        vdir = self.dataset_dir(name) / vid
        attempt = uuid.uuid4().hex[:8]
        written: list[RemotePath] = []

        def put(fname: str, part: pa.Table, **kind: str) -> dict[str, Any]:
            data = parquet_bytes(part)
            written.append(vdir / fname)  # before the PUT, so a half-finished upload is cleaned up too
            (vdir / fname).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            return {"path": fname, "rows": part.num_rows, **kind, "sha256": digest, "bytes": len(data)}

        try:
            files = []
            for i, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
                files.append(put(f"data-{i:05d}-{attempt}.parquet", table.slice(start, ROWS_PER_FILE)))
            if decisions is not None:
                files.append(put(f"decisions-{attempt}.parquet", decisions, kind="decisions"))
            text = self._finish_manifest(manifest, files, extra, timings, t0)
            try:
                (vdir / "manifest.json").write_text(text, exclusive=True)
            except FileExistsError:
                # A concurrent writer of the same recipe published first: its version stands, ours is surplus.
                _remove_quietly(written)
        except FileNotFoundError as e:  # what s3fs raises for a bucket that is not there
            _remove_quietly(written)
            raise CurateError(f"store {self.root}: cannot write {name}@{vid} ({e}; does the bucket exist?)") from e
        except BaseException:
            _remove_quietly(written)
            raise

    def _register(self, name: str, vid: str) -> int:
        if self.remote:
            return self._claim_number(name, vid)
        with self._locked(name):
            refs = self._read_refs(name)
            for e in refs["versions"]:
                if e["id"] == vid:
                    return e["number"]
            number = refs["versions"][-1]["number"] + 1 if refs["versions"] else 1
            refs["versions"].append({"number": number, "id": vid})
            self._write_refs(name, refs)
        return number

    def _claim_number(self, name: str, vid: str) -> int:
        refs_dir = self.dataset_dir(name) / "refs"
        for _ in range(_MAX_CLAIMS):
            versions = self._remote_versions(name)
            for e in versions:
                if e["id"] == vid:
                    return e["number"]
            number = versions[-1]["number"] + 1 if versions else 1
            fname = f"v{number:06d}.json"
            try:
                entry = {"number": number, "id": vid, "created": _now()}
                (refs_dir / fname).write_text(json.dumps(entry), exclusive=True)
            except FileExistsError:
                continue  # another writer claimed this number first: look again, take the next one
            self._ref_memo.setdefault(name, {})[fname] = (number, vid)
            return number
        raise CurateError(f"{name}@{vid}: could not claim a version number after {_MAX_CLAIMS} tries")

    def number(self, name: str, vid: str) -> int | None:
        if self.remote:
            for n, known in self._ref_memo.get(name, {}).values():
                if known == vid:
                    return n
        for e in self._version_list(name):
            if e["id"] == vid:
                return e["number"]
        return None

    def tag(self, ref: str, tag: str) -> Version:
        validate_name(tag, "tag")
        if tag == "latest" or _VNUM_RE.match(tag):
            raise RefError(f"invalid tag {tag!r}: 'latest' and v<N> are reserved")
        name, vid = self.resolve(ref)
        if self.remote:
            entry = {"tag": tag, "id": vid, "created": _now()}
            (self.dataset_dir(name) / "tags" / f"{tag}.json").write_text(json.dumps(entry))
            return self._version(name, vid)
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
                try:
                    digest = sha256_file(p)
                except FileNotFoundError:
                    problems.append(f"{p}: missing (manifest of {v.ref})")
                    continue
                if digest != f["sha256"]:
                    problems.append(f"{p}: sha256 mismatch (manifest of {v.ref})")
        return problems

    def check(self, ref: str | None = None) -> None:
        if problems := self.verify(ref):
            raise IntegrityError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))

    def gc(self, *, remove: bool = False, min_age_s: float = 3600.0) -> list[str]:
        """Leftovers of killed or lost commits: files no manifest lists, and staging folders.

        They are invisible to every reader; this lists them (and deletes them with ``remove=True``). Only
        leftovers older than ``min_age_s`` are taken, so a commit still in flight keeps its files.

        >>> Store("s3://bucket/curate").gc()                        # doctest: +SKIP
        ['s3://bucket/curate/datasets/toy/1f0c.../data-00000-9a8b7c6d.parquet']
        """
        found: list[StorePath] = []
        if not self.remote and (self.root / "tmp").exists():
            found += sorted((self.root / "tmp").iterdir())
        datasets_dir = self.root / "datasets"
        for ds in sorted(datasets_dir.iterdir()) if self.remote or datasets_dir.exists() else []:
            for vdir in sorted(ds.iterdir()):
                if vdir.name in ("refs", "tags") or not vdir.is_dir():
                    continue
                manifest = vdir / "manifest.json"
                listed = {"manifest.json"}
                if manifest.exists():
                    m = json.loads(manifest.read_text())
                    listed |= {f["path"] for f in m.get("files", []) + m.get("aux_files", [])}
                found += [p for p in sorted(vdir.iterdir()) if p.name not in listed]
        old = [p for p in found if self._age_s(p) >= min_age_s]
        if remove:
            for p in old:
                if isinstance(p, RemotePath):
                    p.unlink(missing_ok=True)
                elif p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        return [str(p) for p in old]

    @staticmethod
    def _age_s(p: StorePath) -> float:
        try:
            if isinstance(p, RemotePath):
                return (_dt.datetime.now(_dt.UTC) - p.fs.modified(p.path)).total_seconds()
            return time.time() - p.stat().st_mtime
        except (NotImplementedError, OSError, TypeError):
            return 0.0  # age unknown: only a gc with min_age_s=0 takes it


def _remove_quietly(paths: Sequence[RemotePath]) -> None:
    for p in paths:
        with contextlib.suppress(Exception):
            p.unlink(missing_ok=True)
