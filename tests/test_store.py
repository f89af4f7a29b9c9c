"""The store: ref forms, recipe ids, lineage, verify, diff, tags, name validation, atomic commits."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

import curate
from curate.errors import CurateError, IntegrityError, RefError
from curate.store import Store, recipe_id


def _rows(n, offset=0):
    return pa.table({"id": [f"r{i}" for i in range(offset, offset + n)], "x": list(range(offset, offset + n))})


def test_save_load_roundtrip_and_same_recipe_same_id(store):
    v1 = curate.save(_rows(3), name="toy", store=store)
    assert (v1.ref, len(v1)) == ("toy@v1", 3)
    assert v1.to_arrow().column("x").to_pylist() == [0, 1, 2]
    assert v1.to_polars().shape == (3, 2)
    assert v1.to_hf().num_rows == 3
    again = curate.save(_rows(3), name="toy", store=store)
    assert again.id == v1.id and again.ref == "toy@v1"
    assert [v.id for v in store.versions("toy")] == [v1.id]


def test_every_ref_form(store):
    v1 = curate.save(_rows(2), name="toy", store=store)
    v2 = curate.save(_rows(4), name="toy", store=store)
    store.tag("toy@v1", "golden")
    assert store.load("toy").id == v2.id
    assert store.load("toy@latest").id == v2.id
    assert store.load("toy@v1").id == v1.id
    assert store.load("toy@v2").id == v2.id
    assert store.load(f"toy@{v1.id[:6]}").id == v1.id
    assert store.load(f"toy@{v1.id}").id == v1.id
    assert store.load("toy@golden").id == v1.id
    with pytest.raises(RefError, match="v1..v2"):
        store.load("toy@v9")
    with pytest.raises(RefError, match="no version, tag or id prefix"):
        store.load("toy@nothing")
    with pytest.raises(RefError, match="unknown dataset 'nope'"):
        store.load("nope")
    with pytest.raises(RefError, match="reserved"):
        store.tag("toy@v1", "v3")


@pytest.mark.parametrize("bad", ["a/b", "../up", "..", "a@b", "", "x" * 200, "/abs", "a\\b"])
def test_bad_names_are_refused(store, bad):
    with pytest.raises(RefError):
        curate.save(_rows(1), name=bad, store=store)
    assert not store.root.exists()


def test_recipe_id_depends_on_parents_and_op():
    a = recipe_id(["p1"], {"name": "select", "k": 1})
    assert a == recipe_id(["p1"], {"k": 1, "name": "select"})  # key order does not matter
    assert a != recipe_id(["p2"], {"name": "select", "k": 1})
    assert a != recipe_id(["p1"], {"name": "select", "k": 2})


def test_lineage_across_two_generations(store):
    base = curate.save(_rows(10), name="base", store=store)
    mid = curate.select(base.ref, method="random", budget=6, seed=1, name="mid", store=store)
    top = curate.select(mid.ref, method="random", fraction=0.5, seed=2, name="top", store=store)
    info = curate.lineage(top.ref, store=store)
    assert info["ref"] == "top@v1" and info["rows"] == 3
    assert info["op"]["method"] == "random" and info["op"]["params"]["fraction"] == 0.5
    (p,) = info["parents"]
    assert p["id"] == mid.id and p["op"]["params"]["budget"] == 6
    (pp,) = p["parents"]
    assert pp["id"] == base.id and pp["parents"] == []
    # decisions: one row per parent row, a reason for every dropped one
    d = top.decisions().to_pylist()
    assert len(d) == 6 and sum(r["kept"] for r in d) == 3
    assert {r["reason"] for r in d if not r["kept"]} == {"below_budget"}
    assert all(r["reason"] == "" for r in d if r["kept"])


def test_verify_catches_a_flipped_byte(store):
    v = curate.save(_rows(50), name="toy", store=store)
    assert store.verify() == []
    f = v.data_files[0]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    problems = store.verify("toy")
    assert len(problems) == 1 and str(f) in problems[0] and "sha256 mismatch" in problems[0]
    with pytest.raises(IntegrityError, match="data-00000.parquet"):
        store.check()


def test_diff_rows_and_columns(store):
    a = curate.save(pa.table({"id": ["a", "b", "c"], "x": [1, 2, 3], "y": ["p", "q", "r"]}), name="d", store=store)
    b = curate.save(pa.table({"id": ["b", "c", "d"], "x": [2, 30, 4], "z": [1.0, 2.0, 3.0]}), name="d", store=store)
    d = curate.diff(a.ref, b.ref, store=store)
    assert d["added"] == ["d"] and d["removed"] == ["a"] and d["changed"] == ["c"]
    assert d["columns_added"] == ["z"] and d["columns_removed"] == ["y"] and d["columns_retyped"] == {}


def test_manifest_records_hashes_schema_env(store):
    v = curate.save(_rows(5), name="toy", op={"note": "hand-made"}, store=store)
    m = json.loads((v.path / "manifest.json").read_text())
    assert m["id"] == v.id and m["rows"] == 5 and m["op"]["note"] == "hand-made"
    assert [c["name"] for c in m["schema"]] == ["id", "x"]
    assert len(m["files"][0]["sha256"]) == 64 and m["env"]["python"]
    assert not any((store.root / "tmp").iterdir())  # staging cleaned by the rename


def test_failed_commit_leaves_no_version(store, monkeypatch):
    import pyarrow.parquet as pq

    calls = {"n": 0}
    real = pq.write_table

    def boom(*a, **k):
        calls["n"] += 1
        real(*a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        curate.save(_rows(3), name="toy", store=store)
    assert calls["n"] == 1
    assert store.datasets() == [] and not any((store.root / "tmp").iterdir())


def test_store_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_STORE", str(tmp_path / "s"))
    assert Store().root == tmp_path / "s"


def test_a_table_with_a_column_twice_is_refused_and_nothing_is_saved(store):
    """Parquet writes such a file and cannot read it back: the commit refuses it first."""
    table = pa.table({"id": ["a"], "x": [1]}).append_column("x", pa.array([2]))
    with pytest.raises(CurateError, match="bad: the table has column\\(s\\) x more than once; nothing was saved"):
        store.commit(table, name="bad", op={"name": "test"})
    with pytest.raises(CurateError):
        store.load("bad")
