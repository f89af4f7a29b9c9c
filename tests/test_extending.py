"""Adding a selector, an export format and an operation is one file (tests/toy_plugin.py) and one registration
call each: the three then run through the Python API, a recipe and the CLI, without an edit to curate's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import curate
from curate.errors import CurateError
from curate.pipeline import run_pipeline
from curate.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    import tests.toy_plugin as plugin

    plugin.install()
    yield plugin
    plugin.uninstall()


def test_python_api(toy, tmp_path):
    store = Store(tmp_path / "store")
    curate.sample("sample-sft", n=6, store=store)
    head = curate.select("sample-sft", method="toy-head", k=3, name="head", store=store)
    assert head.to_pylist()[0]["id"] == curate.load("sample-sft", store=store).to_pylist()[0]["id"]
    assert len(head) == 3 and head.op["params"] == {"k": 3}
    loud = curate.ops.run("shout", "head", suffix="?", store=store)
    assert loud.ref == "head-shout@v1" and loud.parents[0]["id"] == head.id
    first = loud.to_pylist()[0]["messages"][0]["content"]
    assert first.endswith("?") and first[:-1] == first[:-1].upper()
    assert curate.ops.run("shout", "head", suffix="?", store=store).id == loud.id  # a re-run finds it
    r = curate.export("head-shout", format="toy-tsv", out=tmp_path / "tsv", header=True, store=store)
    lines = (tmp_path / "tsv" / "head-shout.tsv").read_text().splitlines()
    assert lines[0] == "id\tuser" and len(lines) == 4
    back = curate.import_data(str(r.out_dir), name="back", format="toy-tsv", store=store)
    assert back.to_pylist()[0]["messages"][0]["content"].endswith("?")
    with pytest.raises(CurateError, match="unknown option"):
        curate.export("head", format="toy-tsv", out=tmp_path / "x", headr=True, store=store)


def test_recipe(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(
        "steps:\n"
        "  - sample: {which: sample-sft, n: 5}\n"
        "  - select: {method: toy-head, k: 2, name: head}\n"
        "  - shout: {suffix: '!!'}\n"
        "  - export: {format: toy-tsv, out: out/tsv, header: true}\n"
    )
    store = Store(tmp_path / "store")
    results = run_pipeline(recipe, store=store)
    assert [r.output for r in results[:3]] == ["sample-sft@v1", "head@v1", "head-shout@v1"]
    assert (tmp_path / "out" / "tsv" / "head-shout.tsv").read_text().count("!!") == 2
    again = run_pipeline(recipe, store=store)
    assert [r.skipped for r in again[:3]] == [True, True, True]
    recipe.write_text("steps:\n  - sample: {which: sample-sft, n: 5}\n  - shout: {sufix: '!'}\n")
    with pytest.raises(CurateError, match=r"steps\[1\] \(shout\): unknown parameter\(s\) sufix"):
        run_pipeline(recipe, store=store)


def test_cli(tmp_path):
    env = {**os.environ, "CURATE_PLUGINS": "tests.toy_plugin", "PYTHONPATH": str(ROOT)}
    store = str(tmp_path / "store")

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "curate", "--store", store, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    assert cli("sample", "sample-sft", "--n", "4").returncode == 0
    r = cli("select", "sample-sft", "--method", "toy-head", "--k", "1", "--name", "head")
    assert r.returncode == 0 and "head@v1" in r.stdout and "kept 1, dropped 3" in r.stdout
    r = cli("shout", "head", "--suffix", "?")
    assert r.returncode == 0 and r.stdout.startswith("head-shout@v1")
    r = cli("shout", "head", "--suffix", "?", "--json")  # every op prints one JSON object with --json
    assert json.loads(r.stdout) == {
        "ref": "head-shout@v1",
        "name": "head-shout",
        "id": json.loads(r.stdout)["id"],
        "rows": 1,
        "stats": {},
    }
    assert "--suffix" in cli("shout", "--help").stdout
    r = cli("export", "head-shout", "--format", "toy-tsv", "--out", "tsv", "--header")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tsv" / "head-shout.tsv").read_text().startswith("id\tuser\n")
    r = cli("shout", "head", "--sufix", "?")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown option --sufix" in r.stderr
