"""The store on object storage: a real S3 API (moto's server on 127.0.0.1) reached through s3fs.

Covers what a local store already proves, over S3: import / re-import / select / log / verify / every ref form /
tags / the row cache, plus what is new there: version numbers claimed with conditional writes by concurrent
writers (threads and processes), a writer SIGKILLed between its data files and its manifest, and the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

import curate  # noqa: E402
from curate.cache import RowCache  # noqa: E402
from curate.errors import CurateError, IntegrityError, RefError  # noqa: E402
from curate.store import RemotePath, Store  # noqa: E402
from tests.s3_server import S3Server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
BUCKET = "curate-test"


@pytest.fixture(scope="module")
def s3():
    import s3fs

    with S3Server() as server, pytest.MonkeyPatch.context() as mp:
        for k, v in server.env.items():
            mp.setenv(k, v)
        # fsspec caches filesystem instances by their options, not by the endpoint read from the environment.
        s3fs.S3FileSystem.clear_instance_cache()
        server.make_bucket(BUCKET)
        yield server
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def url(s3) -> str:
    """A fresh, empty store: its own prefix in the shared bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3store(url) -> Store:
    return Store(url)


def _rows(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(offset, offset + n)], "x": list(range(offset, offset + n))})


def _objects(store: Store) -> dict[str, str]:
    """Every object under the store and its ETag: 'nothing changed' is equality of two of these."""
    found = store.fs.find(store.root.path, detail=True)
    return {k: v["ETag"] for k, v in found.items()}


def _env(s3: S3Server, **extra: str) -> dict[str, str]:
    return {**os.environ, **s3.env, "PYTHONPATH": str(REPO), "COLUMNS": "200", **extra}


def test_conditional_create_is_honoured(s3store):
    # The whole numbering scheme rests on this: a second create of one key must fail, and leave the first.
    p = s3store.root / "probe.json"
    p.write_text("first", exclusive=True)
    with pytest.raises(FileExistsError):
        p.write_text("second", exclusive=True)
    assert p.read_text() == "first"
    p.write_text("third")  # a plain write still overwrites
    assert p.read_text() == "third"


def test_import_reimport_select_log_verify(s3store):
    assert s3store.remote and str(s3store.root).startswith(f"s3://{BUCKET}/")
    v = curate.import_data(str(GSM8K), name="gsm8k", store=s3store)
    assert (v.ref, len(v)) == ("gsm8k@v1", 1319)
    assert isinstance(v.path, RemotePath) and str(v.path) == f"{s3store.root}/datasets/gsm8k/{v.id}"
    assert v.to_pylist()[0]["answer"] == "18" and v.to_polars().shape[0] == 1319 and v.to_hf().num_rows == 1319
    assert v.to_arrow(columns=["id"]).column_names == ["id"]

    before = _objects(s3store)
    again = curate.import_data(str(GSM8K), name="gsm8k", store=Store(str(s3store.root)))
    assert again.id == v.id and again.ref == "gsm8k@v1" and _objects(s3store) == before  # free, and writes nothing

    picked = curate.select("gsm8k", method="random", budget=5, seed=3, name="g5", store=s3store)
    assert (picked.ref, len(picked)) == ("g5@v1", 5)
    d = picked.decisions().to_pylist()
    assert len(d) == 1319 and sum(r["kept"] for r in d) == 5
    assert set(picked.to_arrow().column("id").to_pylist()) == {r["id"] for r in d if r["kept"]}

    info = curate.lineage("g5", store=s3store)
    assert info["ref"] == "g5@v1" and info["op"]["params"]["budget"] == 5
    (parent,) = info["parents"]
    assert (parent["ref"], parent["id"], parent["rows"]) == ("gsm8k@v1", v.id, 1319)

    assert s3store.datasets() == ["g5", "gsm8k"]
    assert s3store.verify() == [] and s3store.gc(min_age_s=0) == []


def test_every_ref_form_and_tags(s3store, s3):
    v1 = curate.save(_rows(2), name="toy", store=s3store)
    v2 = curate.save(_rows(4), name="toy", store=s3store)
    s3store.tag("toy@v1", "golden")
    # A second client, configured in code instead of the environment, sees the same refs with nothing cached.
    other = Store(str(s3store.root), storage_options={"endpoint_url": s3.endpoint})
    for store in (s3store, other):
        assert store.load("toy").id == v2.id
        assert store.load("toy@latest").id == v2.id
        assert store.load("toy@v1").id == v1.id
        assert store.load("toy@v2").id == v2.id
        assert store.load(f"toy@{v1.id[:6]}").id == v1.id
        assert store.load(f"toy@{v1.id}").id == v1.id
        assert store.load("toy@golden").id == v1.id
        assert [v.ref for v in store.versions("toy")] == ["toy@v1", "toy@v2"]
    with pytest.raises(RefError, match="v1..v2"):
        s3store.load("toy@v9")
    with pytest.raises(RefError, match="no version, tag or id prefix"):
        s3store.load("toy@nothing")
    with pytest.raises(RefError, match="unknown dataset 'nope'"):
        s3store.load("nope")
    with pytest.raises(RefError, match="reserved"):
        s3store.tag("toy@v1", "v3")
    other.tag("toy@v2", "golden")  # tags move; the last writer wins
    assert s3store.tags("toy") == {"golden": v2.id} and s3store.load("toy@golden").id == v2.id


