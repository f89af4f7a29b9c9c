"""`curate compare` on a tiny random model: the output structure, random per seed, token-matched controls, the
summary computed from the runs, resume after a kill, and a re-run that trains nothing."""

from __future__ import annotations

import numpy as np
import pytest

import curate
import curate.train
from curate.comparison import CompareConfig, Run, summarise
from curate.errors import CurateError
from curate.stats import bootstrap_interval, paired_difference
from curate.store import Store

SMALL = {"epochs": 1, "max_steps": 1, "batch_size": 2, "max_len": 96}


@pytest.fixture
def setup(tmp_path, tiny_model_path, one_thread):
    store = Store(tmp_path / "store")
    curate.sample("sample-sft", n=10, name="pool", store=store)
    curate.sample("sample-sft", n=3, seed=7, name="heldout", store=store)
    return store, tiny_model_path


def _patch_sft(monkeypatch, fn):
    """Every compare run trains through the registry entry: count (or kill) its calls there."""
    monkeypatch.setitem(curate.train.TRAINERS, "sft", curate.train.Trainer(curate.train.SFTConfig, fn))


def _run(store, model, name="cmp", **kw):
    params = {"eval_ref": "heldout", "arms": ("length", "random", "random-tokens", "base"), "budget": 3, "seeds": 2}
    return curate.compare("pool", name=name, store=store, model=model, **SMALL, **{**params, **kw})


def test_structure_controls_and_summary(setup):
    store, model = setup
    v = _run(store, model)
    rows = v.to_pylist()
    assert [(r["arm"], r["seed"]) for r in rows] == [
        ("length", 0), ("length", 1), ("random", 0), ("random", 1), ("base", 0), ("base", 1),
        ("random-tokens:length", 0), ("random-tokens:length", 1),
    ]  # fmt: skip
    by = {(r["arm"], r["seed"]): r for r in rows}
    # random draws its own selection per seed; a deterministic selector selects once and trains per seed
    assert by["random", 0]["selection"] != by["random", 1]["selection"]
    assert by["length", 0]["selection"] == by["length", 1]["selection"]
    assert by["random", 0]["rows"] == by["length", 0]["rows"] == 3
    # the token-matched control trains on as many tokens as its arm, within one row
    counts = curate.scoring.response_token_counts(store.load("pool"), model)
    for seed in (0, 1):
        gap = by["length", seed]["trained_tokens"] - by["random-tokens:length", seed]["trained_tokens"]
        assert 0 <= gap <= counts.max()
    # the base model is the same on every seed and trains nothing
    assert by["base", 0]["heldout_loss"] == by["base", 1]["heldout_loss"] and by["base", 0]["trained_tokens"] == 0
    for r in rows:
        assert r["heldout_loss"] == pytest.approx(sum(r["row_sums"]) / sum(r["row_counts"]))
    assert {s["metric"] for s in v.manifest["stats"]["summary"]} == {"heldout_loss"}  # no --reward: no accuracy
    assert all(r["accuracy"] is None for r in rows)
    summary = {s["arm"]: s for s in v.manifest["stats"]["summary"]}
    assert set(summary) == {"length", "random", "base", "random-tokens:length"}
    assert "vs_random" not in summary["random"] and "vs_random" in summary["length"]
    sums = np.array([by["length", s]["row_sums"] for s in (0, 1)])
    cnts = np.array([by["length", s]["row_counts"] for s in (0, 1)])
    assert summary["length"]["mean"] == pytest.approx(
        np.mean([a.sum() / b.sum() for a, b in zip(sums, cnts, strict=True)])
    )
    assert v.parents[0]["name"] == "pool" and v.parents[1]["name"] == "heldout"
    out = curate.ops.OPS["compare"].as_json(v)  # what `curate compare ... --json` prints
    times = {k: out["runs"][0].pop(k) for k in ("select_s", "train_s", "score_s")}
    assert out["runs"][0] == {
        "arm": "length", "seed": 0, "rows": 3, "trained_tokens": by["length", 0]["trained_tokens"],
        "heldout_loss": by["length", 0]["heldout_loss"],
    }  # fmt: skip
    # each run's wall times: the selection's (from its manifest), its training and its scoring
    assert times["select_s"] == pytest.approx(
        sum(store.load(by["length", 0]["selection"]).manifest["timings"].values()), abs=1e-3
    )
    assert times["train_s"] > 0 and times["score_s"] > 0
    assert by["base", 0]["train_s"] == 0.0 and by["base", 0]["select_s"] is None
    assert out["summary"] == v.manifest["stats"]["summary"] and set(out["summary"][1]) == {
        "metric", "arm", "mean", "ci_low", "ci_high", "vs_random"
    } - ({"vs_random"} if out["summary"][1]["arm"] == "random" else set())  # fmt: skip


