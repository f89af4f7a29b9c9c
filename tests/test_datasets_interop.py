"""A version folder is a dataset the Hugging Face ``datasets`` library loads as is (a selection's decisions sit in
a folder it skips); stores written before that still read their decisions; to_hf / to_polars / to_pandas agree."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import pytest

import curate
from curate.store import AUX_DIR, Store, recipe_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "st")


def _load_folder(v: curate.Version, cache: Path) -> datasets.Dataset:
    return datasets.load_dataset(str(v.path), split="train", cache_dir=str(cache))


def test_load_dataset_reads_a_plain_and_a_selected_version_folder(store: Store, tmp_path: Path) -> None:
    pool = curate.sample("sample-sft", n=12, name="pool", store=store)
    picked = curate.select("pool", method="random", budget=5, name="picked", store=store)
    assert (picked.path / AUX_DIR / "decisions.parquet").is_file() and not (picked.path / "decisions.parquet").exists()
    for v in (pool, picked):
        ds = _load_folder(v, tmp_path / "hf-cache")
        assert ds.num_rows == len(v) and ds.column_names == v.columns
        assert ds.to_list() == v.to_pylist()
    assert picked.decisions().num_rows == 12 and store.verify() == []
    assert [f.name for f in picked.data_files] == ["data-00000.parquet"]  # a property; decisions not among them


def _as_old_layout(v: curate.Version, *, aux_files: bool) -> None:
    """Rewrite ``v`` as stores wrote it before: decisions.parquet next to the data, listed in aux_files or not."""
    shutil.move(v.path / AUX_DIR / "decisions.parquet", v.path / "decisions.parquet")
    (v.path / AUX_DIR).rmdir()
    manifest = json.loads((v.path / "manifest.json").read_text())
    if aux_files:
        manifest["aux_files"][0]["path"] = "decisions.parquet"
    else:
        del manifest["aux_files"]
    text = json.dumps(manifest, indent=1)
    (v.path / "manifest.json").write_text(text)
    refs_path = v.store.dataset_dir(v.name) / "refs.json"
    refs = json.loads(refs_path.read_text())
    refs["versions"][0]["manifest_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    refs_path.write_text(json.dumps(refs))


@pytest.mark.parametrize("aux_files", [True, False])
def test_an_old_layout_store_still_reads_its_decisions(tmp_path: Path, aux_files: bool) -> None:
    made = Store(tmp_path / "st")
    curate.sample("sample-sft", n=8, name="pool", store=made)
    v = curate.select("pool", method="random", budget=3, name="picked", store=made)
    expected = v.decisions().to_pylist()
    _as_old_layout(v, aux_files=aux_files)

    old = Store(tmp_path / "st")
    loaded = old.load("picked")
    assert loaded.id == v.id == recipe_id([p["id"] for p in loaded.parents], loaded.op)  # ids do not move
    assert loaded.decisions().to_pylist() == expected and old.verify() == []
    again = curate.select("pool", method="random", budget=3, name="picked", store=old)  # found, not recomputed
    assert again.id == v.id and old.written == 0


def test_to_hf_to_polars_to_pandas_hold_the_same_rows(store: Store) -> None:
    curate.sample("sample-sft", n=6, name="pool", store=store)
    v = curate.select("pool", method="random", budget=4, name="picked", store=store)
    rows = v.to_pylist()
    assert v.to_hf().to_list() == rows
    assert v.to_polars().to_dicts() == rows
    pdf = v.to_pandas()
    assert list(pdf.columns) == v.columns and len(pdf) == 4
    as_python = [{k: (list(x) if k == "messages" else x) for k, x in r.items()} for r in pdf.to_dict("records")]
    assert as_python == rows
    assert v.to_pandas(["id"]).id.tolist() == [r["id"] for r in rows]
