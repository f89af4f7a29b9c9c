"""One battery over every entry of SELECTORS (STYLE.md rule 9), and the dict kept in sync with the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import curate
from curate.selectors import SELECTORS, make_selector


def _sft_rows(n: int, same: bool = False):
    return [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": "Repeat." if same else f"Repeat {i}."},
                {"role": "assistant", "content": "ok ok" if same else f"ok {i} " * (1 + i % 3)},
            ],
        }
        for i in range(n)
    ]


def _rollout_rows(n_prompts: int, same: bool = False):
    rows = []
    for p in range(n_prompts):
        for s in range(4):
            r = 0.5 if same else float((p + s) % 2)
            rows.append(
                {
                    "id": f"p{p}-{s}",
                    "prompt_id": f"p{p}",
                    "sample": s,
                    "completion": f"c{s}",
                    "reward": r,
                    "prompt": [{"role": "user", "content": f"q{p}"}],
                    "answer": "1",
                }
            )
    return rows


def params_for(method: str, model: str) -> dict:
    return {
        "random": {"budget": 2},
        "fisher": {"budget": 2, "model": model},
        "token-clean": {"base": model, "reference": model},
        "variance": {"keep_per_prompt": 2},
        "difficulty": {},
        "dedup": {"level": "near"},
        "decontam": {"against": ("gsm8k",)},  # the built-in benchmark: ships with the package
        "length": {"budget": 2, "model": model},
        "ifd": {"budget": 2, "model": model},
        "perplexity": {"budget": 2, "model": model},
        "kcenter": {"budget": 2, "model": model},
        "facility": {"budget": 2, "model": model},
        "rds": {"budget": 2, "model": model, "query": "rds-in"},  # the battery saves rds-in first: its own query
        "rejection": {"k": 1},
        "pairs": {"mode": "all", "margin": 0.5},
    }[method]


def rows_for(method: str, n: int, same: bool = False):
    if method in ("variance", "difficulty", "rejection", "pairs"):
        return _rollout_rows(n, same)
    return _sft_rows(n, same)


def test_every_method_is_covered_here():
    assert sorted(SELECTORS) == sorted(
        [
            "random",
            "fisher",
            "token-clean",
            "variance",
            "difficulty",
            "dedup",
            "decontam",
            "length",
            "ifd",
            "perplexity",
            "kcenter",
            "facility",
            "rds",
            "rejection",
            "pairs",
        ]
    )


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_battery(method, store, tiny_model_path):
    params = params_for(method, tiny_model_path)
    v = curate.save(rows_for(method, 5), name=f"{method}-in", store=store)
    sel = make_selector(method, **params)
    assert sel.get_params() == {**{k: getattr(sel, k) for k in sel.get_params()}, **params}  # stored unchanged
    assert sel.fit(v) is sel
    assert sel.scores_.shape == (len(v),)
    again = make_selector(method, **params).fit(v)
    np.testing.assert_array_equal(np.nan_to_num(sel.scores_, nan=-7), np.nan_to_num(again.scores_, nan=-7))
    a, b = sel.select(), again.select()
    assert a.order.tolist() == b.order.tolist() and a.reasons == b.reasons
    assert len(a.reasons) == len(v)
    # One row, all ties, empty: no crash, one decision per parent row.
    for tag, rows in (("one", rows_for(method, 1)), ("ties", rows_for(method, 4, same=True)), ("empty", [])):
        if rows:
            src = curate.save(rows, name=f"{method}-{tag}", store=store)
        else:
            src = store.commit(
                curate.as_table(rows_for(method, 1)).slice(0, 0), name=f"{method}-empty", op={"name": "empty"}
            )
        out = curate.select(src.ref, method=method, name=f"{method}-{tag}-out", store=store, **params)
        assert out.decisions().num_rows == len(src)


def test_cli_lists_every_method():
    out = subprocess.run(
        [sys.executable, "-m", "curate.cli", "methods"], capture_output=True, text=True, timeout=120
    ).stdout
    for method, cls in SELECTORS.items():
        assert method in out
        for name in cls.__init__.__code__.co_varnames[
            1 : cls.__init__.__code__.co_argcount + cls.__init__.__code__.co_kwonlyargcount
        ]:
            assert "--" + name.replace("_", "-") in out, (method, name)


@pytest.mark.parametrize(
    "method", ["fisher", "token-clean", "difficulty", "dedup", "ifd", "perplexity", "kcenter", "facility", "rds"]
)
def test_engine_options_reach_the_selector_but_not_the_recipe(method):
    local = make_selector(method)
    ray = make_selector(method, engine="ray", num_workers=2, ray_address="auto", gpus_per_worker=0.5)
    assert ray.engine_kwargs() == {"engine": "ray", "ray_address": "auto", "num_workers": 2, "gpus_per_worker": 0.5}
    assert ray.get_params() == local.get_params()  # same recipe, same version id, whichever engine ran it
    if method != "difficulty":  # the scoring batch size, like the engine, changes how fast, not what
        assert make_selector(method, batch_tokens=256).get_params() == local.get_params()


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_services_are_declared_and_stay_out_of_the_recipe(method):
    sel = make_selector(method)
    before = sel.get_params()
    assert sel.bind() is sel and sel.get_params() == before
    assert isinstance(sel.uses, tuple) and all(isinstance(u, str) for u in sel.uses)
    with pytest.raises(curate.CurateError, match=f"--method {method}: unknown service"):
        sel.bind(not_a_service=print)
    if sel.uses:  # a bound service changes how the work is done, never the recipe
        sel.bind(**dict.fromkeys(sel.uses, print))
        assert sel.get_params() == before and all(sel.service(u) is print for u in sel.uses)


def test_a_selection_of_a_selection_by_the_same_method_replaces_its_columns(store):
    """random on a random selection: the file holds one random_score and one random_rank, the new ones."""
    curate.save(_sft_rows(8), name="rows", store=store)
    first = curate.select("rows", method="random", budget=6, seed=0, name="first", store=store)
    second = curate.select(first.ref, method="random", budget=3, seed=1, name="second", store=store)
    table = second.to_arrow()
    assert table.column_names.count("random_score") == 1 and table.column_names.count("random_rank") == 1
    assert table.column("random_rank").to_pylist() == [1, 2, 3]
    assert set(table.column("id").to_pylist()) <= set(first.to_arrow().column("id").to_pylist())