def test_rerun_trains_nothing_and_a_killed_compare_resumes(setup, monkeypatch):
    store, model = setup
    real_sft, calls = curate.train.sft, []

    def counting(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the third training run
        return real_sft(*a, **k)

    _patch_sft(monkeypatch, counting)
    with pytest.raises(KeyboardInterrupt):
        _run(store, model, arms=("length", "random"))
    assert len(calls) == 3
    calls.clear()
    _patch_sft(monkeypatch, lambda *a, **k: calls.append(1) or real_sft(*a, **k))
    v = _run(store, model, arms=("length", "random"))
    assert len(calls) == 2  # the two finished runs came from the cache: only the killed one and the last trained
    calls.clear()
    assert _run(store, model, arms=("length", "random")).id == v.id and calls == []
    again = _run(store, model, name="cmp-again", arms=("length", "random"))  # a new name: every run is cached
    assert calls == [] and again.to_pylist()[0]["heldout_loss"] == v.to_pylist()[0]["heldout_loss"]
    more = _run(store, model, name="cmp-3", arms=("length", "random"), seeds=3)  # adding a seed trains only it
    assert len(calls) == 2 and len(more) == 6


def test_summary_golden():
    runs = [
        Run("random", 0, None, 10, np.array([1.0, 2.0, 3.0]), np.array([1, 2, 3])),
        Run("random", 1, None, 10, np.array([2.0, 2.0, 3.0]), np.array([1, 2, 3])),
        Run("fisher", 0, None, 12, np.array([0.5, 1.0, 1.5]), np.array([1, 2, 3])),
        Run("fisher", 1, None, 12, np.array([0.5, 1.0, 3.0]), np.array([1, 2, 3])),
    ]
    out = {s["arm"]: s for s in summarise(runs, n_boot=500, seed=3) if s["metric"] == "heldout_loss"}
    assert out["random"]["mean"] == pytest.approx((6 / 6 + 7 / 6) / 2)
    assert out["fisher"]["mean"] == pytest.approx((3 / 6 + 4.5 / 6) / 2)
    s = lambda arm: np.array([r.sums for r in runs if r.arm == arm])  # noqa: E731
    c = np.array([[1, 2, 3], [1, 2, 3]])
    ci = bootstrap_interval(s("fisher"), c, n_boot=500, seed=3)
    assert (out["fisher"]["ci_low"], out["fisher"]["ci_high"]) == (ci.low, ci.high)
    d = paired_difference(s("fisher"), c, s("random"), c, n_boot=500, seed=3)
    assert out["fisher"]["vs_random"] == {"diff": d.value, "ci_low": d.low, "ci_high": d.high}
    assert d.value == pytest.approx(out["fisher"]["mean"] - out["random"]["mean"])


def test_bad_settings_are_one_line():
    with pytest.raises(CurateError, match="--eval HELDOUT is required"):
        CompareConfig()
    with pytest.raises(CurateError, match="one of --budget and --budget-tokens, not both"):
        CompareConfig(eval_ref="h", budget=8, budget_tokens=100)
    # a row budget of 32 unless a token budget is given
    assert CompareConfig(eval_ref="h").budget == 32
    assert CompareConfig(eval_ref="h", budget_tokens=100).budget is None
    with pytest.raises(CurateError, match="lists an arm twice"):
        CompareConfig(eval_ref="h", arms=("random", "random"))
    with pytest.raises(CurateError, match="'lam' is not|is not one of --arms"):
        CompareConfig(eval_ref="h", arms=("random",), arm_options=("fisher.lam=2",))
    assert CompareConfig(eval_ref="h", arms=("fisher",), arm_options=("fisher.lam=2",)).arm_params() == {
        "fisher": {"lam": 2}
    }
    # a key as its flag is spelled (dashes) names the same option
    sets = ("token-clean.reference-from=warmup", "token-clean.ref_lr=5e-5")
    assert CompareConfig(eval_ref="h", arms=("token-clean",), arm_options=sets).arm_params() == {
        "token-clean": {"reference_from": "warmup", "ref_lr": 5e-5}
    }
    with pytest.raises(CurateError, match="compare --set fisher: unknown option --nope"):
        CompareConfig(eval_ref="h", arms=("fisher",), arm_options=("fisher.nope=1",))
    with pytest.raises(CurateError, match="the base arm selects nothing"):
        CompareConfig(eval_ref="h", arms=("base",), arm_options=("base.seed=1",))
    with pytest.raises(CurateError, match="--lam: cannot read 'x' as float"):
        CompareConfig(eval_ref="h", arms=("fisher",), arm_options=("fisher.lam=x",))


def test_length_selector_keeps_the_most_trained_tokens(tmp_path, tiny_model_path):
    from curate.scoring import response_token_counts

    words = [3, 9, 1, 9, 5]
    rows = [
        {"id": f"r{i}", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a " * w}]}
        for i, w in enumerate(words)
    ]
    store = Store(tmp_path / "s")
    v = curate.save(rows, name="pool", store=store)
    counts = response_token_counts(v, tiny_model_path)
    longest = curate.select(v, method="length", budget=3, model=tiny_model_path, name="long", store=store)
    assert [r["id"] for r in longest.to_pylist()] == ["r1", "r3", "r4"]  # ties (r1, r3) keep input order
    assert longest.to_pylist()[0]["length_score"] == counts[1]
    short = curate.select(v, method="length", budget=2, shortest=True, model=tiny_model_path, store=store)
    assert [r["id"] for r in short.to_pylist()] == ["r2", "r0"]
    by_tokens = curate.select(
        v, method="length", budget_tokens=int(counts[1] + counts[3]), model=tiny_model_path, store=store
    )
    assert [r["id"] for r in by_tokens.to_pylist()] == ["r1", "r3"]


def even_length(completion: str, answer: object, **row: object) -> float:
    """A reward for the test: 1 when the completion has an even number of characters."""
    return float(len(completion) % 2 == 0)


def test_accuracy_with_a_reward(setup, monkeypatch):
    store, model = setup
    with pytest.raises(CurateError, match="heldout@v1: --reward scores completions against 'answer'"):
        _run(store, model, arms=("random",), reward="exact")
    curate.sample("sample-math", n=3, seed=7, name="heldout", store=store)  # heldout@v2: prompt, answer, messages
    v = _run(store, model, arms=("random", "base"), reward="tests.test_compare:even_length", max_new_tokens=5)
    rows = v.to_pylist()
    for r in rows:
        assert len(r["row_rewards"]) == 3 and set(r["row_rewards"]) <= {0.0, 1.0}
        assert r["accuracy"] == pytest.approx(sum(x >= 0.5 for x in r["row_rewards"]) / 3)
    acc = {s["arm"]: s for s in v.manifest["stats"]["summary"] if s["metric"] == "accuracy"}
    assert set(acc) == {"random", "base"} and "vs_random" in acc["base"]
    base = [r for r in rows if r["arm"] == "base"]
    assert base[0]["row_rewards"] == base[1]["row_rewards"]  # greedy: the same model answers the same
    # the NLL of every run was cached by the first compare: asking for accuracy again trains nothing new
    calls = []
    real = curate.train.sft
    _patch_sft(monkeypatch, lambda *a, **k: calls.append(1) or real(*a, **k))
    again = _run(
        store, model, name="cmp-b", arms=("random", "base"), reward="tests.test_compare:even_length", max_new_tokens=5
    )
    assert calls == [] and [r["accuracy"] for r in again.to_pylist()] == [r["accuracy"] for r in rows]
    with pytest.raises(CurateError, match="reward"):
        CompareConfig(eval_ref="h", reward="nosuch")


def test_rl_compares_prompt_selections_by_heldout_reward(tmp_path, tiny_model_path, one_thread):
    store = Store(tmp_path / "store")
    curate.sample("sample-math", n=6, name="prompts", store=store)
    curate.sample("sample-math", n=3, seed=9, name="heldout", store=store)
    params = {"eval_ref": "heldout", "arms": ("random", "base"), "budget": 2, "seeds": 2, "trainer": "grpo"}
    with pytest.raises(CurateError, match="--trainer grpo scores held-out reward: give --reward"):
        curate.compare("prompts", name="rl", store=store, model=tiny_model_path, **params)
    kw = {"reward": "tests.test_compare:even_length", "steps": 1, "group": 2, "batch_size": 2, "max_new_tokens": 4}
    v = curate.compare("prompts", name="rl", store=store, model=tiny_model_path, **params, **kw)
    rows = v.to_pylist()
    assert [(r["arm"], r["seed"]) for r in rows] == [("random", 0), ("random", 1), ("base", 0), ("base", 1)]
    for r in rows:
        assert r["heldout_loss"] is None and r["row_sums"] is None  # RL runs are not scored by NLL
        assert r["heldout_reward"] == pytest.approx(sum(r["row_rewards"]) / 3)
    summary = v.manifest["stats"]["summary"]
    assert {s["metric"] for s in summary} == {"heldout_reward"}
    assert [s["arm"] for s in summary] == ["random", "base"] and "vs_random" in summary[1]
    with pytest.raises(CurateError, match="unknown --trainer 'ppo'"):
        CompareConfig(eval_ref="h", trainer="ppo")
