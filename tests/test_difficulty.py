"""Intermediate-difficulty selection and curricula (curate/selectors/difficulty.py), and the online sampler of the GRPO
trainer (curate/train/curriculum.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from curate import save
from curate.errors import CurateError
from curate.selectors import SELECTORS, run_selector
from curate.selectors.difficulty import DifficultySelector, stage_labels
from curate.train.curriculum import OnlineDifficultySampler


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    # The lead wires SELECTORS; until then (and harmlessly after) the tests register the method themselves.
    monkeypatch.setitem(SELECTORS, "difficulty", DifficultySelector)


# Golden set: raw pass rates A 1, B .75, C .25, D 0, E .5, F .5, G .875 (G has 8 rollouts, the rest 4).
GOLDEN = {
    "A": [1, 1, 1, 1],
    "B": [1, 1, 1, 0],
    "C": [1, 0, 0, 0],
    "D": [0, 0, 0, 0],
    "E": [1, 1, 0, 0],
    "F": [0, 1, 0, 1],
    "G": [1, 1, 1, 0, 1, 1, 1, 1],
}


def rollout_rows(groups: dict[str, list[float]]) -> list[dict]:
    rows = []
    for level, (pid, rewards) in enumerate(groups.items(), start=1):
        for s, r in enumerate(rewards):
            rows.append(
                {
                    "id": f"{pid}-{s}",
                    "prompt_id": pid,
                    "sample": s,
                    "prompt": [{"role": "user", "content": f"question {pid}"}],
                    "answer": "1",
                    "completion": f"completion {pid} {s}",
                    "reward": float(r),
                    "completion_tokens": 3,
                    "finish_reason": "stop",
                    "level": level,
                    "pass_rate": -1.0,  # what `curate rollout` joins per row; the selector must replace it
                }
            )
    return rows


@pytest.fixture
def golden(store):
    save(rollout_rows(GOLDEN), name="ro", store=store)
    return store


def select(store, **params):
    return run_selector("ro", method="difficulty", name="cur", store=store, **params)


def ids(v):
    return [r["id"] for r in v.to_pylist()]


# ---------------------------------------------------------------------------------------------- offline selector
def test_default_band_exact_pass_rates_and_easy_to_hard(golden):
    v = select(golden, stages=2)
    assert ids(v) == ["G", "B", "E", "F", "C"]  # p descending; E before F (tie, input order)
    rows = {r["id"]: r for r in v.to_pylist()}
    assert [rows[i]["pass_rate"] for i in ids(v)] == [0.875, 0.75, 0.5, 0.5, 0.25]
    assert [rows[i]["n_rollouts"] for i in ids(v)] == [8, 4, 4, 4, 4]
    assert [rows[i]["learnability"] for i in ids(v)] == [0.109375, 0.1875, 0.25, 0.25, 0.1875]
    assert [rows[i]["stage"] for i in ids(v)] == [1, 1, 1, 2, 2]
    assert [rows[i]["difficulty_rank"] for i in ids(v)] == [1, 2, 3, 4, 5]
    for col in ("sample", "completion", "reward", "completion_tokens", "finish_reason", "prompt_id"):
        assert col not in v.columns
    assert rows["B"]["level"] == 2 and rows["B"]["prompt"] == [{"role": "user", "content": "question B"}]
    assert v.columns.count("pass_rate") == 1

    dec = v.decisions().to_pylist()
    assert len(dec) == 32  # one decision per rollout row
    by_prompt = {}
    for d in dec:
        by_prompt.setdefault(d["prompt_id"], set()).add((d["kept"], d["reason"]))
    assert by_prompt == {
        "A": {(False, "too_easy")},
        "D": {(False, "too_hard")},
        **{p: {(True, "")} for p in "BCEFG"},
    }
    st = v.manifest["stats"]
    assert (st["kept"], st["dropped"], st["reasons"]) == (5, 2, {"too_easy": 1, "too_hard": 1})
    assert st["stage_sizes"] == [3, 2]


def test_other_orders(golden):
    assert ids(select(golden, order="hard-to-easy")) == ["C", "E", "F", "B", "G"]
    assert ids(select(golden, order="learnability")) == ["E", "F", "B", "C", "G"]
    v = select(golden, order="learnability", stages=3)
    assert [r["stage"] for r in v.to_pylist()] == [1, 1, 2, 2, 3]


def test_explicit_band_is_inclusive_and_gives_reasons(golden):
    v = select(golden, band=(0.3, 0.8))
    assert ids(v) == ["B", "E", "F"]
    reasons = {d["prompt_id"]: d["reason"] for d in v.decisions().to_pylist()}
    assert reasons == {"A": "too_easy", "G": "too_easy", "B": "", "E": "", "F": "", "C": "too_hard", "D": "too_hard"}
    assert ids(select(golden, band=(0.25, 0.75))) == ["B", "E", "F", "C"]  # both edges kept
    assert ids(select(golden, band=(0.0, 1.0))) == ["A", "G", "B", "E", "F", "C", "D"]


def test_beta_prior_arithmetic(golden):
    v = select(golden, prior=(1.0, 1.0))
    rows = {r["id"]: r["pass_rate"] for r in v.to_pylist()}
    # (successes + a) / (n + a + b); the default band still reads the raw rate, so A and D go.
    assert rows == pytest.approx({"G": 8 / 10, "B": 4 / 6, "E": 3 / 6, "F": 3 / 6, "C": 2 / 6})
    v = select(golden, prior=(2.0, 1.0), band=(0.0, 1.0))
    rows = {r["id"]: r["pass_rate"] for r in v.to_pylist()}
    assert (
        rows["A"] == pytest.approx(6 / 7) and rows["D"] == pytest.approx(2 / 7) and rows["G"] == pytest.approx(9 / 11)
    )
    # With a prior an explicit band reads the posterior mean: G's 0.8 sits on the inclusive edge.
    v = select(golden, prior=(1.0, 1.0), band=(0.2, 0.8))
    assert ids(v) == ["G", "B", "E", "F", "C"]
    reasons = {d["prompt_id"]: d["reason"] for d in v.decisions().to_pylist()}
    assert reasons["A"] == "too_easy" and reasons["D"] == "too_hard"  # 5/6 and 1/6


def test_budget_in_score_order_then_curriculum_order(golden):
    v = select(golden, score="learnability", budget=2)
    assert ids(v) == ["E", "F"]
    reasons = {d["prompt_id"]: d["reason"] for d in v.decisions().to_pylist()}
    assert [reasons[p] for p in "ABCDEFG"] == [
        "too_easy", "below_budget", "below_budget", "too_hard", "", "", "below_budget",
    ]  # fmt: skip
    assert [r["difficulty_score"] for r in v.to_pylist()] == [0.25, 0.25]
    assert ids(select(golden, score="pass-rate", budget=2, order="hard-to-easy")) == ["B", "G"]
    assert ids(select(golden, score="learnability", fraction=0.3)) == ["E", "F"]  # round(0.3 * 7 prompts) = 2
    assert ids(select(golden, budget=100)) == ["G", "B", "E", "F", "C"]


def test_graded_rewards_pass_above_one_half_like_curate_rollout(store):
    save(rollout_rows({"g": [0.5, 1.2, 0.1, 1.0]}), name="ro", store=store)
    v = select(store)
    assert v.to_pylist()[0]["pass_rate"] == 0.5  # 1.2 and 1.0 pass; 0.5 is not > 0.5


def test_deterministic_rerun_is_same_version(golden):
    assert select(golden, stages=2).id == select(golden, stages=2).id
    a = DifficultySelector(order="learnability").fit(golden.load("ro"))
    assert a.identity() == {}  # a rollouts version: no model ran, no model identity in the id
    assert len(a.scores_) == 32


def test_stage_labels():
    assert stage_labels(7, 3).tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert stage_labels(2, 3).tolist() == [1, 2]
    assert stage_labels(0, 2).tolist() == []


def test_bad_input_and_parameters(store):
    save(rollout_rows({"ok": [1, 0], "bad": [1, float("nan")]}), name="ro", store=store)
    with pytest.raises(CurateError, match=r"prompt_id 'bad' \(row 3\): field 'reward' is nan"):
        select(store)
    assert "cur" not in store.datasets()
    save([{"id": "x", "prompt_id": "p", "completion": "c"}], name="noreward", store=store)
    with pytest.raises(CurateError, match="has prompt_id but no reward"):
        run_selector("noreward", method="difficulty", name="cur", store=store)
    save([{"id": "x", "text": "hello"}], name="plain", store=store)
    with pytest.raises(CurateError, match="needs a rollouts version .* or a prompts version"):
        run_selector("plain", method="difficulty", name="cur", store=store)
    save(rollout_rows(GOLDEN), name="ro", store=store)
    for params, flag in [
        ({"score": "x"}, "--score"),
        ({"order": "random"}, "--order"),
        ({"band": (0.8, 0.2)}, "--band"),
        ({"band": (0.2,)}, "--band"),
        ({"prior": (-1.0, 1.0)}, "--prior"),
        ({"stages": 0}, "--stages"),
        ({"budget": 2, "fraction": 0.5}, "budget"),
    ]:
        with pytest.raises(CurateError, match=flag):
            select(store, **params)
    assert "cur" not in store.datasets()


# ---------------------------------------------------------------------------------------------- prompts versions
TOY_REWARD = """
calls = [0]