def test_verify_reports_a_corrupted_and_a_missing_object(s3store):
    v = curate.save(_rows(50), name="toy", store=s3store)
    d = curate.select("toy", method="random", budget=5, name="t5", store=s3store)
    assert s3store.verify() == []
    f = v.data_files[0]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    (problem,) = s3store.verify("toy")
    assert problem.startswith(str(f)) and "sha256 mismatch" in problem and "toy@v1" in problem
    decisions = d.path / d.manifest["aux_files"][0]["path"]
    decisions.unlink()
    assert s3store.verify("t5") == [f"{decisions}: missing (manifest of t5@v1)"]
    assert len(s3store.verify()) == 2
    with pytest.raises(IntegrityError, match=r"decisions-.*missing.*\(\+1 more\)"):
        s3store.check()


def test_row_cache_on_s3(s3store):
    cache = RowCache(s3store, "features", "k1", {"model": "m"})
    assert cache.load() == {}
    cache.write([{"key": "a", "v": 1.0}, {"key": "b", "v": 2.0}])
    cache.write([{"key": "c", "v": 3.0}])
    again = RowCache(Store(str(s3store.root)), "features", "k1", {"model": "m"})
    assert again.load() == {"a": {"key": "a", "v": 1.0}, "b": {"key": "b", "v": 2.0}, "c": {"key": "c", "v": 3.0}}
    assert again.load(keys=["c"], columns=["v"]) == {"c": {"key": "c", "v": 3.0}}
    names = sorted(p.name for p in cache.dir.iterdir())
    assert names[0] == "settings.json" and len(names) == 3 and all(n.startswith("shard-") for n in names[1:])
    assert json.loads((cache.dir / "settings.json").read_text()) == {"model": "m"}


def test_racing_writers_claim_distinct_numbers(url, monkeypatch):
    # Both writers list refs/ before either claims, so both go for v1: one create must fail and that writer
    # must come back for v2. The barrier makes the race happen every run instead of by luck.
    barrier = threading.Barrier(2)
    first_listing = threading.local()
    listings = []
    real = Store._remote_versions

    def listed_together(self, name):
        out = real(self, name)
        listings.append([e["number"] for e in out])
        if not getattr(first_listing, "done", False):
            first_listing.done = True
            barrier.wait(timeout=30)
        return out

    monkeypatch.setattr(Store, "_remote_versions", listed_together)
    results: dict[int, object] = {}

    def write(i: int) -> None:
        results[i] = curate.save(_rows(3, offset=10 * i), name="race", store=Store(url))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    monkeypatch.undo()
    assert sorted(v.number for v in results.values()) == [1, 2]
    assert sorted(listings[:2]) == [[], []] and [1] in listings[2:]  # the loser re-listed and saw v1 taken
    store = Store(url)
    refs = sorted(p.name for p in (store.dataset_dir("race") / "refs").iterdir())
    assert refs == ["v000001.json", "v000002.json"]
    assert {store.load(f"race@v{n}").id for n in (1, 2)} == {v.id for v in results.values()}


def test_concurrent_threads_and_processes_all_land(url, s3):
    # 2 processes x 3 commits and 2 threads x 3 commits into one dataset: 12 versions, numbers 1..12, no loss.
    script = (
        "import sys, pyarrow as pa, curate\n"
        "from curate.store import Store\n"
        "w = int(sys.argv[1])\n"
        "for j in range(3):\n"
        "    t = pa.table({'id': [f'p{w}-{j}'], 'x': [w * 10 + j]})\n"
        "    print(curate.save(t, name='busy', store=Store(sys.argv[2])).id, flush=True)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(w), url], env=_env(s3), stdout=subprocess.PIPE, text=True)
        for w in range(2)
    ]
    ids: list[str] = []

    def write(w: int) -> None:
        for j in range(3):
            ids.append(curate.save(pa.table({"id": [f"t{w}-{j}"], "x": [w]}), name="busy", store=Store(url)).id)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        ids += out.split()
    store = Store(url)
    versions = store.versions("busy")
    assert len(ids) == len(set(ids)) == 12
    assert [v.number for v in versions] == list(range(1, 13)) and {v.id for v in versions} == set(ids)
    assert store.verify() == []


