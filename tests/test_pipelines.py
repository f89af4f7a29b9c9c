"""`curate run`: every shipped recipe runs on the embedded default at small size; a re-run is free; a run that
dies mid-step resumes from the cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import curate.generation
import curate.models
from curate.errors import CurateError
from curate.pipeline import load_recipe, run_pipeline
from curate.store import Store

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "pipelines"
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"

# Small sizes: SmolLM2 generates ~20 tokens/s on this CPU, so rollouts and synthesis are kept to a few calls.
# A band of [0, 1] keeps every prompt: the 135M model solves almost nothing, and the steps after need rows.
SMALL = {
    "sft-fisher.yaml": ["rows=16", "budget=4", "steps=1"],
    "sft-token-clean.yaml": ["rows=8", "warmup=6", "ref_steps=1", "steps=1"],
    "rl-curriculum.yaml": [
        "prompts=4",
        "n=2",
        "max_tokens=16",
        "keep_per_prompt=1",
        "grpo_steps=1",
        "steps.2.band=0,1",
        "train.prompts_per_step=2",
        "rollout.backend=hf",  # the pinned ids were made with hf; `auto` picks llamacpp where it is installed
    ],
    "condor.yaml": [
        "limit=2",
        "lenient=true",
        "refine=false",
        "max_tokens=48",
        "budget=1",
        "steps=1",
        "synth.tasks=daily_chat",
        "synth.difficulties=easy,medium",
        "synth.backend=hf",
    ],
    "gsm8k-rl-prep.yaml": [f"source={GSM8K_TEST}", "prompts=3", "n=2", "max_tokens=16", "steps.2.band=0,1"],
}


# The version ids each shipped recipe made (at the sizes above) before the operations layer (#15): a refactor that
# changes a recipe's op dict, or the parents it hashes, would make every user's store recompute.
RECIPE_IDS = json.loads((ROOT / "tests" / "data" / "recipe_ids.json").read_text())


def test_every_shipped_recipe_is_tested():
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted(SMALL)


@pytest.fixture
def no_model_calls(monkeypatch):
    """After this fixture, loading a causal LM or generating fails the test."""

    def forbidden(*a, **k):
        raise AssertionError("a model was called on a re-run")

    monkeypatch.setattr(curate.models, "load_causal_lm", forbidden)
    for cls in curate.generation.GENERATORS.values():
        monkeypatch.setattr(cls, "generate", forbidden)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SMALL))
def test_recipe_runs_then_reruns_free(recipe, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)  # runs/ and exports/ land here
    store = Store(tmp_path / "store")
    first = run_pipeline(RECIPES / recipe, overrides=SMALL[recipe], store=store)
    assert [r.skipped for r in first if r.kind != "export"] == [False] * sum(r.kind != "export" for r in first)
    assert store.verify() == []
    made = [
        [r.kind, None if r.kind in ("train", "export") else f"{store.load(r.output).name}@{store.load(r.output).id}"]
        for r in first
    ]
    assert made == RECIPE_IDS[recipe]
    request.getfixturevalue("no_model_calls")
    t0 = time.perf_counter()
    second = run_pipeline(RECIPES / recipe, overrides=SMALL[recipe], store=store)
    assert time.perf_counter() - t0 < 30
    assert all(r.skipped for r in second if r.kind != "export")
    assert [r.output for r in second] == [r.output for r in first]


def test_a_run_that_dies_mid_rollout_resumes(tmp_path, monkeypatch, tiny_model_path):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "store")
    # rollout.batch_size=4: two generate calls for 8 prompts, so the run can die between them.
    overrides = [
        f"model={tiny_model_path}",
        "prompts=8",
        "n=2",
        "max_tokens=4",
        "steps.2.band=0,1",
        "grpo_steps=1",
        "train.prompts_per_step=2",
        "rollout.batch_size=4",
    ]
    real = curate.generation.HFGenerator.generate
    sent: list[int] = []

    def dies_after_one_batch(self, prompts, **kw):
        if sent:
            raise KeyboardInterrupt("killed")
        sent.append(len(prompts))
        return real(self, prompts, **kw)

    monkeypatch.setattr(curate.generation.HFGenerator, "generate", dies_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(RECIPES / "rl-curriculum.yaml", overrides=overrides, store=store)
    assert "math-rollouts" not in store.datasets()  # the interrupted step committed nothing

    resumed: list[int] = []

    def counting(self, prompts, **kw):
        resumed.append(len(prompts))
        return real(self, prompts, **kw)

    monkeypatch.setattr(curate.generation.HFGenerator, "generate", counting)
    results = run_pipeline(RECIPES / "rl-curriculum.yaml", overrides=overrides, store=store)
    assert results[0].skipped  # the sample step was done
    assert sum(resumed) == 8 - sent[0]  # only the prompts the dead run had not finished
    assert len(store.load("math-rollouts")) == 16


def test_overrides_and_errors(tmp_path):
    recipe = load_recipe(RECIPES / "sft-fisher.yaml", ["budget=7", "select.model=m", "steps.0.n=3"])
    steps = dict((k, p) for k, p in recipe["steps"])
    assert steps["select"]["budget"] == 7 and steps["select"]["model"] == "m" and steps["sample"]["n"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - frobnicate: {}\n")
    with pytest.raises(CurateError, match="unknown step 'frobnicate'"):
        load_recipe(bad)
    with pytest.raises(CurateError, match="no step 9"):
        load_recipe(RECIPES / "sft-fisher.yaml", ["steps.9.x=1"])
    bad.write_text("steps:\n  - sample: {which: sample-sft, bogus: 1}\n")
    with pytest.raises(CurateError, match="unknown parameter"):
        run_pipeline(bad, store=Store(tmp_path / "s"))


def test_a_misspelled_override_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(CurateError, match=r"the recipe has no var 'budgt' \(vars: budget, model, rows, steps\)"):
        load_recipe(RECIPES / "sft-fisher.yaml", ["budgt=3"])
    with pytest.raises(CurateError, match=r"steps\[1\] \(select\): unknown parameter\(s\) budgt"):
        run_pipeline(RECIPES / "sft-fisher.yaml", overrides=["select.budgt=3"], store=Store(tmp_path / "s"))
    assert not (tmp_path / "s" / "datasets").exists()  # refused before the first step
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - sample: {which: sample-sft, n: '${n}'}\n")
    assert load_recipe(recipe, ["n=3"])["steps"][0][1]["n"] == 3  # a var the steps use may come from --set alone
