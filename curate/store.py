"""The versioned dataset store, on a local directory or on object storage (S3, GCS, any fsspec URL).

Every dataset version is an immutable folder of Parquet files plus a ``manifest.json`` written last:
a version exists iff its manifest exists. A version id is the hash of its *recipe* (parent ids, the
operation and its parameters, the curate version), so the same recipe run twice lands on the same id
and the second run is free. Nothing is overwritten or deleted by an operation.

A local store (the default) stages each version under ``tmp/`` and publishes it with one atomic rename;
``refs.json`` (version numbers and tags) is changed under a file lock.

    .curate/datasets/<name>/refs.json
    .curate/datasets/<name>/<version-id>/manifest.json   data-00000.parquet ...   __decisions__/decisions.parquet
    .curate/cache/<kind>/<key>/...
    .curate/tmp/

A store on object storage (root ``s3://bucket/prefix``, ``gs://...``, ``memory://...``) has no rename and no
lock, so it is built from create-once objects instead:

    <root>/datasets/<name>/<version-id>/data-00000-<attempt>.parquet ...  __decisions__/decisions-<attempt>.parquet
    <root>/datasets/<name>/<version-id>/manifest.json       written last, create-if-absent
    <root>/datasets/<name>/refs/v000001.json                 {"number": 1, "id": ...}, create-if-absent
    <root>/datasets/<name>/tags/<tag>.json                   {"tag": ..., "id": ...}, last writer wins
    <root>/cache/<kind>/<key>/shard-<sha256>.parquet         immutable, named by the hash of their bytes

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

What the store holds is data, checked before use, locally and remotely alike: ids are hex, file names in a manifest
are plain names inside the version folder, a damaged manifest or refs file is one ``IntegrityError`` line naming
it. Each refs entry records the sha256 of the version's manifest, and a manifest records the curate version that
entered its id, so ``verify`` re-derives every id from its recipe and catches an edited ``rows``, ``op`` or
``parents``; it walks the version folders on disk, so a lost ``refs.json`` hides nothing.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
# Every pattern is used with fullmatch: ``re.match`` with ``$`` lets a trailing newline through.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VNUM_RE = re.compile(r"v(\d+)")
_REF_FILE_RE = re.compile(r"v(\d+)\.json")
#: the staging folder a local commit makes under tmp/: <name>-<version id>-<8 hex>; gc takes nothing else there
_STAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}-[0-9a-f]{16}-[0-9a-f]{8}")
_HEX_RE = re.compile(r"[0-9a-f]{4,64}")
ID_LEN = 16
_ID_RE = re.compile(rf"[0-9a-f]{{{ID_LEN}}}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
# A file a manifest lists is a plain name inside its version folder: no '/', and a first character that makes
# '.' and '..' impossible.
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
#: where a version's decisions live: a folder ``datasets.load_dataset(<version folder>)`` skips (it ignores folders
#: named ``__*``), so a version folder loads as its rows alone; versions made before it hold decisions.parquet on top
AUX_DIR = "__decisions__"
_AUX_FILE_RE = re.compile(rf"(?:{AUX_DIR}/)?[A-Za-z0-9][A-Za-z0-9._-]{{0,254}}")
# Each lost race means another writer landed a version, so this bounds how many commits can overtake one writer.
_MAX_CLAIMS = 1000
#: a cache shard is named by the sha256 of its bytes (``curate.cache``)
SHARD_RE = re.compile(r"shard-([0-9a-f]{64})\.parquet")


def curate_version() -> str:
    from curate._version import __version__

    return __version__


def validate_name(name: str, what: str = "dataset name") -> str:
    """Reject names that could escape the store (``/``, ``..``) or confuse ref parsing (``@``)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise RefError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (no '/', '..', '@'; at most 128 chars)"
        )
    return name


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def recipe_id(parents: Sequence[str], op: dict[str, Any], curate: str | None = None) -> str:
    """The version id: a hash of everything that determines the result (``curate``: the version that ran it,
    default this one; ``verify`` passes the one a manifest records to re-derive its id)."""
    recipe = {"parents": list(parents), "op": op, "curate": curate or curate_version()}
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
    version (``v.path / "manifest.json"``, ``v.data_files[0].read_bytes()``) works on both. ``str()`` is the
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


