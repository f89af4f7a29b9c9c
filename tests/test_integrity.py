"""Trust in what the store holds: cache shards are checked on read, store contents are data (never paths), damaged
files are one line naming them, manifests are tamper-evident, and `curate verify` / `curate gc` cover all of it.

Each test damages a real store the way a bit flip, a killed process or an attacker would, then runs the real
commands (in a subprocess where the exit code and stderr are the point).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import curate
from curate.cache import RowCache
from curate.errors import IntegrityError, RefError
from curate.rollouts import RolloutConfig, rollout
from curate.selectors import run_selector
from curate.store import SHARD_RE, Store, sha256_file
from tests.cli_helpers import refused, run_cli
from tests.test_fisher import conversations
from tests.test_rollout import _prompts

cli = run_cli


def one_line(p: subprocess.CompletedProcess) -> str:
    """The single stderr line of a command that failed cleanly (no traceback)."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    return lines[0]


def _rows(n: int) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(n)], "x": list(range(n))})


def shards(root: Path, kind: str) -> list[Path]:
    return sorted((root / "cache" / kind).rglob("shard-*.parquet"))


def flip(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rewrite(path: Path, change) -> None:
    """Replace a shard by valid Parquet holding other values, under the same name (what an editor would do)."""
    table = pq.read_table(path)
    pq.write_table(change(table), path, compression="zstd")


def same_version(a: curate.Version, b: curate.Version) -> None:
    """Same id and byte-identical data and decisions files: the runs committed the same thing."""
    assert a.id == b.id
    assert [f["sha256"] for f in a.manifest["files"]] == [f["sha256"] for f in b.manifest["files"]]
    assert [f["sha256"] for f in a.manifest["aux_files"]] == [f["sha256"] for f in b.manifest["aux_files"]]
    assert a.to_arrow().equals(b.to_arrow())


# ---------------------------------------------------------------------------------------------- cache shards


def test_shard_names_are_the_sha256_of_their_bytes(store):
    cache = RowCache(store, "features", "k1", {"model": "m"})
    cache.write([{"key": "a", "v": 1.0}])
    cache.write([{"key": "b", "v": 2.0}])
    (a, b) = shards(store.root, "features")
    for shard in (a, b):
        assert SHARD_RE.fullmatch(shard.name).group(1) == sha256_file(shard)
    assert not list(cache.dir.glob(".*.tmp"))
    assert cache.load() == {"a": {"key": "a", "v": 1.0}, "b": {"key": "b", "v": 2.0}}


@pytest.fixture
def fisher_clean(tmp_path, tiny_model_path):
    """The fisher pick of 4 of 10 conversations on a store whose cache was never touched."""
    store = Store(tmp_path / "clean")
    curate.save(conversations(10), name="chats", store=store)
    return run_selector("chats", method="fisher", name="picks", store=store, model=tiny_model_path, budget=4)


def _warm_fisher(root: Path, model: str) -> Path:
    store = Store(root)
    curate.save(conversations(10), name="chats", store=store)
    run_selector("chats", method="fisher", name="warm", store=store, model=model, budget=3)
    (shard,) = shards(root, "features")
    # The pool's flat feature file would be reused without reading a shard: drop it so the next run reads them.
    shutil.rmtree(root / "cache" / "features-flat")
    return shard


def test_flipped_byte_in_a_features_shard_is_recomputed_by_select(tmp_path, tiny_model_path, fisher_clean):
    root = tmp_path / "store"
    shard = _warm_fisher(root, tiny_model_path)
    flip(shard)
    p = cli(
        root, "select", "chats", "--method", "fisher", "--model", tiny_model_path, "--budget", "4", "--name", "picks"
    )
    assert p.returncode == 0, p.stderr
    warning = one_line(p)
    assert warning.startswith(f"warning: cache shard {shard} fails its hash check") and "recomputed" in warning
    same_version(Store(root).load("picks"), fisher_clean)
    # The recomputed rows are the same bytes, so they hash to the same name: publishing them replaced the bad shard.
    assert shards(root, "features") == [shard] and Store(root).verify_cache() == []


def test_edited_features_shard_valid_parquet_is_recomputed(tmp_path, tiny_model_path, fisher_clean, capsys):
    root = tmp_path / "store"
    shard = _warm_fisher(root, tiny_model_path)

    def triple(t: pa.Table) -> pa.Table:
        values = pa.array([[3 * x for x in row] for row in t.column("values").to_pylist()], pa.list_(pa.float32()))
        return t.set_column(t.column_names.index("values"), "values", values)

    rewrite(shard, triple)
    assert pq.read_table(shard).num_rows == 10  # still a valid shard of the same rows: only its values lie
    capsys.readouterr()
    picks = run_selector("chats", method="fisher", name="picks", store=Store(root), model=tiny_model_path, budget=4)
    same_version(picks, fisher_clean)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: cache shard {shard} fails its hash check")


@pytest.mark.parametrize("damage", ["inject", "truncate", "unhashed-name"])
def test_damaged_rollouts_shard_never_reaches_a_version(tmp_path, tiny_model_path, damage):
    config = RolloutConfig(n=2, model=tiny_model_path, max_tokens=6, batch_size=8)  # one shard of 10 completions
    clean_store = Store(tmp_path / "clean")
    clean = rollout(curate.save(_prompts(), name="toy", store=clean_store), config, store=clean_store, name="r")

    store = Store(tmp_path / "store")
    prompts = curate.save(_prompts(), name="toy", store=store)
    rollout(prompts, config, store=store, name="first")
    (shard,) = shards(store.root, "rollouts")
    if damage == "inject":

        def inject(t: pa.Table) -> pa.Table:
            assert t.num_rows == 10  # every completion of the run
            injected = pc.binary_join_element_wise(t.column("completion"), "INJECTED", "")
            return t.set_column(t.column_names.index("completion"), "completion", injected)

        rewrite(shard, inject)
    elif damage == "truncate":
        truncate(shard)
    else:  # what a curate from before content-addressed shards wrote: valid, but nothing to check it against
        shard = shard.rename(shard.with_name("shard-0123456789abcdef0123456789abcdef.parquet"))
    again = rollout(prompts, config, store=store, name="r")
    same_version(again, clean)
    assert not any("INJECTED" in c for c in again.to_arrow().column("completion").to_pylist())
    if damage == "unhashed-name":
        (problem,) = store.verify_cache()
        assert problem.startswith(f"{shard}: cache shard has no content hash in its name")
    else:  # the recomputed rows hash to the damaged shard's name: publishing them replaced it
        assert shards(store.root, "rollouts") == [shard] and store.verify_cache() == []


def test_verify_names_bad_shards_and_gc_removes_them_and_old_staging(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    curate.save(_rows(3), name="toy", store=store)
    cache = RowCache(store, "features", "k1", {"model": "m"})
    cache.write([{"key": "a", "v": 1.0}])
    cache.write([{"key": "b", "v": 2.0}])
    good, bad = sorted(shards(root, "features"), key=lambda p: pq.read_table(p).column("key")[0].as_py())
    flip(bad)
    # What killed processes leave: a commit's staging folder and a cache write's temp file.
    staging = root / "tmp" / "toy-0123456789abcdef-deadbeef"
    staging.mkdir(parents=True)
    (staging / "data-00000.parquet").write_bytes(b"half")
    temp = cache.dir / ".shard-0badc0de.parquet.tmp"
    temp.write_bytes(b"half")

    p = cli(root, "verify")
    assert p.returncode == 1 and one_line(p).startswith(f"{bad}: cache shard fails its hash check")
    assert cli(root, "verify", "toy").returncode == 0  # one version: caches only with --cache
    assert cli(root, "verify", "toy", "--cache").returncode == 1

    listed = cli(root, "gc")  # default min age: the fresh staging folder may belong to a running commit
    assert listed.returncode == 0 and str(bad) in listed.stdout and str(staging) not in listed.stdout
    assert bad.exists()
    removed = cli(root, "gc", "--remove", "--min-age", "0")
    assert removed.returncode == 0, removed.stderr
    for gone in (bad, staging, temp):
        assert str(gone) in removed.stdout and not gone.exists()
    assert good.exists() and cache.load() == {"a": {"key": "a", "v": 1.0}}
    assert cli(root, "verify").returncode == 0
    assert store.gc(min_age_s=0) == []


def test_gc_keeps_young_staging_and_refuses_negative_age(store):
    curate.save(_rows(2), name="toy", store=store)
    young = store.root / "tmp" / "toy-0123456789abcdef-cafecafe"
    young.mkdir(parents=True)
    assert store.gc(remove=True) == [] and young.exists()
    old = time.time() - 7200
    os.utime(young, (old, old))
    assert store.gc(remove=True) == [str(young)] and not young.exists()
    with pytest.raises(curate.CurateError, match="min-age"):
        store.gc(min_age_s=-1)


def test_gc_never_follows_links_nor_takes_what_no_commit_made(tmp_path):
    """gc deletes: a planted link, a folder that is not a store, or a version that lost its manifest must never
    lead it to delete anything but leftovers of curate's own writes."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (victim / "sub-0123456789abcdef-deadbeef").mkdir()  # a name gc would take if it were under the store's tmp/
    root = tmp_path / "store"
    store = Store(root)
    v = curate.save(_rows(3), name="toy", store=store)
    (root / "datasets" / "toy" / "aaaaaaaaaaaaaaaa").symlink_to(victim)
    (root / "datasets" / "evil").symlink_to(victim)
    (root / "cache" / "features").mkdir(parents=True)
    (root / "cache" / "features" / "k").symlink_to(victim)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp" / "toy-0123456789abcdef-cafecafe").symlink_to(victim)
    (root / "tmp" / "notes").mkdir()  # not a staging name: not ours to delete
    # A registered local version without its manifest was damaged, not killed: its data stays for a person to see.
    (v.path / "manifest.json").unlink()
    data = v.path / "data-00000.parquet"
    old = time.time() - 7200
    for p in (victim / "precious.txt", victim / "sub-0123456789abcdef-deadbeef", data, root / "tmp" / "notes"):
        os.utime(p, (old, old))

    assert store.gc(remove=True, min_age_s=0) == []
    assert (victim / "precious.txt").read_text() == "keep me" and (victim / "sub-0123456789abcdef-deadbeef").exists()
    assert data.exists() and (root / "tmp" / "notes").exists()
    # A --store that is not a store at all: a home folder's own tmp/ is not staging.
    home = tmp_path / "home"
    (home / "tmp" / "project").mkdir(parents=True)
    os.utime(home / "tmp" / "project", (old, old))
    assert Store(home).gc(remove=True, min_age_s=0) == [] and (home / "tmp" / "project").exists()


# ---------------------------------------------------------------------------------------------- paths and ids


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def test_manifest_path_outside_the_version_folder_is_refused(tmp_path):
    root = tmp_path / "store"
    v = curate.save(_rows(3), name="toy", store=Store(root))
    # A Parquet file planted outside the store, and a manifest that points at it with a matching hash.
    outside = tmp_path / "etc" / "hostname"
    outside.parent.mkdir()
    pq.write_table(pa.table({"id": ["evil"], "x": [666]}), outside)
    manifest = v.path / "manifest.json"

    def point_outside(m):
        m["files"][0].update(path="../../../etc/hostname", rows=1, sha256=sha256_file(outside))
        m["rows"] = 1

    _edit_json(manifest, point_outside)
    p = cli(root, "verify")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert all(line.startswith(f"{manifest}: ") for line in p.stderr.splitlines())
    for args in (
        ["show", "toy"],
        ["ls", "toy"],
        ["export", "toy", "--format", "jsonl", "--out", str(tmp_path / "o.jsonl")],
    ):
        p = cli(root, *args)
        assert p.returncode == 2 and "evil" not in p.stdout
        line = one_line(p)
        assert str(manifest) in line and "'../../../etc/hostname' is not a plain file name" in line


def test_refs_id_that_is_a_path_is_refused(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    curate.save(_rows(2), name="toy", store=store)
    other = curate.save(_rows(5), name="other", store=store)
    refs = root / "datasets" / "toy" / "refs.json"
    _edit_json(refs, lambda r: r["versions"][0].update(id=f"../other/{other.id}"))
    p = cli(root, "show", "toy")
    assert p.returncode == 2 and "r4" not in p.stdout
    assert one_line(p).startswith(f"error: {refs}: version id '../other/{other.id}' is not 16 hex digits")
    p = cli(root, "verify")
    assert p.returncode == 1 and one_line(p).startswith(f"{refs}: version id '../other/")


@pytest.mark.parametrize("which", ["manifest", "refs"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_manifest_or_refs_is_one_line_everywhere(tmp_path, which, damage):
    root = tmp_path / "store"
    v = curate.save(_rows(4), name="toy", store=Store(root))
    path = v.path / "manifest.json" if which == "manifest" else root / "datasets" / "toy" / "refs.json"
    flip(path, at=0) if damage == "flip" else truncate(path)  # byte 0 is the opening brace
    for args in (
        ["ls"],
        ["ls", "toy"],
        ["show", "toy"],
        ["select", "toy", "--method", "random", "--budget", "1", "--name", "x"],
    ):
        p = cli(root, *args)
        assert p.returncode == 2, (args, p.stderr)
        line = one_line(p)
        assert line.startswith(f"error: {path}: damaged, not valid JSON"), line
    p = cli(root, "verify")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"{path}: damaged, not valid JSON" in p.stderr


def test_flipped_byte_inside_a_manifest_string_is_caught_by_verify(store):
    v = curate.save(_rows(4), name="toy", store=store)
    manifest = v.path / "manifest.json"
    text = manifest.read_text()
    at = text.index('"created": "') + len('"created": "') + 3  # a digit of the year: still valid JSON
    flip(manifest, at=at)
    assert store.load("toy").id == v.id  # readers still work: only verify can tell
    (problem,) = store.verify()
    assert problem.startswith(f"{manifest}: sha256 mismatch with the one recorded when toy@v1 was registered")


@pytest.mark.parametrize("keep_recorded_hash", [True, False])
@pytest.mark.parametrize("field", ["rows", "op", "parents"])
def test_edited_manifest_is_caught_by_verify(store, field, keep_recorded_hash):
    base = curate.save(_rows(10), name="base", store=store)
    other = curate.save(_rows(20), name="base", store=store)
    picked = curate.select("base@v1", method="random", budget=4, seed=0, name="picked", store=store)
    assert store.verify() == []
    manifest = picked.path / "manifest.json"
    edit = {
        "rows": lambda m: m.update(rows=5),
        "op": lambda m: m["op"]["params"].update(budget=5),
        "parents": lambda m: m["parents"][0].update(id=other.id),
    }[field]
    _edit_json(manifest, edit)
    if not keep_recorded_hash:  # a store from before refs recorded manifest hashes: the manifest alone must tell
        _edit_json(manifest.parent.parent / "refs.json", lambda r: r["versions"][0].pop("manifest_sha256", None))
    problems = store.verify()
    assert problems and all(p.startswith(str(manifest)) for p in problems), problems
    assert any(("hashes to" if field != "rows" else "says 5 rows but its files hold 4") in p for p in problems)
    assert base.id != other.id


def test_deleted_refs_json_is_reported_by_verify(store):
    v1 = curate.save(_rows(2), name="toy", store=store)
    v2 = curate.save(_rows(3), name="toy", store=store)
    refs = store.root / "datasets" / "toy" / "refs.json"
    _edit_json(refs, lambda r: r["versions"].pop())
    (problem,) = store.verify()
    assert problem.startswith(f"{v2.path}: committed but not registered in {refs}")
    refs.unlink()
    (problem,) = store.verify()
    assert problem.startswith(f"{refs}: missing, but") and v1.id in problem and v2.id in problem
    assert store.datasets() == []


def test_unparseable_data_file_is_one_line_naming_it(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    curate.save(_rows(10), name="toy", store=store)
    picked = curate.select("toy", method="random", budget=3, name="picked", store=store)
    data = picked.data_files[0]
    data.write_bytes(b"not parquet at all")
    p = cli(root, "show", "picked")
    assert p.returncode == 2
    line = one_line(p)
    assert line.startswith(f"error: {data}: cannot be read as Parquet (") and line.endswith("; run `curate verify`")
    decisions = picked.path / picked.manifest["aux_files"][0]["path"]
    truncate(decisions)
    with pytest.raises(IntegrityError, match=rf"^{decisions}: cannot be read as Parquet .*; run `curate verify`$"):
        picked.decisions()
    p = cli(root, "verify", "picked")
    assert p.returncode == 1 and {line.split(":")[0] for line in p.stderr.splitlines()} == {str(data), str(decisions)}


def test_names_and_tags_with_a_trailing_newline_are_refused(store):
    with pytest.raises(RefError, match="invalid dataset name"):
        curate.save(_rows(1), name="toy\n", store=store)
    assert not store.root.exists()
    curate.save(_rows(1), name="toy", store=store)
    with pytest.raises(RefError, match="invalid tag"):
        store.tag("toy@v1", "gold\n")
    with pytest.raises(RefError, match="invalid tag"):
        store.tag("toy@v1", "v1\n")
    with pytest.raises(RefError):
        store.load("toy@v1\n")
    assert store.tags("toy") == {}


# ---------------------------------------------------------------------------------------------- on object storage


@pytest.fixture(scope="module")
def s3_url():
    """A store on a local S3 API (moto), as in tests/test_s3_store.py; skipped without s3fs and moto."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    import s3fs

    from tests.s3_server import S3Server

    with S3Server() as server, pytest.MonkeyPatch.context() as mp:
        for k, v in server.env.items():
            mp.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        server.make_bucket("integrity")
        yield "s3://integrity/store"
        s3fs.S3FileSystem.clear_instance_cache()


def test_the_same_checks_on_object_storage(s3_url):
    store = Store(s3_url)
    v = curate.save(_rows(3), name="toy", store=store)
    other = curate.save(_rows(5), name="other", store=store)
    ref_file = store.root / "datasets" / "toy" / "refs" / "v000001.json"
    assert json.loads(ref_file.read_text())["manifest_sha256"] == v.manifest_sha256
    assert store.verify() == []

    # A cache shard edited in place is skipped on read and named by verify; gc removes it.
    cache = RowCache(store, "features", "k1")
    cache.write([{"key": "a", "v": 1.0}])
    (shard,) = [p for p in cache.dir.iterdir() if p.name.startswith("shard-")]
    assert SHARD_RE.fullmatch(shard.name).group(1) == hashlib.sha256(shard.read_bytes()).hexdigest()
    shard.write_bytes(pq_bytes(pa.table({"key": ["a"], "v": [9.0]})))
    assert RowCache(Store(s3_url), "features", "k1").load() == {}
    (problem,) = Store(s3_url).verify()
    assert problem.startswith(f"{shard}: cache shard fails its hash check")
    assert Store(s3_url).gc(remove=True) == [str(shard)] and not shard.exists()

    # An edited manifest: caught by the hash its ref object recorded and by its recipe.
    manifest = v.path / "manifest.json"
    m = json.loads(manifest.read_text())
    m["op"]["data"] = "0" * 64
    manifest.write_text(json.dumps(m))
    problems = Store(s3_url).verify()
    assert len(problems) == 2 and all(p.startswith(f"{manifest}: ") for p in problems)

    # A tag object pointing outside its dataset is refused with one line naming it.
    tag = store.root / "datasets" / "toy" / "tags" / "evil.json"
    tag.write_text(json.dumps({"tag": "evil", "id": f"../other/{other.id}"}))
    with pytest.raises(IntegrityError, match=rf"^{tag}: tag 'evil' points at '../other/"):
        Store(s3_url).load("toy@evil")


def pq_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_show_diff_and_log_print_data_as_it_is_never_as_markup(tmp_path):
    """Values and column names holding rich markup ("[/]", "[bold]") are data: printed as they are, no crash."""
    root = tmp_path / "store"
    store = Store(root)
    curate.save(pa.table({"id": ["a"], "x": ["[/] q"]}), name="toy", store=store)
    curate.save(pa.table({"id": ["a"], "[/]": ["[bold]b"]}), name="toy", store=store)
    shown = cli(root, "show", "toy@v1")
    assert shown.returncode == 0 and '"[/] q"' in shown.stdout, shown.stderr
    diffed = cli(root, "diff", "toy@v1", "toy@v2")
    assert diffed.returncode == 0 and "[/]" in diffed.stdout, diffed.stderr


def test_a_failed_tag_changes_nothing_and_verify_names_symlinks(tmp_path):
    root = tmp_path / "store"
    store = Store(root)
    v = curate.save(_rows(3), name="toy", store=store)
    refs = (root / "datasets" / "toy" / "refs.json").read_bytes()
    (v.path / "manifest.json").write_text("{")
    refused(cli(root, "tag", "toy@v1", "t1"), "manifest.json")
    assert (root / "datasets" / "toy" / "refs.json").read_bytes() == refs
    outside = tmp_path / "outside.parquet"
    outside.write_bytes(b"x")
    (root / "datasets" / "toy" / "planted").symlink_to(outside)
    assert any(line.endswith("planted: a symlink in the store") for line in store.verify())


def test_verify_and_gc_cover_flat_feature_files(tmp_path):
    import numpy as np

    from curate.scoring import flat_features

    root = tmp_path / "store"
    store = Store(root)
    curate.save(_rows(2), name="toy", store=store)
    folder = Path(store.cache_dir("features-flat", "k1"))
    folder.mkdir(parents=True)
    arrays = [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((1, 2), dtype=np.float32)]
    good = flat_features(arrays, path=folder / "flat-good.bin").path
    bad = flat_features(arrays, path=folder / "flat-bad.bin").path
    orphan_record = flat_features(arrays, path=folder / "flat-gone.bin").path.with_suffix(".json")
    assert store.verify() == []
    (folder / "flat-gone.bin").unlink()
    flip(bad, at=3)
    recordless = folder / "flat-young.bin"  # as a write that has renamed its file but not yet written the record
    recordless.write_bytes(b"\0" * 8)

    problems = store.verify()
    assert problems == [
        f"{bad}: flat feature file fails its sha256 check (ignored and rebuilt; `curate gc --remove` deletes it)",
        f"{recordless}: flat feature file has no .json record (ignored and rebuilt; `curate gc --remove` deletes it)",
        f"{orphan_record}: flat feature file is missing (its .json record is left) (ignored and rebuilt; "
        "`curate gc --remove` deletes it)",
    ]
    p = cli(root, "verify")
    assert p.returncode == 1 and f"{bad}: flat feature file fails its sha256 check" in p.stderr + p.stdout
    assert store.gc(remove=True) == [] and bad.exists()  # all young: a write may still be in flight
    old = time.time() - 7200
    for f in (bad, bad.with_suffix(".json"), orphan_record):
        os.utime(f, (old, old))
    removed = store.gc(remove=True)
    assert sorted(removed) == sorted(map(str, [bad, bad.with_suffix(".json"), orphan_record]))
    assert not bad.exists() and not bad.with_suffix(".json").exists() and not orphan_record.exists()
    assert recordless.exists() and good.exists() and good.with_suffix(".json").exists()
    assert store.gc(remove=True, min_age_s=0) == [str(recordless)] and store.verify() == []


def test_a_linked_flat_record_is_never_read(tmp_path):
    import numpy as np

    from curate.scoring import _read_flat, flat_features

    store = Store(tmp_path / "store")
    folder = Path(store.cache_dir("features-flat", "k1"))
    folder.mkdir(parents=True)
    path = flat_features([np.ones((2, 2), dtype=np.float32)], path=folder / "flat-a.bin").path
    record = path.with_suffix(".json")
    record.unlink()
    record.symlink_to("/dev/zero")  # reading it would never end
    assert store.verify() == [
        f"{path}: flat feature file has a .json record that is a symlink (ignored and rebuilt; "
        "`curate gc --remove` deletes it)"
    ]
    assert _read_flat(path, 1) is None  # rebuilt rather than trusted
    assert store.gc(remove=True, min_age_s=0) == [str(path)] and record.is_symlink()
