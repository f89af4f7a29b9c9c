"""PODS max-variance down-sampling and DAPO zero-variance drop (curate/groups.py, curate/selectors/variance.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from curate import save
from curate.errors import CurateError
from curate.groups import group_advantages, learnability, max_variance_subset, zero_variance
from curate.selectors import SELECTORS, run_selector
from curate.selectors.variance import VarianceSelector


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    # The lead wires SELECTORS; until then (and harmlessly after) the tests register the method themselves.
    monkeypatch.setitem(SELECTORS, "variance", VarianceSelector)


def brute_force_best(r: np.ndarray, m: int) -> float:
    return max(float(np.var(r[list(c)])) for c in itertools.combinations(range(len(r)), m))


# ---------------------------------------------------------------------------------------------- the subset
def test_group_math_golden():
    # Population std of [0, 1] is 0.5: advantages +-0.5 / (0.5 + 1e-4).
    assert group_advantages(np.array([1.0, 0.0])).tolist() == [0.5 / 0.5001, -0.5 / 0.5001]
    assert group_advantages(np.array([0.5, 0.5, 0.5])).tolist() == [0.0, 0.0, 0.0]
    assert zero_variance([0.3]) and zero_variance([0.1 + 0.2, 0.3])  # one rollout; float noise below 1e-12
    assert not zero_variance([0.0, 1e-9])
    assert zero_variance([0.0, 0.5], min_std=0.25) and not zero_variance([0.0, 0.5], min_std=0.2499)
    assert learnability(np.array([0.0, 0.25, 1.0])).tolist() == [0.0, 0.1875, 0.0]


def test_golden_asymmetric_graded_case():
    r = [0, 0.1, 0.15, 0.2, 1.0]
    assert max_variance_subset(r, 3).tolist() == [0, 1, 4]  # {0, 0.1, 1.0}: 2 lowest + 1 highest, unique optimum


def test_golden_binary_case_is_balanced():
    r = np.array([0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    idx = max_variance_subset(r, 4)
    assert idx.tolist() == [0, 1, 3, 4]  # 2 zeros + 2 ones; equal rewards -> lowest original indices
    assert np.var(r[idx]) == pytest.approx(0.25)


def test_tie_breaks_are_documented_ones():
    # k=1 and k=2 both give variance 2/9 for 3 of (0,0,0,1,1,1,1,1); the smaller k (2 zeros + 1 one) wins.
    assert max_variance_subset([0, 0, 0, 1, 1, 1, 1, 1], 3).tolist() == [0, 1, 3]
    # Among equal rewards the lower index is kept, also for the "highest" end.
    assert max_variance_subset([1, 0, 1, 0, 1], 2).tolist() == [0, 1]
    assert max_variance_subset([5, 5, 5], 2).tolist() == [0, 1]
    # m=1: every singleton has variance 0, so k=0 keeps the lowest reward (first of equals).
    assert max_variance_subset([0.3, 0.1, 0.9, 0.1], 1).tolist() == [1]


def test_m_at_least_n_keeps_all_and_m_zero_keeps_none():
    assert max_variance_subset([0.5, 0.1, 0.9], 3).tolist() == [0, 1, 2]
    assert max_variance_subset([0.5, 0.1, 0.9], 10).tolist() == [0, 1, 2]
    assert max_variance_subset([0.5, 0.1], 0).tolist() == []
    assert max_variance_subset([], 2).tolist() == []


def test_bad_arguments():
    with pytest.raises(CurateError, match="m must be"):
        max_variance_subset([0.0, 1.0], -1)
    with pytest.raises(CurateError, match="finite"):
        max_variance_subset([0.0, float("nan")], 1)


@pytest.mark.parametrize("kind", ["binary", "graded", "ties", "offset"])
def test_matches_brute_force_over_all_subsets(kind):
    rng = np.random.default_rng({"binary": 0, "graded": 1, "ties": 2, "offset": 3}[kind])
    for _ in range(150):  # 600 random cases in all; n <= 12 keeps the brute force (<= 924 subsets) instant
        n = int(rng.integers(1, 13))
        m = int(rng.integers(1, n + 1))
        if kind == "binary":
            r = rng.integers(0, 2, n).astype(float)
        elif kind == "graded":
            r = rng.random(n)
        elif kind == "ties":
            r = rng.choice([0.0, 0.1, 0.2, 1.0, 1.2], n)  # PODS-like graded reward: correctness + format bonus
        else:
            r = 1e6 + rng.normal(size=n)  # far from 0: the prefix sums must not cancel
        idx = max_variance_subset(r, m)
        assert len(idx) == m and len(set(idx.tolist())) == m
        assert np.all(np.diff(idx) > 0)
        assert np.var(r[idx]) >= brute_force_best(r, m) - 1e-9 * max(1.0, float(np.var(r)))


# ---------------------------------------------------------------------------------------------- the selector
def rollout_rows(groups: dict[str, list[float]], *, level: dict[str, int] | None = None) -> list[dict]:
    rows = []
    for pid, rewards in groups.items():
        for s, r in enumerate(rewards):
            rows.append(
                {
                    "id": f"{pid}-{s}",
                    "prompt_id": pid,
                    "sample": s,
                    "prompt": [{"role": "user", "content": f"question {pid}"}],
                    "answer": "1",
                    "completion": f"completion {pid} {s}",
                    "reward": r,
                    "level": (level or {}).get(pid, 1),
                }
            )
    return rows


def test_selector_drops_zero_variance_downsamples_and_recomputes_advantages(store):
    groups = {
        "p1": [0.0, 0.1, 0.15, 0.2, 1.0],  # golden: keeps rows 0, 1, 4
        "p0": [1.0, 1.0, 1.0, 1.0],  # all correct: zero_variance
        "p2": [0.0, 0.0, 0.0, 0.0],  # all wrong: zero_variance
        "p3": [1.0, 0.0, 0.0, 1.0, 1.0],  # k=1 and k=2 tie; k=1 wins: both 0s + the first 1
    }
    save(rollout_rows(groups), name="ro", store=store)
    v = run_selector("ro", method="variance", name="pods", store=store, keep_per_prompt=3)
    rows = v.to_pylist()
    assert [r["id"] for r in rows] == ["p1-0", "p1-1", "p1-4", "p3-0", "p3-1", "p3-2"]
    sub = np.array([0.0, 0.1, 1.0])
    expected = (sub - sub.mean()) / (sub.std() + 1e-4)
    assert [r["advantage"] for r in rows[:3]] == pytest.approx(expected.tolist(), abs=1e-12)
    assert rows[0]["variance_score"] == pytest.approx(np.var(sub))
    sub3 = np.array([1.0, 0.0, 0.0])
    assert [r["advantage"] for r in rows[3:]] == pytest.approx(((sub3 - sub3.mean()) / (sub3.std() + 1e-4)).tolist())
    assert rows[0]["level"] == 1 and rows[0]["completion"] == "completion p1 0"  # pass-through columns survive

    dec = {r["id"]: r for r in v.decisions().to_pylist()}
    assert len(dec) == sum(len(g) for g in groups.values())
    assert {dec[f"p0-{s}"]["reason"] for s in range(4)} == {"zero_variance"}
    assert {dec[f"p2-{s}"]["reason"] for s in range(4)} == {"zero_variance"}
    assert [dec[f"p1-{s}"]["reason"] for s in range(5)] == ["", "", "downsampled", "downsampled", ""]
    assert [dec[f"p3-{s}"]["kept"] for s in range(5)] == [True, True, True, False, False]
    assert v.manifest["stats"]["reasons"] == {"zero_variance": 8, "downsampled": 4}
    assert v.manifest["stats"]["prompts_kept"] == 2


def test_without_downsampling_keeps_whole_groups_in_input_order(store):
    rows = rollout_rows({"a": [1.0, 0.0], "b": [0.0, 0.0]})
    rows = [rows[2], rows[0], rows[3], rows[1]]  # interleaved prompts: output regroups by first appearance
    save(rows, name="ro", store=store)
    v = run_selector("ro", method="variance", name="dapo", store=store)
    assert [r["id"] for r in v.to_pylist()] == ["a-0", "a-1"]
    assert [r["advantage"] for r in v.to_pylist()] == pytest.approx([0.5 / (0.5 + 1e-4), -0.5 / (0.5 + 1e-4)])
    # With the drop switched off a constant group stays, with zero advantage.
    v2 = run_selector("ro", method="variance", name="all", store=store, drop_zero_variance=False)
    assert [r["id"] for r in v2.to_pylist()] == ["b-0", "b-1", "a-0", "a-1"]
    assert [r["advantage"] for r in v2.to_pylist()][:2] == [0.0, 0.0]


def test_min_std_with_graded_rewards(store):
    groups = {"tight": [0.50, 0.52, 0.48, 0.50], "wide": [0.0, 0.5, 1.0, 0.5], "flat": [0.3, 0.3, 0.3, 0.3]}
    save(rollout_rows(groups), name="ro", store=store)
    v = run_selector("ro", method="variance", name="default", store=store)
    assert {r["prompt_id"] for r in v.to_pylist()} == {"tight", "wide"}  # min_std=0: only exactly-flat goes
    v = run_selector("ro", method="variance", name="strict", store=store, min_std=0.05)
    assert {r["prompt_id"] for r in v.to_pylist()} == {"wide"}  # tight has std 0.0141 <= 0.05
    reasons = {r["id"]: r["reason"] for r in v.decisions().to_pylist()}
    assert reasons["tight-0"] == "zero_variance"
    # Exactly at the threshold counts as too flat (<=).
    save(rollout_rows({"edge": [0.0, 0.5]}), name="edge", store=store)
    assert len(run_selector("edge", method="variance", name="e1", store=store, min_std=0.25)) == 0
    assert len(run_selector("edge", method="variance", name="e2", store=store, min_std=0.2499)) == 2


def test_float_noise_counts_as_zero_variance(store):
    save(rollout_rows({"a": [0.1 + 0.2, 0.3, 0.30000000000000004]}), name="ro", store=store)
    assert len(run_selector("ro", method="variance", name="o", store=store)) == 0


def test_nan_reward_is_an_error_and_commits_nothing(store):
    rows = rollout_rows({"ok": [0.0, 1.0], "bad": [1.0, float("nan")]})
    save(rows, name="ro", store=store)
    with pytest.raises(CurateError, match=r"prompt_id 'bad' \(row 3\): field 'reward' is nan"):
        run_selector("ro", method="variance", name="pods", store=store)
    assert "pods" not in store.datasets()
    rows[1]["reward"] = None
    save(rows, name="ro2", store=store)
    with pytest.raises(CurateError, match="prompt_id 'ok'.*null"):
        run_selector("ro2", method="variance", name="pods", store=store)
    assert "pods" not in store.datasets()


def test_prompts_version_without_reward_is_a_clear_error(store):
    save([{"id": "q1", "prompt": [{"role": "user", "content": "1+1?"}], "answer": "2"}], name="prompts", store=store)
    with pytest.raises(
        CurateError, match="needs a rollouts version with columns prompt_id and reward.*curate rollout"
    ):
        run_selector("prompts", method="variance", name="x", store=store)
    assert "x" not in store.datasets()


def test_bad_parameters(store):
    save(rollout_rows({"a": [0.0, 1.0]}), name="ro", store=store)
    with pytest.raises(CurateError, match="--keep-per-prompt"):
        run_selector("ro", method="variance", name="x", store=store, keep_per_prompt=0)
    with pytest.raises(CurateError, match="--min-std"):
        run_selector("ro", method="variance", name="x", store=store, min_std=-1.0)


def test_deterministic_and_rerun_is_the_same_version(store):
    rng = np.random.default_rng(0)
    save(
        rollout_rows({f"p{i}": rng.integers(0, 2, 8).astype(float).tolist() for i in range(20)}),
        name="ro",
        store=store,
    )
    a = run_selector("ro", method="variance", name="pods", store=store, keep_per_prompt=4)
    b = run_selector("ro", method="variance", name="pods", store=store, keep_per_prompt=4)
    assert a.id == b.id
    fit1 = VarianceSelector(keep_per_prompt=4).fit(store.load("ro"))
    fit2 = VarianceSelector(keep_per_prompt=4, seed=7).fit(store.load("ro"))
    assert np.array_equal(fit1.select().order, fit2.select().order)  # seed is accepted but changes nothing
    # Each kept binary group of 8 -> 4 is as balanced as the group allows.
    for pid in {r["prompt_id"] for r in a.to_pylist()}:
        kept = [r["reward"] for r in a.to_pylist() if r["prompt_id"] == pid]
        assert len(kept) == 4 and 1 <= sum(kept) <= 3


def test_empty_and_single_row_inputs(store):
    import pyarrow as pa

    empty = pa.table(
        {"id": pa.array([], pa.string()), "prompt_id": pa.array([], pa.string()), "reward": pa.array([], pa.float64())}
    )
    save(empty, name="empty", store=store)
    assert len(run_selector("empty", method="variance", name="e", store=store)) == 0
    save(rollout_rows({"solo": [1.0]}), name="solo", store=store)
    v = run_selector("solo", method="variance", name="s", store=store)
    assert len(v) == 0 and v.decisions().column("reason").to_pylist() == ["zero_variance"]