def reward(completion, answer, **row):
    # "yes" always passes, "no" never; "mid" alternates 1, 0 over successive calls. curate rollout scores a prompt's
    # n=2 samples back to back and every prompt makes an even number of calls, so each "mid" prompt gets one of each.
    calls[0] += 1
    if answer == "mid":
        return float(calls[0] % 2)
    return 1.0 if answer == "yes" else 0.0
"""


@pytest.fixture
def prompts(store, tmp_path, monkeypatch):
    (tmp_path / "toy_difficulty_reward.py").write_text(TOY_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    answers = ["yes", "mid", "no", "mid", "yes", "no"]
    rows = [
        {"id": f"q{i}", "prompt": [{"role": "user", "content": f"question {i}"}], "answer": a, "level": i % 3 + 1}
        for i, a in enumerate(answers)
    ]
    save(rows, name="prompts", store=store)
    return store


@pytest.fixture
def generators(monkeypatch):
    """Every generator the rollouts build, so a test can count the completions each produced."""
    from curate.rollouts import RolloutConfig

    made, original = [], RolloutConfig.make_generator

    def spy(self):
        made.append(original(self))
        return made[-1]

    monkeypatch.setattr(RolloutConfig, "make_generator", spy)
    return made


def test_prompts_version_runs_rollouts_through_the_cache(prompts, generators, tiny_model_path):
    # A tiny random model, n=2 and 8 new tokens: the reward ignores the text, only the plumbing is under test.
    params = dict(model=tiny_model_path, backend="hf", n=2, max_tokens=8, reward="toy_difficulty_reward:reward")
    v = run_selector("prompts", method="difficulty", name="cur", store=prompts, **params)
    assert ids(v) == ["q1", "q3"]
    assert [r["pass_rate"] for r in v.to_pylist()] == [0.5, 0.5]
    assert [r["n_rollouts"] for r in v.to_pylist()] == [2, 2]
    assert [r["level"] for r in v.to_pylist()] == [2, 1]
    reasons = {d["id"]: d["reason"] for d in v.decisions().to_pylist()}
    assert reasons == {"q0": "too_easy", "q1": "", "q2": "too_hard", "q3": "", "q4": "too_easy", "q5": "too_hard"}
    assert sum(g.completions_generated for g in generators) == 12
    from curate.models import resolve

    assert v.op["generator"]["model"] == resolve(tiny_model_path).identity  # the model is part of the version id
    assert v.op["rollout"]["n"] == 2 and v.manifest["stats"]["ran_rollouts"] is True

    # Another band is another recipe, so the selector runs again, but every completion comes from the cache.
    before = len(generators)
    t0 = time.perf_counter()
    v2 = run_selector("prompts", method="difficulty", name="cur-all", store=prompts, band=(0.0, 1.0), **params)
    assert ids(v2) == ["q0", "q4", "q1", "q3", "q2", "q5"]
    assert len(generators) > before and sum(g.completions_generated for g in generators[before:]) == 0
    assert time.perf_counter() - t0 < 30

    # A different model is a different version id, before anything runs.
    other = DifficultySelector(**{**params, "model": "smollm2-135m"})
    other.check_input(prompts.load("prompts"))
    mine = DifficultySelector(**params)
    mine.check_input(prompts.load("prompts"))
    assert other.identity()["generator"]["model"] != mine.identity()["generator"]["model"]


# ---------------------------------------------------------------------------------------------- online sampler
def test_sampler_prefers_intermediate_prompts():
    s = OnlineDifficultySampler(["zero", "mid", "one", "new"], n_per_step=1, seed=0)
    for _ in range(10):
        s.update("zero", [0.0] * 8)
        s.update("mid", [1.0, 0.0] * 4)
        s.update("one", [1.0] * 8)
    assert s.pass_rate("mid") == 0.5 and s.pass_rate("zero") == pytest.approx(1 / 82)
    assert s.pass_rate("new") == 0.5  # unseen: the Beta(1, 1) prior mean
    counts = dict.fromkeys(s.prompt_ids, 0)
    for _ in range(4000):
        counts[s.sample()[0]] += 1
    # Weights .25, .25 and max(1/82 * 81/82, .01) = .012 each for zero and one: ~48% / 48% / 2.3% / 2.3%.
    assert counts["mid"] > 8 * counts["zero"] and counts["mid"] > 8 * counts["one"]
    assert counts["zero"] > 0 and counts["one"] > 0  # the floor keeps them alive
    assert abs(counts["mid"] - counts["new"]) < 0.15 * counts["mid"]
    picked = s.sample(3)
    assert len(picked) == 3 and len(set(picked)) == 3
    assert sorted(s.sample(10)) == sorted(s.prompt_ids)  # k > #prompts: each prompt once


def test_greso_skips_prompts_that_stay_solved():
    ids_ = ["solved", "a", "b", "c"]

    def draws(skip: bool) -> int:
        # floor=0.25 makes every weight equal, so only the GRESO skip can change how often "solved" comes up.
        s = OnlineDifficultySampler(ids_, n_per_step=1, seed=1, floor=0.25, skip_zero_variance=skip)
        for _ in range(10):
            s.update("solved", [1.0] * 8)
        return sum(s.sample()[0] == "solved" for _ in range(3000))

    without, with_skip = draws(False), draws(True)
    assert 600 < without < 900  # ~1/4 of 3000
    assert with_skip < 40  # skipped with probability 1 - max(0.5 ** 10, 0.01) = 0.99: ~0.25% of draws


def test_greso_skip_probability_and_streaks():
    s = OnlineDifficultySampler(["e", "h", "m"], n_per_step=1, skip_zero_variance=True, p_easy=0.5, p_hard=0.8)
    for _ in range(3):
        s.update("e", [1.0, 1.0])
        s.update("h", [0.0, 0.0])
    s.update("m", [1.0, 0.0])
    assert s.skip_probability().tolist() == pytest.approx([1 - 0.5**3, 1 - 0.8**3, 0.0])
    s.update("e", [1.0, 0.0])  # a mixed group breaks the streak
    assert s.skip_probability()[0] == 0.0
    for _ in range(40):
        s.update("h", [0.0])
    assert s.skip_probability()[1] == pytest.approx(0.99)  # the 0.01 floor on p ** count
    off = OnlineDifficultySampler(["e"], n_per_step=1)
    off.update("e", [1.0])
    assert off.skip_probability().tolist() == [0.0]
    everyone_solved = OnlineDifficultySampler(["x", "y"], n_per_step=2, skip_zero_variance=True, p_easy=0.0)
    everyone_solved.update("x", [1.0])
    everyone_solved.update("y", [1.0])
    assert sorted(everyone_solved.sample()) == ["x", "y"]  # all skipped: filled back up to k


def test_adaptive_skip_probabilities():
    s = OnlineDifficultySampler(["a", "b"], n_per_step=1, skip_zero_variance=True, adaptive=True)
    s.update("a", [1.0, 1.0])
    s.update("b", [1.0, 0.0])
    s.sample()  # easy share 1/2 >= 1/12 -> p_easy - .01; hard share 0 < 1/6 -> p_hard + .01
    assert (s.p_easy, s.p_hard) == pytest.approx((0.49, 0.51))
    s.sample()  # no updates since the last call: unchanged
    assert (s.p_easy, s.p_hard) == pytest.approx((0.49, 0.51))


def test_decay_forgets_old_evidence():
    s = OnlineDifficultySampler(["a"], n_per_step=1, prior=(1.0, 1.0), decay=0.5)
    s.update("a", [1.0] * 4)
    s.update("a", [0.0] * 4)
    assert (s.alpha[0], s.beta[0]) == (1 + 0.5 * 4, 1 + 4)


def test_state_round_trips_through_json():
    ids_ = [f"p{i}" for i in range(12)]
    a = OnlineDifficultySampler(ids_, n_per_step=3, seed=5, skip_zero_variance=True, adaptive=True)
    rng = np.random.default_rng(0)
    for _ in range(5):
        for pid in a.sample():
            a.update(pid, rng.integers(0, 2, 4).astype(float).tolist())
    state = json.loads(json.dumps(a.state_dict()))
    b = OnlineDifficultySampler(ids_, n_per_step=3, seed=99, skip_zero_variance=True, adaptive=True)
    b.load_state_dict(state)
    for _ in range(5):
        pa_, pb = a.sample(), b.sample()
        assert pa_ == pb
        for pid in pa_:
            r = rng.integers(0, 2, 4).astype(float).tolist()
            a.update(pid, r)
            b.update(pid, r)
    assert np.array_equal(a.alpha, b.alpha) and (a.p_easy, a.p_hard) == (b.p_easy, b.p_hard)
    with pytest.raises(CurateError, match="other prompts"):
        OnlineDifficultySampler(ids_[:-1], n_per_step=1).load_state_dict(state)


def test_sampler_errors():
    with pytest.raises(CurateError, match="duplicates"):
        OnlineDifficultySampler(["a", "a"], n_per_step=1)
    s = OnlineDifficultySampler(["a"], n_per_step=1)
    with pytest.raises(CurateError, match="unknown prompt_id 'zz'"):
        s.update("zz", [1.0])
    with pytest.raises(CurateError, match="non-finite"):
        s.update("a", [float("nan")])
    with pytest.raises(CurateError, match="no rewards"):
        s.update("a", [])


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_pass_rates_by_level_on_smollm2(store):
    """SmolLM2-135M on sample-math: level 1 must be easier than level 5, and the band keeps only 0 < p < 1."""
    from curate import sample
    from curate.rollouts import rollout

    # 40 prompts (8 per level) x n=4 as the issue asks, but 64 tokens instead of ~96: the hf backend decodes SmolLM2
    # at a few dozen tokens/s on this 2-core CPU. Level 1 answers come early, so 64 tokens keeps the signal.
    per_level = 8
    rows = sample("sample-math", store=store).to_pylist()
    subset = [r for level in range(1, 6) for r in [x for x in rows if x["level"] == level][:per_level]]
    math20 = save(subset, name="math20", store=store)
    t0 = time.perf_counter()
    ro = rollout(math20, n=4, max_tokens=64, temperature=1.0, reward="math", name="math20-rollouts", store=store)
    gen_s = time.perf_counter() - t0
    v = run_selector(ro, method="difficulty", name="math20-curriculum", store=store, stages=2)

    fit = DifficultySelector().fit(ro)
    table = ro.to_arrow(columns=["prompt_id", "level"])
    level_of = dict(zip(table.column("prompt_id").to_pylist(), table.column("level").to_pylist(), strict=True))
    by_level: dict[int, list[float]] = {}
    for pid, p in zip(fit.prompt_ids_, fit.pass_rate_.tolist(), strict=True):
        by_level.setdefault(level_of[pid], []).append(p)
    kept_by_level = {lv: sum(1 for r in v.to_pylist() if r["level"] == lv) for lv in by_level}
    print(f"\nrollouts: {ro.manifest['stats']['rows']} completions in {gen_s:.0f}s")
    print("level  prompts  mean pass rate  per-prompt pass rates     kept")
    for lv in sorted(by_level):
        ps = by_level[lv]
        print(
            f"{lv:5d}  {len(ps):7d}  {np.mean(ps):14.3f}  {str([round(p, 2) for p in ps]):24s}  {kept_by_level[lv]:4d}"
        )
    assert np.mean(by_level[1]) > np.mean(by_level[5])
    assert all(0 < r["pass_rate"] < 1 for r in v.to_pylist())
    assert [r["pass_rate"] for r in v.to_pylist()] == sorted((r["pass_rate"] for r in v.to_pylist()), reverse=True)


def test_empty_single_row_and_stale_columns(store):
    import pyarrow as pa

    empty = pa.table({"id": pa.array([], pa.string()), "prompt_id": pa.array([], pa.string()),
                      "reward": pa.array([], pa.float64())})  # fmt: skip
    save(empty, name="ro", store=store)
    v = select(store, stages=2)
    assert len(v) == 0 and v.manifest["stats"]["prompts"] == 0
    rows = rollout_rows({"solo": [1.0]})
    rows[0]["stage"] = 7  # a curriculum column from an earlier run must not survive a run without --stages
    save(rows, name="ro", store=store)
    v = run_selector("ro", method="difficulty", name="solo", store=store, band=(0.0, 1.0))
    assert ids(v) == ["solo"] and "stage" not in v.columns and v.to_pylist()[0]["pass_rate"] == 1.0
