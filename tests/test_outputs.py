"""Outputs stay outside the store, never clobber a folder unasked, and leave no temporaries behind (issue 14, §4).

Every refusal is checked as a user meets it: the real CLI in a subprocess, exit code 2, one stderr line, no
traceback, and every file under the store byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import curate
from curate.errors import CurateError
from curate.outputs import TMP_MARK, check_out, writing_store_cache
from curate.pipeline import run_pipeline
from curate.store import Store
from tests.cli_helpers import CLI, refused, run_cli
from tests.test_import import snapshot


def _rows(n: int = 4) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": f"what is {i} + 1?"},
                {"role": "assistant", "content": f"{i + 1}"},
            ],
            "prompt": [{"role": "user", "content": f"what is {i} + 1?"}],
            "answer": str(i + 1),
        }
        for i in range(n)
    ]


run = run_cli


@pytest.fixture
def toy(tmp_path):
    store = Store(tmp_path / "store")
    version = curate.save(_rows(), name="toy", store=store)
    return store, version


def tree(root: Path) -> list[str]:
    """Every path under ``root``, folders too: a refused command must not even leave an empty folder."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARK in p.name or p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------------ inside the store
@pytest.mark.parametrize("form", ["committed-file", "store-root", "datasets-folder"])
def test_export_into_the_store_is_refused(toy, form):
    store, v = toy
    root = store.root
    # The three forms: over a committed data file, into the root, into the datasets folder.
    path, fmt = {
        "committed-file": (root / "datasets" / "toy" / v.id / "data-00000.parquet", "parquet"),
        "store-root": (root, "jsonl"),
        "datasets-folder": (root / "datasets", "verl-sft"),
    }[form]
    before, paths = snapshot(root), tree(root)
    refused(run(root, "export", "toy", "--format", fmt, "--out", str(path)), "inside the store", str(root.resolve()))
    assert snapshot(root) == before and tree(root) == paths
    if form == "committed-file":  # --overwrite is about folders outside the store: it changes nothing here
        refused(run(root, "export", "toy", "--format", fmt, "--out", str(path), "--overwrite"), "inside the store")
        assert snapshot(root) == before and tree(root) == paths


def test_a_path_that_only_resolves_into_the_store_is_refused(toy, tmp_path):
    store, v = toy
    root = store.root
    (tmp_path / "link").symlink_to(root / "datasets" / "toy")
    before, paths = snapshot(root), tree(root)
    for out, fmt in (
        (tmp_path / "link" / "x.jsonl", "jsonl"),
        (tmp_path / "link" / v.id, "parquet"),
        (tmp_path / "elsewhere" / ".." / "store" / "tmp", "trl-sft"),
    ):
        with pytest.raises(CurateError, match="inside the store"):
            curate.export(v, format=fmt, out=out, store=store, overwrite=True)
    assert snapshot(root) == before and tree(root) == paths


def test_train_sft_into_the_store_is_refused(toy, tiny_model_path):
    store, _ = toy
    root = store.root
    before, paths = snapshot(root), tree(root)
    p = run(
        root, "train", "sft", "toy", "--model", tiny_model_path, "--max-steps", "1", "--out", str(root / "datasets")
    )
    refused(p, "--out", "inside the store")
    assert snapshot(root) == before and tree(root) == paths


def test_train_grpo_and_report_into_the_store_are_refused(toy):
    store, _ = toy
    root = store.root
    before, paths = snapshot(root), tree(root)
    refused(run(root, "train", "grpo", "toy", "--model", "nosuch", "--out", str(root)), "inside the store")
    refused(run(root, "report", "toy", "--out", str(root / "datasets" / "toy" / "r.html")), "inside the store")
    assert snapshot(root) == before and tree(root) == paths