# ---------------------------------------------------------------- reading what the store holds
# Everything read from the store is data: a path, an id or a count in a manifest or a refs file is checked before
# it is used, and a file that fails is named in one line, never followed outside its folder.
_VERIFY_HINT = "; run `curate verify`"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _parse_json(path: StorePath, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON and bad UTF-8 alike
        raise IntegrityError(f"{path}: damaged, not valid JSON ({_one_line(e)})") from None


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_files(path: StorePath, files: Any, key: str, pattern: re.Pattern[str] = _FILE_RE) -> None:
    if not isinstance(files, list):
        raise IntegrityError(f"{path}: damaged, {key!r} is not a list")
    for i, f in enumerate(files):
        where = f"{key}[{i}]"
        if not isinstance(f, dict):
            raise IntegrityError(f"{path}: damaged, {where} is not an object")
        name = f.get("path")
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise IntegrityError(f"{path}: {where}.path {name!r} is not a plain file name inside the version folder")
        if not _is_count(f.get("rows")):
            raise IntegrityError(f"{path}: damaged, {where}.rows {f.get('rows')!r} is not a row count")
        if not isinstance(f.get("sha256"), str) or not _SHA_RE.fullmatch(f["sha256"]):
            raise IntegrityError(f"{path}: damaged, {where}.sha256 {f.get('sha256')!r} is not a sha256")


def parse_manifest(path: StorePath, data: bytes, name: str, vid: str) -> dict[str, Any]:
    """A manifest's bytes as a dict, checked to be one of version ``name@vid``; ``IntegrityError`` otherwise."""
    m = _parse_json(path, data)
    if not isinstance(m, dict):
        raise IntegrityError(f"{path}: damaged, not a JSON object")
    if m.get("id") != vid or m.get("name") != name:
        raise IntegrityError(
            f"{path}: manifest of {m.get('name')!r}@{m.get('id')!r} in the folder of {name}@{vid} (moved or edited)"
        )
    if not _is_count(m.get("rows")):
        raise IntegrityError(f"{path}: damaged, 'rows' {m.get('rows')!r} is not a row count")
    if not isinstance(m.get("op"), dict):
        raise IntegrityError(f"{path}: damaged, 'op' is not an object")
    parents = m.get("parents", [])
    if not isinstance(parents, list) or not all(
        isinstance(p, dict)
        and isinstance(p.get("name"), str)
        and _NAME_RE.fullmatch(p["name"])
        and isinstance(p.get("id"), str)
        and _ID_RE.fullmatch(p["id"])
        for p in parents
    ):
        raise IntegrityError(f"{path}: damaged, 'parents' is not a list of {{name, id}} with hex ids")
    _check_files(path, m.get("files"), "files")
    _check_files(path, m.get("aux_files", []), "aux_files", _AUX_FILE_RE)
    schema = m.get("schema", [])
    if not isinstance(schema, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in schema):
        raise IntegrityError(f"{path}: damaged, 'schema' is not a list of columns")
    return m


def _check_entry(path: StorePath, e: Any, number: int | None = None) -> dict[str, Any]:
    """One version entry of a refs file: ``{"number", "id"[, "manifest_sha256"]}`` with a hex id."""
    if not isinstance(e, dict):
        raise IntegrityError(f"{path}: damaged, a version entry is not an object")
    n, vid, sha = e.get("number"), e.get("id"), e.get("manifest_sha256")
    if number is not None and n is None:
        n = number
    if not _is_count(n) or n < 1 or (number is not None and n != number):
        raise IntegrityError(f"{path}: damaged, version number {n!r} is not valid here")
    if not isinstance(vid, str) or not _ID_RE.fullmatch(vid):
        raise IntegrityError(f"{path}: version id {vid!r} is not {ID_LEN} hex digits")
    if sha is not None and not (isinstance(sha, str) and _SHA_RE.fullmatch(sha)):
        raise IntegrityError(f"{path}: damaged, manifest_sha256 {sha!r} is not a sha256")
    out: dict[str, Any] = {"number": n, "id": vid}
    if sha is not None:
        out["manifest_sha256"] = sha
    return out


def _check_refs(path: StorePath, refs: Any) -> dict[str, Any]:
    if not isinstance(refs, dict) or not isinstance(refs.get("versions"), list):
        raise IntegrityError(f"{path}: damaged, not an object with a 'versions' list")
    versions = [_check_entry(path, e) for e in refs["versions"]]
    if not versions:
        raise IntegrityError(f"{path}: damaged, lists no versions")
    numbers = [e["number"] for e in versions]
    ids = [e["id"] for e in versions]
    if numbers != sorted(set(numbers)) or len(set(ids)) != len(ids):
        raise IntegrityError(f"{path}: damaged, version numbers or ids repeat or are out of order")
    tags = refs.get("tags", {})
    if not isinstance(tags, dict):
        raise IntegrityError(f"{path}: damaged, 'tags' is not an object")
    for tag, vid in tags.items():
        if not _NAME_RE.fullmatch(tag) or ".." in tag or _VNUM_RE.fullmatch(tag) or tag == "latest":
            raise IntegrityError(f"{path}: tag {tag!r} is not a valid tag name")
        if not isinstance(vid, str) or not _ID_RE.fullmatch(vid):
            raise IntegrityError(f"{path}: tag {tag!r} points at {vid!r}, not an id of {ID_LEN} hex digits")
    return {**refs, "versions": versions, "tags": dict(tags)}


def _read_version_file(path: StorePath, rows: int | None, columns: Sequence[str] | None) -> pa.Table:
    """A version's data or decisions file, or one ``IntegrityError`` line naming it."""
    try:
        table = read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing{_VERIFY_HINT}") from None
    except (pa.ArrowException, OSError, ValueError) as e:
        if columns is not None:
            try:  # a column the caller asked for that the file lacks is the caller's mistake, not damage
                names = set(_parquet_schema(path).names)
            except Exception:  # noqa: BLE001 - the footer is damaged too: the error below says so
                names = None
            if names is not None and not set(columns) <= names:
                raise
        # pyarrow repeats the path in its message; the line names the file once, up front.
        why = re.sub(r"^Could not open Parquet input source '[^']*': ", "", _one_line(e))
        raise IntegrityError(f"{path}: cannot be read as Parquet ({why}){_VERIFY_HINT}") from None
    if rows is not None and table.num_rows != rows:
        raise IntegrityError(f"{path}: holds {table.num_rows} rows, its manifest says {rows}{_VERIFY_HINT}")
    return table


def _parquet_schema(path: StorePath) -> pa.Schema:
    if isinstance(path, RemotePath):
        with path.open("rb") as f:
            return pq.read_schema(f)
    return pq.read_schema(path)


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
    # sha256 of the manifest's bytes as read: what the refs entry records when the version is registered.
    manifest_sha256: str | None = field(default=None, compare=False, repr=False)

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

    @property
    def data_files(self) -> list[StorePath]:
        """The version's Parquet data files, in row order (its decisions are not among them)."""
        return [self.path / f["path"] for f in self.manifest["files"]]

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The version's rows; a data file that is missing or does not parse is one ``IntegrityError`` line."""
        files = self.manifest["files"]
        if not files:
            return pa.schema([]).empty_table()
        tables = [_read_version_file(self.path / f["path"], f["rows"], columns) for f in files]
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def to_polars(self, columns: Sequence[str] | None = None):
        """The version's rows as a ``polars.DataFrame``."""
        import polars as pl

        return pl.from_arrow(self.to_arrow(columns))

    def to_pandas(self, columns: Sequence[str] | None = None):
        """The version's rows as a ``pandas.DataFrame`` (nested columns hold lists of dicts).

        >>> curate.load("sft-fisher").to_pandas().head()   # doctest: +SKIP
        """
        return self.to_arrow(columns).to_pandas()

    def to_hf(self):
        """The version as a ``datasets.Dataset`` (in memory, no copy of the store)."""
        import datasets

        return datasets.Dataset(self.to_arrow())

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.to_arrow().to_pylist()

    def decisions(self) -> pa.Table | None:
        """One row per parent row (id, score, kept, reason) for a selection; None for other versions."""
        # A remote commit names the file per attempt; the manifest says which one belongs to this version.
        aux = [f for f in self.manifest.get("aux_files", []) if f.get("kind") == "decisions"]
        if aux:
            return _read_version_file(self.path / aux[0]["path"], aux[0]["rows"], None)
        # Versions made before aux_files was recorded: the file on top of the version folder, or in AUX_DIR.
        for p in (self.path / "decisions.parquet", self.path / AUX_DIR / "decisions.parquet"):
            if p.exists():
                return _read_version_file(p, None, None)
        return None

    @property
    def columns(self) -> list[str]:
        return [f["name"] for f in self.manifest.get("schema", [])]


def _refuse_repeated_columns(schema: pa.Schema, name: str) -> None:
    names = schema.names
    if twice := sorted({c for c in names if names.count(c) > 1}):
        # Parquet writes such a table and then cannot read it back: refuse it before anything is written.
        raise CurateError(f"{name}: the table has column(s) {', '.join(twice)} more than once; nothing was saved")


def _peeked(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The same stream, its first table already read (so a stream that fails at once leaves nothing staged)."""
    it = iter(tables)
    first = next(it, None)
    return it if first is None else _chain_first(first, it)


def _chain_first(first: pa.Table, rest: Iterator[pa.Table]) -> Iterator[pa.Table]:
    yield first
    yield from rest


def _write_stream(
    tables: Iterable[pa.Table],
    manifest: dict[str, Any],
    open_sink: Callable[[int], Any],
    close_sink: Callable[[int, Any, int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Write a stream of tables of one schema as data files of at most ``ROWS_PER_FILE`` rows, each table a row
    group as it arrives; fills in the manifest's ``rows`` and ``schema``. Returns the files' entries."""
    files: list[dict[str, Any]] = []
    writer, sink, in_file, total, schema = None, None, 0, 0, None
    for t in tables:
        if schema is None:
            schema = t.schema
            _refuse_repeated_columns(schema, manifest["name"])
        elif not t.schema.equals(schema):
            raise CurateError(f"{manifest['name']}: a streamed table changed its schema; nothing was saved")
        start = 0
        while start < t.num_rows:
            if writer is None:
                sink = open_sink(len(files))
                writer = pq.ParquetWriter(sink, schema, compression="zstd")
            part = t.slice(start, ROWS_PER_FILE - in_file)
            writer.write_table(part)
            start, in_file, total = start + part.num_rows, in_file + part.num_rows, total + part.num_rows
            if in_file == ROWS_PER_FILE:
                writer.close()
                files.append(close_sink(len(files), sink, in_file))
                writer, in_file = None, 0
    if schema is None:
        raise CurateError(f"{manifest['name']}: the stream held no table; nothing was saved")
    if writer is None and not files:  # no rows at all: one empty file, as a table of none is written
        sink = open_sink(0)
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    if writer is not None:
        writer.close()
        files.append(close_sink(len(files), sink, in_file))
    manifest["rows"] = total
    manifest["schema"] = [{"name": f.name, "type": str(f.type)} for f in schema]
    return files


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
        # Ref objects never change once created, so what was read once is kept:
        # {name: {file name: (number, id, manifest sha256 or None)}}.
        self._ref_memo: dict[str, dict[str, tuple[int, str, str | None]]] = {}
        #: versions this object wrote (not found): a recipe runner tells a computed step from a skipped one by it
        self.written = 0
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
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return {"versions": [], "tags": {}}
        except OSError as e:
            raise IntegrityError(f"{p}: cannot be read ({_one_line(e)})") from None
        return _check_refs(p, _parse_json(p, data))

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
        new = [p for p in refs_dir.iterdir() if _REF_FILE_RE.fullmatch(p.name) and p.name not in known]
        if new:
            for key, data in self.fs.cat([p.path for p in new]).items():
                fname = key.rsplit("/", 1)[-1]
                where = refs_dir / fname
                e = _check_entry(where, _parse_json(where, data), int(_REF_FILE_RE.fullmatch(fname).group(1)))
                known[fname] = (e["number"], e["id"], e.get("manifest_sha256"))
        out, seen = [], set()
        for n, vid, sha in sorted(known.values(), key=lambda t: t[:2]):
            if vid not in seen:  # two claims of one id cannot happen by design; keep the first if one ever does
                seen.add(vid)
                out.append({"number": n, "id": vid, **({"manifest_sha256": sha} if sha else {})})
        return out

    def _remote_tags(self, name: str) -> dict[str, str]:
        files = [p for p in (self.dataset_dir(name) / "tags").iterdir() if p.name.endswith(".json")]
        if not files:
            return {}
        blobs = self.fs.cat([p.path for p in files])
        tags = {}
        for key in sorted(blobs):
            fname = key.rsplit("/", 1)[-1]
            tags[fname[: -len(".json")]] = self._remote_tag_id(self.dataset_dir(name) / "tags" / fname, blobs[key])
        return tags

    @staticmethod
    def _remote_tag_id(path: RemotePath, data: bytes) -> str:
        tag = path.name[: -len(".json")]
        if not _NAME_RE.fullmatch(tag) or ".." in tag:
            raise IntegrityError(f"{path}: {tag!r} is not a valid tag name")
        entry = _parse_json(path, data)
        vid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(vid, str) or not _ID_RE.fullmatch(vid):
            raise IntegrityError(f"{path}: tag {tag!r} points at {vid!r}, not an id of {ID_LEN} hex digits")
        return vid

    def _tag_target(self, name: str, tag: str) -> str | None:
        if not self.remote:
            return self._read_refs(name)["tags"].get(tag)
        if not _NAME_RE.fullmatch(tag) or ".." in tag:
            return None
        path = self.dataset_dir(name) / "tags" / f"{tag}.json"
        try:
            return self._remote_tag_id(path, path.read_bytes())
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
        if not isinstance(vid, str) or not _ID_RE.fullmatch(vid):
            raise RefError(f"{name}@{vid!r}: not a version id ({ID_LEN} hex digits)")
        path = self.dataset_dir(name) / vid / "manifest.json"
        # Reading the manifest is also the existence test: one request on object storage, not two.
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise IntegrityError(f"{path}: cannot be read ({_one_line(e)}){_VERIFY_HINT}") from None
        try:
            manifest = parse_manifest(path, data, name, vid)
        except IntegrityError as e:
            raise IntegrityError(f"{e}{_VERIFY_HINT}") from None
        return Version(self, name, vid, manifest, hashlib.sha256(data).hexdigest())

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
        if m := _VNUM_RE.fullmatch(spec):
            n = int(m.group(1))
            for e in versions:
                if e["number"] == n:
                    return name, e["id"]
            raise RefError(f"{ref}: {name} has versions v1..v{versions[-1]['number']}")
        if (tagged := self._tag_target(name, spec)) is not None:
            return name, tagged
        if _HEX_RE.fullmatch(spec):
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
            self._register(name, vid, v.manifest_sha256)
        return v

    def materialise(
        self, name: str, parents: Sequence[Version], op: dict[str, Any], compute: Callable[[], dict[str, Any]]
    ) -> Version:
        """The step every operation shares: find the version this recipe already made, else compute and commit it.

        ``compute()`` returns the ``commit`` arguments: ``table`` and any of ``decisions``, ``stats``, ``extra``,
        ``timings``. It runs only when the store does not hold the version, so a re-run is free.

        >>> s.materialise("toy", [], {"name": "toy"}, lambda: {"table": pa.table({"id": ["a"]})})   # doctest: +SKIP
        """
        if (hit := self.lookup(name, parents, op)) is not None:
            return hit
        out = dict(compute())
        return self.commit(out.pop("table"), name=name, parents=parents, op=op, **out)

    def commit(
        self,
        table: pa.Table | Iterable[pa.Table],
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
        ``table`` may also be an iterable of tables of one schema (an import read in chunks): each is written as a
        row group as it comes, so the version never has to fit in memory, and nothing is staged before the first.
        """
        validate_name(name)
        parent_ids = [p.id for p in parents]
        made_by = curate_version()
        vid = recipe_id(parent_ids, op, made_by)
        if (v := self._try_version(name, vid)) is not None:
            self._register(name, vid, v.manifest_sha256)
            return v

        streamed = not isinstance(table, pa.Table)
        if not streamed:
            _refuse_repeated_columns(table.schema, name)
        t0 = time.perf_counter()
        manifest: dict[str, Any] = {
            "id": vid,
            "name": name,
            "created": _now(),
            "parents": [{"name": p.name, "id": p.id} for p in parents],
            "op": op,
            # A stream's rows and schema are known once it is written: _write_stream fills them in.
            "rows": None if streamed else table.num_rows,
            "schema": None if streamed else [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "stats": stats or {},
            "env": environment(),
            # The curate version that entered the id: with parents and op, verify re-derives the id from it.
            "recipe_curate": made_by,
        }
        publish = self._publish_remote if self.remote else self._publish_local
        publish(table, decisions, manifest, name, vid, extra=extra, timings=timings, t0=t0)
        # Read back before registering: a concurrent writer of the same recipe may have published first, and the
        # manifest hash the refs entry records must be that of the manifest that stands.
        v = self._version(name, vid)
        self._register(name, vid, v.manifest_sha256)
        self.written += 1
        return v

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
            # Extra facts never replace the recorded recipe or files: verify re-derives the id from those.
            manifest.update({k: v for k, v in extra.items() if k not in manifest})
        if pause := float(os.environ.get(PAUSE_ENV) or 0):
            time.sleep(pause)
        return json.dumps(manifest, indent=1, default=str)

    def _publish_local(self, table, decisions, manifest, name, vid, *, extra, timings, t0) -> None:
        stage = self.root / "tmp" / f"{name}-{vid}-{uuid.uuid4().hex[:8]}"
        if not isinstance(table, pa.Table):
            # A stream may still fail while it is read (a bad line): stage nothing before its first table.
            table = _peeked(table)
        stage.mkdir(parents=True)
        try:
            files = []
            if not isinstance(table, pa.Table):
                files = _write_stream(
                    table,
                    manifest,
                    lambda i: str(stage / f"data-{i:05d}.parquet"),
                    lambda i, sink, rows: {"path": f"data-{i:05d}.parquet", "rows": rows},
                )
            else:
                for i, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
                    part = table.slice(start, ROWS_PER_FILE)
                    fname = f"data-{i:05d}.parquet"
                    pq.write_table(part, stage / fname, compression="zstd")
                    files.append({"path": fname, "rows": part.num_rows})
            if decisions is not None:
                aux = f"{AUX_DIR}/decisions.parquet"
                (stage / AUX_DIR).mkdir()
                pq.write_table(decisions, stage / aux, compression="zstd")
                files.append({"path": aux, "rows": decisions.num_rows, "kind": "decisions"})
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

        def put(fname: str, part: pa.Table | bytes, **kind: Any) -> dict[str, Any]:
            data = part if isinstance(part, bytes) else parquet_bytes(part)
            written.append(vdir / fname)  # before the PUT, so a half-finished upload is cleaned up too
            (vdir / fname).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            rows = part.num_rows if isinstance(part, pa.Table) else kind.pop("rows")
            return {"path": fname, "rows": rows, **kind, "sha256": digest, "bytes": len(data)}

        try:
            files = []
            if not isinstance(table, pa.Table):
                files = _write_stream(
                    table,
                    manifest,
                    lambda i: pa.BufferOutputStream(),
                    lambda i, sink, rows: put(
                        f"data-{i:05d}-{attempt}.parquet", sink.getvalue().to_pybytes(), rows=rows
                    ),
                )
            else:
                for i, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
                    files.append(put(f"data-{i:05d}-{attempt}.parquet", table.slice(start, ROWS_PER_FILE)))
            if decisions is not None:
                files.append(put(f"{AUX_DIR}/decisions-{attempt}.parquet", decisions, kind="decisions"))
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

    def _register(self, name: str, vid: str, manifest_sha256: str | None = None) -> int:
        """Give ``vid`` the next version number; the entry also records the manifest's sha256 so that an edited
        manifest is caught by ``verify``."""
        if self.remote:
            return self._claim_number(name, vid, manifest_sha256)
        with self._locked(name):
            refs = self._read_refs(name)
            for e in refs["versions"]:
                if e["id"] == vid:
                    return e["number"]
            number = refs["versions"][-1]["number"] + 1 if refs["versions"] else 1
            entry: dict[str, Any] = {"number": number, "id": vid}
            if manifest_sha256:
                entry["manifest_sha256"] = manifest_sha256
            refs["versions"].append(entry)
            self._write_refs(name, refs)
        return number

    def _claim_number(self, name: str, vid: str, manifest_sha256: str | None = None) -> int:
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
                if manifest_sha256:
                    entry["manifest_sha256"] = manifest_sha256
                (refs_dir / fname).write_text(json.dumps(entry), exclusive=True)
            except FileExistsError:
                continue  # another writer claimed this number first: look again, take the next one
            self._ref_memo.setdefault(name, {})[fname] = (number, vid, manifest_sha256)
            return number
        raise CurateError(f"{name}@{vid}: could not claim a version number after {_MAX_CLAIMS} tries")

    def number(self, name: str, vid: str) -> int | None:
        if self.remote:
            for n, known, _ in self._ref_memo.get(name, {}).values():
                if known == vid:
                    return n
        for e in self._version_list(name):
            if e["id"] == vid:
                return e["number"]
        return None

    def tag(self, ref: str, tag: str) -> Version:
        validate_name(tag, "tag")
        if tag == "latest" or _VNUM_RE.fullmatch(tag):
            raise RefError(f"invalid tag {tag!r}: 'latest' and v<N> are reserved")
        name, vid = self.resolve(ref)
        version = self._version(name, vid)  # a version that cannot be read is refused before any ref changes
        if self.remote:
            entry = {"tag": tag, "id": vid, "created": _now()}
            (self.dataset_dir(name) / "tags" / f"{tag}.json").write_text(json.dumps(entry))
            return version
        with self._locked(name):
            refs = self._read_refs(name)
            refs["tags"][tag] = vid
            self._write_refs(name, refs)
        return version

    # ---------------------------------------------------------------- checking
    def verify(self, ref: str | None = None, *, cache: bool | None = None) -> list[str]:
        """Check the store; return one line per problem (empty list = all good).

        Every version folder on disk, registered or not (a lost ``refs.json`` hides nothing): its manifest parses,
        its bytes are the ones its refs entry recorded, its id re-derives from its recipe (parents, op, curate
        version), its row counts agree with its files, and every file re-hashes to the manifest's sha256. With
        ``cache`` (default: on for the whole store, off for one ``ref``) every cache shard is re-hashed too.

        >>> Store(".curate").verify()        # doctest: +SKIP
        []
        """
        if ref is not None:
            name, vid = self.resolve(ref)
            entry = next((e for e in self._version_list(name) if e["id"] == vid), None)
            problems = self._verify_version(name, vid, entry)
        else:
            problems = [line for name in self._dataset_names() for line in self._verify_dataset(name)]
            if not self.remote and (self.root / "datasets").is_dir():
                # Readers would follow a link out of the store: a store holds plain files and folders only.
                problems += [
                    f"{p}: a symlink in the store"
                    for p in sorted((self.root / "datasets").rglob("*"))
                    if p.is_symlink()
                ]
        if cache if cache is not None else ref is None:
            problems += self.verify_cache()
        return problems

    def verify_cache(self) -> list[str]:
        """Re-hash every cache shard; one line per shard that fails (a run ignores it and recomputes its rows)."""
        problems = []
        for p in self._cache_files("shard-*.parquet"):
            if (why := check_shard(p, parse=False)[1]) is not None:
                problems.append(f"{p}: cache shard {why} (ignored and recomputed; `curate gc --remove` deletes it)")
        for p in self._flat_files():
            if (why := check_flat(p)) is not None:
                problems.append(f"{p}: flat feature file {why} (ignored and rebuilt; `curate gc --remove` deletes it)")
        return problems

    def _flat_files(self) -> list[StorePath]:
        """The flat feature files (``flat-*.bin``) under the cache, and records (``.json``) whose file is gone."""
        bins = self._cache_files("flat-*.bin")
        have = {p.with_suffix(".json") for p in bins}
        return bins + [p for p in self._cache_files("flat-*.json") if p not in have]

    def _cache_files(self, pattern: str) -> list[StorePath]:
        cache = self.root / "cache"
        if self.remote:
            return sorted(cache.glob(f"*/*/{pattern}"))
        if not cache.is_dir() or _is_link(cache):
            return []
        # glob follows links to folders: keep only files reached without one
        found = cache.glob(f"*/*/{pattern}")
        return sorted(p for p in found if not any(map(_is_link, (p, p.parent, p.parent.parent))))

    def _dataset_names(self) -> list[str]:
        d = self.root / "datasets"
        if self.remote:
            return sorted(p.name for p in d.iterdir())
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []

    def _verify_dataset(self, dname: str) -> list[str]:
        d = self.root / "datasets" / dname
        if not _NAME_RE.fullmatch(dname) or ".." in dname:
            return [f"{d}: not a valid dataset name (nothing can read it)"]
        on_disk = sorted(p.parent.name for p in d.glob("*/manifest.json"))
        refs_at = d / "refs" if self.remote else d / "refs.json"
        try:
            entries = self._version_list(dname)
            tags = self.tags(dname)
        except CurateError as e:  # a damaged refs file: still check every version folder on disk
            return [str(e), *(line for vid in on_disk for line in self._verify_version(dname, vid, None))]
        problems = []
        registered = {e["id"]: e for e in entries}
        unregistered = [vid for vid in on_disk if vid not in registered]
        if unregistered and not entries:
            problems.append(
                f"{refs_at}: missing, but {d} holds {len(unregistered)} committed version(s) that no ref reaches "
                f"({', '.join(unregistered)})"
            )
        else:
            problems += [
                f"{d / vid}: committed but not registered in {refs_at} (refs edited, or a commit killed before it "
                "registered: re-running its recipe registers it)"
                for vid in unregistered
            ]
        for e in entries:
            problems += self._verify_version(dname, e["id"], e)
        for vid in unregistered:
            problems += self._verify_version(dname, vid, None)
        for tag, tid in sorted(tags.items()):
            if tid not in registered:
                problems.append(
                    f"{refs_at}: tag {tag!r} points at {tid}, which is not a registered version of {dname}"
                )
        return problems

    def _verify_version(self, name: str, vid: str, entry: dict[str, Any] | None) -> list[str]:
        vdir = self.dataset_dir(name) / vid
        if not _ID_RE.fullmatch(vid):
            return [f"{vdir}: folder name is not a version id ({ID_LEN} hex digits)"]
        ref = f"{name}@v{entry['number']}" if entry else f"{name}@{vid}"
        mpath = vdir / "manifest.json"
        try:
            data = mpath.read_bytes()
        except FileNotFoundError:
            return [f"{mpath}: missing ({ref} is registered but has no manifest)"]
        except OSError as e:
            return [f"{mpath}: cannot be read ({_one_line(e)})"]
        problems = []
        recorded = entry.get("manifest_sha256") if entry else None
        if recorded and hashlib.sha256(data).hexdigest() != recorded:
            problems.append(f"{mpath}: sha256 mismatch with the one recorded when {ref} was registered (edited)")
        try:
            m = parse_manifest(mpath, data, name, vid)
        except IntegrityError as e:
            return [*problems, str(e)]
        env = m.get("env")
        made_by = m.get("recipe_curate") or (env.get("curate") if isinstance(env, dict) else None)
        derived = recipe_id([p["id"] for p in m.get("parents", [])], m["op"], made_by) if made_by else None
        if derived != vid:
            problems.append(
                f"{mpath}: its recipe (parents, op, curate {made_by}) hashes to {derived}, not to its id (edited)"
            )
        held = sum(f["rows"] for f in m["files"])
        if held != m["rows"]:
            problems.append(f"{mpath}: says {m['rows']} rows but its files hold {held} (manifest of {ref})")
        for f in m["files"] + m.get("aux_files", []):
            problems += self._verify_file(vdir / f["path"], f, ref)
        return problems

    @staticmethod
    def _verify_file(p: StorePath, f: dict[str, Any], ref: str) -> list[str]:
        try:
            if isinstance(p, RemotePath):
                data = p.read_bytes()  # one GET, hashed and then parsed from memory
                digest, source = hashlib.sha256(data).hexdigest(), pa.BufferReader(data)
            else:
                digest, source = sha256_file(p), p
        except FileNotFoundError:
            return [f"{p}: missing (manifest of {ref})"]
        except OSError as e:
            return [f"{p}: cannot be read ({_one_line(e)}) (manifest of {ref})"]
        if digest != f["sha256"]:
            return [f"{p}: sha256 mismatch (manifest of {ref})"]
        try:
            held = pq.read_metadata(source).num_rows
        except (pa.ArrowException, OSError, ValueError) as e:
            return [f"{p}: does not parse as Parquet ({_one_line(e)}) (manifest of {ref})"]
        if held != f["rows"]:
            return [f"{p}: holds {held} rows, the manifest of {ref} says {f['rows']}"]
        return []

    def check(self, ref: str | None = None) -> None:
        if problems := self.verify(ref):
            raise IntegrityError(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))

    def gc(self, *, remove: bool = False, min_age_s: float = 3600.0) -> list[str]:
        """Leftovers: staging folders and files of killed or lost commits, temp files of killed cache and refs
        writes, cache shards that fail their hash check, and flat feature files (with their records) that fail
        theirs.

        All are invisible to every reader; this lists them (and deletes them with ``remove=True``). Leftovers of
        a write are only taken when older than ``min_age_s``, so a command still in flight keeps its files; a bad
        shard is taken at any age (shards are published whole, so a bad one is never still being written). A
        version folder whose manifest is damaged is left alone: ``verify`` names it for a person to look at.

        >>> Store("s3://bucket/curate").gc()                        # doctest: +SKIP
        ['s3://bucket/curate/datasets/toy/1f0c.../data-00000-9a8b7c6d.parquet']
        """
        if min_age_s < 0:
            raise CurateError(f"--min-age must be >= 0 seconds, got {min_age_s}")
        found: list[StorePath] = []
        # Nothing is followed through a symlink and only names a commit makes are taken: gc deletes, so a planted
        # link (or --store pointing at a folder that is not a store) must never lead it to other files.
        tmp = self.root / "tmp"
        if not self.remote and tmp.is_dir() and not _is_link(tmp):
            found += [p for p in sorted(tmp.iterdir()) if _STAGE_RE.fullmatch(p.name) and not _is_link(p)]
        datasets_dir = self.root / "datasets"
        walk = self.remote or (datasets_dir.is_dir() and not _is_link(datasets_dir))
        for ds in sorted(datasets_dir.iterdir()) if walk else []:
            if not self.remote:
                if not ds.is_dir() or _is_link(ds):
                    continue
                found += sorted(p for p in ds.glob(".refs.*.tmp") if not _is_link(p))
            registered = None
            for vdir in sorted(ds.iterdir()):
                if vdir.name in ("refs", "tags") or not vdir.is_dir() or _is_link(vdir):
                    continue
                manifest = vdir / "manifest.json"
                listed = {"manifest.json"}
                try:
                    m = parse_manifest(manifest, manifest.read_bytes(), ds.name, vdir.name)
                except FileNotFoundError:
                    # A local commit is one rename, so a local folder without a manifest was damaged, not killed;
                    # on object storage it is a killed commit unless the version was registered (then: damage).
                    if not self.remote:
                        continue
                    if registered is None:
                        try:
                            registered = {e["id"] for e in self._version_list(ds.name)}
                        except (CurateError, OSError):
                            registered = False  # refs unreadable: nothing in this dataset is surely a leftover
                    if registered is False or vdir.name in registered:
                        continue
                except (OSError, IntegrityError):
                    continue
                else:
                    listed |= {f["path"] for f in m["files"] + m.get("aux_files", [])}
                aux = vdir / AUX_DIR
                found += [p for p in sorted(vdir.iterdir()) if p.name not in {*listed, AUX_DIR} and not _is_link(p)]
                if aux.is_dir() and not _is_link(aux):
                    found += [
                        p for p in sorted(aux.iterdir()) if f"{AUX_DIR}/{p.name}" not in listed and not _is_link(p)
                    ]
        found += self._cache_files(".shard-*.tmp") + self._cache_files(".settings.*.tmp")
        # A flat feature file is renamed into place before its record is written: only an old one is surely damaged.
        for p in self._flat_files():
            if check_flat(p) is not None:
                found += [q for q in (p.with_suffix(".bin"), p.with_suffix(".json")) if q.exists() and not _is_link(q)]
        old = [p for p in found if self._age_s(p) >= min_age_s]
        old += [p for p in self._cache_files("shard-*.parquet") if check_shard(p, parse=False)[1] is not None]
        if remove:
            for p in old:
                if isinstance(p, RemotePath) or p.is_symlink():
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


def _is_link(p: StorePath) -> bool:
    return isinstance(p, Path) and p.is_symlink()


def _remove_quietly(paths: Sequence[RemotePath]) -> None:
    for p in paths:
        with contextlib.suppress(Exception):
            p.unlink(missing_ok=True)


def check_shard(
    path: StorePath, columns: Sequence[str] | None = None, *, parse: bool = True
) -> tuple[pa.Table | None, str | None]:
    """``(table, None)`` for a shard whose bytes hash to its name, else ``(None, what is wrong)``.

    The bytes are read once, hashed and parsed from memory, so a shard is never parsed from other bytes than the
    ones checked. ``parse=False`` only checks the hash (the table is then ``None`` either way).

    >>> check_shard(Path("cache/features/k/shard-00.parquet"))[1]   # doctest: +SKIP
    'has no content hash in its name (written by an older curate)'
    """
    m = SHARD_RE.fullmatch(path.name)
    if m is None:
        return None, "has no content hash in its name (written by an older curate)"
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot be read ({_one_line(e)})"
    if hashlib.sha256(data).hexdigest() != m.group(1):
        return None, "fails its hash check"
    if not parse:
        return None, None
    try:
        table = pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowException, OSError, ValueError) as e:
        return None, f"cannot be parsed ({_one_line(e)})"
    if "key" not in table.column_names:
        return None, "has no 'key' column"
    return table, None


def check_flat(path: StorePath) -> str | None:
    """None if a flat feature file (``flat-*.bin``) has the size and sha256 its ``.json`` record gives, else what is
    wrong. ``path`` may also be a record whose file is missing.

    >>> check_flat(Path("cache/features-flat/k/flat-0a1b.bin"))   # doctest: +SKIP
    'fails its sha256 check'
    """
    data, record = path.with_suffix(".bin"), path.with_suffix(".json")
    if not data.exists():
        return "is missing (its .json record is left)"
    if not record.exists():
        return "has no .json record"
    if _is_link(record):  # never read through a planted link (it could name /dev/zero)
        return "has a .json record that is a symlink"
    try:
        meta = json.loads(record.read_text())
        size, digest = int(meta["bytes"]), str(meta["sha256"])
        actual = data.stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"has an unreadable record ({type(e).__name__})"
    if actual != size:
        return f"has {actual} bytes, its record says {size}"
    if sha256_file(data) != digest:
        return "fails its sha256 check"
    return None


# ------------------------------------------------------------------------------------------ the default store
_default: Store | None = None


def set_store(root: str | Path | None) -> Store:
    """Point the API at a store root (default ``./.curate`` or ``$CURATE_STORE``)."""
    global _default
    _default = Store(root)
    return _default


def get_store(store: Store | str | Path | None = None) -> Store:
    """``store`` as a ``Store``; none given: the one ``set_store`` chose, else ``./.curate`` / ``$CURATE_STORE``."""
    if isinstance(store, Store):
        return store
    if store is not None:
        return Store(store)
    return _default if _default is not None else Store()


def lineage(ref: str | Version, *, store: Store | str | None = None) -> dict[str, Any]:
    """The lineage tree of a version: ``{ref, id, op, rows, parents: [...]}`` down to the imports."""
    s = get_store(store)
    v = s.load(ref)
    parents = []
    for p in v.parents:
        try:
            parents.append(lineage(f"{p['name']}@{p['id']}", store=s))
        except Exception:  # a parent in another store, or removed by hand: show what the manifest knows
            parents.append({"ref": f"{p['name']}@{p['id']}", "id": p["id"], "op": {}, "rows": None, "parents": []})
    return {
        "ref": v.ref,
        "id": v.id,
        "op": v.op,
        "rows": len(v),
        "stats": v.manifest.get("stats", {}),
        "parents": parents,
    }