def test_writer_killed_before_its_manifest_leaves_no_version(url, s3):
    store = Store(url)
    v1 = curate.save(_rows(3), name="toy", store=store)
    script = (
        "import sys, curate\n"
        "from curate.store import Store\n"
        "curate.select('toy', method='random', budget=2, name='toy', store=Store(sys.argv[1]))\n"
    )
    # The hook sleeps after the data and decisions objects are written and before the manifest.
    proc = subprocess.Popen([sys.executable, "-c", script, url], env=_env(s3, CURATE_TEST_COMMIT_PAUSE="60"))
    toy = store.dataset_dir("toy")
    deadline = time.monotonic() + 45
    orphans: list[RemotePath] = []
    while time.monotonic() < deadline and proc.poll() is None:
        orphans = [p for p in toy.glob("*/__decisions__/decisions-*.parquet") if p.parent.parent.name != v1.id]
        if orphans:
            break
        time.sleep(0.1)
    try:
        assert orphans, "the writer never reached its pause"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    vid = orphans[0].parent.parent.name
    fresh = Store(url)
    assert [v.id for v in fresh.versions("toy")] == [v1.id] and fresh.load("toy").id == v1.id
    assert not fresh.has_version("toy", vid) and fresh.verify() == []
    with pytest.raises(RefError, match="no version, tag or id prefix"):
        fresh.load(f"toy@{vid}")
    # The leftovers are listed by gc once old enough, and removed on request.
    assert fresh.gc() == []  # younger than an hour: could be a commit still in flight
    leftovers = fresh.gc(min_age_s=0)
    assert len(leftovers) == 2 and all(f"/toy/{vid}/" in p for p in leftovers)
    assert fresh.gc(remove=True, min_age_s=0) == leftovers and fresh.gc(min_age_s=0) == []
    # The same recipe run again commits cleanly.
    v2 = curate.select("toy@v1", method="random", budget=2, name="toy", store=fresh)
    assert (v2.id, v2.ref, len(v2)) == (vid, "toy@v2", 2) and fresh.verify() == []


def test_cli_with_an_s3_store(url, s3):
    def run(*args: str) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [sys.executable, "-m", "curate.cli", "--store", url, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(s3),
        )
        assert p.returncode == 0, p.stderr
        return p

    assert "gsm8k@v1" in run("import", str(GSM8K), "--name", "gsm8k").stdout
    listing = run("ls").stdout
    assert "gsm8k" in listing and "1319" in listing
    assert "ok" in run("verify").stdout
    assert [v.ref for v in Store(url).versions("gsm8k")] == ["gsm8k@v1"]


def test_missing_bucket_is_one_clear_error(s3):
    store = Store(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p")
    with pytest.raises(CurateError, match="does the bucket exist"):
        curate.save(_rows(1), name="toy", store=store)
    with pytest.raises(RefError, match="unknown dataset 'toy'"):
        store.load("toy")


def test_other_fsspec_roots(tmp_path):
    # memory:// runs the same object-store code path with no server; file:// is just a local store.
    mem = Store(f"memory://curate-{uuid.uuid4().hex[:8]}")
    v = curate.save(_rows(3), name="toy", store=mem)
    assert mem.remote and v.ref == "toy@v1" and mem.load("toy").to_pylist()[2] == {"id": "r2", "x": 2}
    assert mem.verify() == []
    local = Store(f"file://{tmp_path}/st")
    assert not local.remote and local.root == tmp_path / "st"
    lv = curate.save(_rows(1), name="toy", store=local)
    assert lv.path == tmp_path / "st" / "datasets" / "toy" / lv.id and lv.data_files[0].is_file()


def test_gc_on_a_local_store(store):
    v = curate.save(_rows(2), name="toy", store=store)
    stage = store.root / "tmp" / f"toy-{'0' * 16}-deadbeef"  # what a commit killed before its rename leaves
    stage.mkdir(parents=True)
    (stage / "data-00000.parquet").write_bytes(b"partial")
    stray = v.path / "notes.txt"
    stray.write_text("not in the manifest")
    assert store.gc() == []  # too young: could belong to a commit in flight
    assert sorted(store.gc(min_age_s=0)) == sorted([str(stage), str(stray)])
    store.gc(remove=True, min_age_s=0)
    assert not stage.exists() and not stray.exists() and store.verify() == [] and store.load("toy").id == v.id