def test_a_folder_that_holds_the_store_is_refused_only_where_the_output_replaces_it(toy, tmp_path):
    store, _ = toy
    # A plain export beside the store is fine (the default store .curate sits in the folder people export to).
    assert check_out(tmp_path, store) == tmp_path
    with pytest.raises(CurateError, match="holds the store"):
        check_out(tmp_path, store, replaces=True)


def test_only_curates_own_cache_writer_may_train_into_the_store_cache(toy):
    store, _ = toy
    stage = store.root / "cache" / "token-clean-models" / ".k.partial"
    with pytest.raises(CurateError, match="inside the store"):
        check_out(stage, store)
    with writing_store_cache():  # token-clean's reference model: a cache entry, trained by curate itself
        assert check_out(stage, store) == stage
        with pytest.raises(CurateError, match="inside the store"):
            check_out(store.root / "datasets", store)
    with pytest.raises(CurateError, match="inside the store"):
        check_out(stage, store)


def test_a_remote_store_is_not_compared_with_local_paths():
    assert check_out("exports/x", Store("memory://bucket/curate")) == Path("exports/x")


# ------------------------------------------------------------------------------------------------ overwriting
def test_a_non_empty_folder_needs_overwrite(toy, tmp_path):
    store, _ = toy
    root = store.root
    out = tmp_path / "exports"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    before = snapshot(root)
    p = run(root, "export", "toy", "--format", "trl-sft", "--out", str(out))
    refused(p, str(out), "--overwrite")
    assert sorted(x.name for x in out.iterdir()) == ["notes.txt"]
    assert snapshot(root) == before
    ok = run(root, "export", "toy", "--format", "trl-sft", "--out", str(out), "--overwrite")
    assert ok.returncode == 0, ok.stderr
    want = ["curate.json", "notes.txt", "toy.chat_template.jinja", "toy.jsonl"]
    assert sorted(x.name for x in out.iterdir()) == want
    assert (out / "notes.txt").read_text() == "keep me"
    assert [json.loads(line)["id"] for line in (out / "toy.jsonl").read_text().splitlines()] == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]


def test_an_existing_file_needs_overwrite(toy, tmp_path):
    store, _ = toy
    target = tmp_path / "mine.jsonl"
    target.write_text("precious\n")
    p = run(store.root, "export", "toy", "--format", "jsonl", "--out", str(target))
    refused(p, str(target), "--overwrite")
    assert target.read_text() == "precious\n"
    assert run(store.root, "export", "toy", "--format", "jsonl", "--out", str(target), "--overwrite").returncode == 0
    assert len(target.read_text().splitlines()) == 4


def test_the_same_export_again_needs_no_overwrite_but_an_edited_or_other_one_does(toy, tmp_path):
    store, v = toy
    out = tmp_path / "verl"
    first = curate.export(v, format="verl", out=out, store=store)
    again = curate.export(v, format="verl", out=out, store=store)  # the folder holds exactly this export
    assert again.files[0].read_bytes() == first.files[0].read_bytes()
    with pytest.raises(CurateError, match="--overwrite"):
        curate.export(v, format="verl", out=out, split="test", store=store)  # other options, other export
    other = curate.save(_rows(2), name="toy", store=store)
    with pytest.raises(CurateError, match="--overwrite"):
        curate.export(other, format="verl", out=out, store=store)
    (out / "toy.parquet").write_bytes(b"edited by hand")
    with pytest.raises(CurateError, match="--overwrite"):
        curate.export(v, format="verl", out=out, store=store)
    assert (out / "toy.parquet").read_bytes() == b"edited by hand"
    curate.export(other, format="verl", out=out, store=store, overwrite=True)
    assert json.loads((out / "curate.json").read_text())["version_id"] == other.id


def test_a_recipe_re_runs_and_replaces_its_own_export_but_not_a_foreign_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "store")
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps:\n  - import: {source: rows.jsonl, name: toy}\n  - export: {format: trl-sft, out: exports/toy}\n"
    )
    first = run_pipeline(recipe, store=store)
    again = run_pipeline(recipe, store=store)
    assert [r.output for r in again] == [r.output for r in first]
    # A changed recipe (another version) replaces the export it wrote before.
    changed = run_pipeline(recipe, store=store, overrides=["import.data_source=other"])
    meta = json.loads((tmp_path / "exports" / "toy" / "curate.json").read_text())
    assert meta["version_id"] == store.load(changed[0].output).id != store.load(first[0].output).id
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    with pytest.raises(CurateError, match="--overwrite"):
        run_pipeline(recipe, store=store, overrides=["export.out=foreign"])
    assert sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------------------ under a file
def test_out_under_an_existing_file_is_one_line(toy, tmp_path):
    store, _ = toy
    root = store.root
    f = tmp_path / "somefile.txt"
    f.write_text("x")
    before = snapshot(root)
    for args in (
        ["export", "toy", "--format", "jsonl", "--out", str(f / "sub" / "toy.jsonl")],
        ["train", "sft", "toy", "--model", "nosuch", "--out", str(f / "run")],
        ["report", "toy", "--out", str(f / "r.html")],
    ):
        refused(run(root, *args), str(f), "not a folder")
    assert f.read_text() == "x" and snapshot(root) == before


# ------------------------------------------------------------------------------------------------ temporaries
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # reaped: a zombie would still count as alive
    return p.pid


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_the_next_export_removes_temporaries_a_dead_export_left(toy, tmp_path, fmt):
    store, v = toy
    out = tmp_path / "exp"
    curate.export(v, format=fmt, out=out, store=store)
    # Named as a killed export leaves them: a data file's temporary inside the folder; for hf, the staged folder
    # beside it. A live writer's temporary (this test's own pid) must survive.
    dead, live = _dead_pid(), os.getpid()
    if fmt == "hf":
        stale, busy = tmp_path / f".exp{TMP_MARK}{dead}-0123456789ab", tmp_path / f".exp{TMP_MARK}{live}-0123456789ab"
        stale.mkdir()
        (stale / "data-00000-of-00001.arrow").write_bytes(b"half")
    else:
        stale, busy = (
            out / f".toy.jsonl{TMP_MARK}{dead}-0123456789ab",
            out / f".toy.jsonl{TMP_MARK}{live}-0123456789ab",
        )
        stale.write_text("half a row")
    busy.write_text("being written")
    # No --overwrite: the folder holds this same export, plus temporaries.
    p = run(store.root, "export", "toy", "--format", fmt, "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert not stale.exists() and busy.read_text() == "being written"
    busy.unlink()
    assert [p for p in tmp_path.rglob("*") if TMP_MARK in p.name] == []


def test_an_export_killed_mid_write_leaves_no_temporary_after_the_next_run(tmp_path):
    store = Store(tmp_path / "store")
    # ~100 MB of jsonl: the write takes long enough to be killed in the middle of it.
    big = [
        {
            "id": str(i),
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"a{i} " * 8000}],
        }
        for i in range(2000)
    ]
    curate.save(big, name="big", store=store)
    out = tmp_path / "exp"
    proc = subprocess.Popen(
        [*CLI, "--store", str(store.root), "export", "big", "--format", "jsonl", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not _temps(out):
        time.sleep(0.005)
    assert proc.poll() is None, "export finished before it could be killed: make the version bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _temps(out) and not (out / "big.jsonl").exists()  # killed mid-write: only its temporary is there
    before = snapshot(store.root)
    p = run(store.root, "export", "big", "--format", "jsonl", "--out", str(out))
    assert p.returncode == 0, p.stderr  # nothing but the dead export's temporary was there: no --overwrite needed
    assert _temps(out) == []
    assert sorted(x.name for x in out.iterdir()) == ["big.jsonl", "curate.json"]
    with open(out / "big.jsonl") as f:
        assert sum(1 for _ in f) == 2000
    assert snapshot(store.root) == before
