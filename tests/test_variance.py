"""PODS max-variance down-sampling, DAPO zero-variance drop, RAGEN-2 variance-mass filter, advantages with the
TRL / PODS ddof (curate/groups.py, curate/selectors/variance.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from curate import save
from curate.errors import CurateError
from curate.groups import (
    group_advantages,
    group_std,
    learnability,
    max_variance_subset,
    metric_values,
    top_k_groups,
    top_p_groups,
    zero_variance,
)
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
    # Population std of [0, 1] is 0.5 (ddof=0); the sample std (ddof=1, the default) is sqrt(1/2).
    assert group_advantages(np.array([1.0, 0.0]), ddof=0).tolist() == [0.5 / 0.5001, -0.5 / 0.5001]
    assert group_advantages(np.array([1.0, 0.0])).tolist() == [0.5 / (0.5**0.5 + 1e-4), -0.5 / (0.5**0.5 + 1e-4)]
    assert group_advantages(np.array([0.5, 0.5, 0.5])).tolist() == [0.0, 0.0, 0.0]
    assert group_advantages(np.array([0.7])).tolist() == [0.0]  # one rollout: no std with ddof=1, advantage 0
    assert group_std([0.7]) == 0.0 and group_std([0.7], ddof=0) == 0.0 and group_std([]) == 0.0
    assert zero_variance([0.3]) and zero_variance([0.1 + 0.2, 0.3])  # one rollout; float noise
    assert zero_variance([0.0, 1e-9]) and zero_variance([0.0, 2e-6])  # population std 1e-6: at the tolerance
    assert not zero_variance([0.0, 2.1e-6]) and not zero_variance([0.0, 1e-9], tolerance=0.0)
    assert zero_variance([0.0, 0.5], min_std=0.25) and not zero_variance([0.0, 0.5], min_std=0.2499)
    assert learnability(np.array([0.0, 0.25, 1.0])).tolist() == [0.0, 0.1875, 0.0]


def test_ddof_golden_the_numbers_of_the_issue():
    # Rewards [0, 0, 1, 1]: mean .5; sample std sqrt(1/3) = .57735 (TRL / PODS), population std .5.
    r = np.array([0.0, 0.0, 1.0, 1.0])
    a1 = 0.5 / (np.sqrt(1 / 3) + 1e-4)
    assert group_advantages(r).tolist() == [-a1, -a1, a1, a1]
    assert round(a1, 4) == 0.8659 and round(0.5 / np.sqrt(1 / 3), 4) == 0.8660  # 0.8660 is the value without eps
    assert group_advantages(r, ddof=0).tolist() == [-0.5 / 0.5001, -0.5 / 0.5001, 0.5 / 0.5001, 0.5 / 0.5001]
    assert round(0.5 / 0.5001, 3) == 1.0
    # The ratio is sqrt(m / (m - 1)) up to the eps: 1.155 at m = 4.
    assert group_advantages(r, ddof=0)[3] / a1 == pytest.approx(np.sqrt(4 / 3), rel=1e-3)


def test_metric_values_and_top_groups_golden():
    assert metric_values([0.0, 0.5, 0.51, 1.2], "acc", 0.5).tolist() == [0.0, 0.0, 1.0, 1.0]  # > threshold
    assert metric_values([0.0, 0.5], "score", 0.5).tolist() == [0.0, 0.5]
    with pytest.raises(CurateError, match="--metric"):
        metric_values([0.0], "accuracy", 0.5)
    mass = [0.3, 0.5, 0.2, 0.0, 0.5]  # total 1.5; ranked 1, 4, 0, 2, 3 (ties by lower index)
    assert top_p_groups(mass, 1 / 3).tolist() == [1]  # 0.5 >= 0.5 exactly: the boundary group suffices
    assert top_p_groups(mass, 1 / 3 + 1e-9).tolist() == [1, 4]
    assert top_p_groups(mass, 0.6).tolist() == [1, 4]
    assert top_p_groups(mass, 0.6667).tolist() == [1, 4, 0]  # 1.0 < 1.00005: one more
    assert top_p_groups(mass, 1.0).tolist() == [1, 4, 0, 2]  # the zero-mass group is never needed
    assert top_p_groups([0.0, 0.0], 0.9).tolist() == [] and top_p_groups([], 0.5).tolist() == []
    assert top_p_groups([0.1, 0.2, 0.3 - 0.1 - 0.2 + 0.3], 0.5).tolist() == [2]  # float rounding at the boundary
    assert top_k_groups(mass, 2).tolist() == [1, 4] and top_k_groups(mass, 9).tolist() == [1, 4, 0, 2, 3]
    with pytest.raises(CurateError, match="--top-p"):
        top_p_groups(mass, 0.0)
    with pytest.raises(CurateError, match="--top-k"):
        top_k_groups(mass, 0)


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
    expected = (sub - sub.mean()) / (sub.std(ddof=1) + 1e-4)
    assert [r["advantage"] for r in rows[:3]] == pytest.approx(expected.tolist(), abs=1e-12)
    assert rows[0]["variance_score"] == pytest.approx(np.var(sub))  # the population variance, whatever the ddof
    sub3 = np.array([1.0, 0.0, 0.0])
    expected3 = (sub3 - sub3.mean()) / (sub3.std(ddof=1) + 1e-4)
    assert [r["advantage"] for r in rows[3:]] == pytest.approx(expected3.tolist())
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
    a = 0.5 / (0.5**0.5 + 1e-4)  # sample std of [1, 0] is sqrt(1/2)
    assert [r["advantage"] for r in v.to_pylist()] == pytest.approx([a, -a], abs=1e-12)
    v0 = run_selector("ro", method="variance", name="dapo0", store=store, ddof=0)
    assert [r["advantage"] for r in v0.to_pylist()] == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001], abs=1e-12)
    assert v0.id != v.id
    # With the drop switched off a constant group stays, with zero advantage.
    v2 = run_selector("ro", method="variance", name="all", store=store, drop_zero_variance=False)
    assert [r["id"] for r in v2.to_pylist()] == ["b-0", "b-1", "a-0", "a-1"]
    assert [r["advantage"] for r in v2.to_pylist()][:2] == [0.0, 0.0]


def test_min_std_with_graded_rewards(store):
    groups = {"tight": [0.50, 0.52, 0.48, 0.50], "wide": [0.0, 0.5, 1.0, 0.5], "flat": [0.3, 0.3, 0.3, 0.3]}
    save(rollout_rows(groups), name="ro", store=store)
    v = run_selector("ro", method="variance", name="default", store=store, metric="score")
    assert {r["prompt_id"] for r in v.to_pylist()} == {"tight", "wide"}  # min_std=0: only flat (to 1e-6) goes
    v = run_selector("ro", method="variance", name="strict", store=store, metric="score", min_std=0.05)
    assert {r["prompt_id"] for r in v.to_pylist()} == {"wide"}  # tight has std 0.0141 <= 0.05
    reasons = {r["id"]: r["reason"] for r in v.decisions().to_pylist()}
    assert reasons["tight-0"] == "zero_variance"
    # Exactly at the threshold counts as too flat (<=).
    save(rollout_rows({"edge": [0.0, 0.5]}), name="edge", store=store)
    score = {"metric": "score"}
    assert len(run_selector("edge", method="variance", name="e1", store=store, min_std=0.25, **score)) == 0
    assert len(run_selector("edge", method="variance", name="e2", store=store, min_std=0.2499, **score)) == 2


def test_float_noise_counts_as_zero_variance(store):
    save(rollout_rows({"a": [0.1 + 0.2, 0.3, 0.30000000000000004]}), name="ro", store=store)
    assert len(run_selector("ro", method="variance", name="o", store=store, metric="score")) == 0


def test_tolerance_is_explicit_for_continuous_rewards(store):
    # Population std of [0.3, 0.3 + 2e-7] is 1e-7: flat at the default tolerance 1e-6, not at a tighter one.
    save(rollout_rows({"near": [0.3, 0.3 + 2e-7], "far": [0.3, 0.4]}), name="ro", store=store)
    v = run_selector("ro", method="variance", name="t0", store=store, metric="score")
    assert {r["prompt_id"] for r in v.to_pylist()} == {"far"}
    reasons = {r["id"]: r["reason"] for r in v.decisions().to_pylist()}
    assert reasons["near-0"] == reasons["near-1"] == "zero_variance"
    v = run_selector("ro", method="variance", name="t1", store=store, metric="score", tolerance=1e-8)
    assert {r["prompt_id"] for r in v.to_pylist()} == {"near", "far"}
    v = run_selector("ro", method="variance", name="t2", store=store, metric="score", tolerance=0.06)
    assert len(v) == 0  # far: population std 0.05 <= 0.06


def test_metric_acc_is_dapo_correctness_and_the_default(store):
    groups = {
        "format": [1.0, 1.1, 1.2, 1.0],  # all correct (> 0.5), rewards differ by a format bonus
        "wrong": [0.0, 0.1, 0.0, 0.2],  # all wrong, format bonus only
        "mixed": [0.0, 1.1, 0.1, 1.0],  # 2 of 4 correct
        "half": [0.5, 0.5, 1.0, 0.5],  # 0.5 is not > 0.5: 1 of 4 correct
    }
    save(rollout_rows(groups), name="ro", store=store)
    acc = run_selector("ro", method="variance", name="acc", store=store)
    assert [r["prompt_id"] for r in acc.to_pylist()][::4] == ["mixed", "half"]
    reasons = {r["id"]: r["reason"] for r in acc.decisions().to_pylist()}
    assert {reasons[f"format-{s}"] for s in range(4)} == {reasons[f"wrong-{s}"] for s in range(4)} == {"zero_variance"}
    assert acc.id == run_selector("ro", method="variance", name="acc2", store=store, metric="acc").id
    score = run_selector("ro", method="variance", name="score", store=store, metric="score")
    assert [r["prompt_id"] for r in score.to_pylist()][::4] == ["format", "wrong", "mixed", "half"]
    # Advantages are over the rewards either way: the metric only decides which groups stay.
    mixed = np.array(groups["mixed"])
    expected = (mixed - mixed.mean()) / (mixed.std(ddof=1) + 1e-4)
    assert [r["advantage"] for r in acc.to_pylist()][:4] == pytest.approx(expected.tolist(), abs=1e-12)


def variance_mass_groups() -> dict[str, list[float]]:
    # Sample stds (ddof=1): g1 sqrt(1/3) = .57735, g2 = g3 = .5 (a tie, broken by first appearance), g4 flat.
    return {
        "g1": [0.0, 1.0, 0.0, 1.0],
        "g2": [0.0, 0.0, 0.0, 1.0],
        "g4": [1.0, 1.0, 1.0, 1.0],
        "g3": [1.0, 1.0, 1.0, 0.0],
    }


def test_top_p_keeps_the_smallest_prefix_reaching_p_of_the_std_mass(store):
    save(rollout_rows(variance_mass_groups()), name="ro", store=store)
    s1, s2 = np.sqrt(1 / 3), 0.5
    total = s1 + 2 * s2  # g4 is dropped as zero-variance before the ranking

    def kept(p, name):
        v = run_selector("ro", method="variance", name=name, store=store, top_p=p)
        return v, list(dict.fromkeys(r["prompt_id"] for r in v.to_pylist()))

    assert kept(0.3, "p30")[1] == ["g1"]  # .3 * 1.577 = .473 <= .577
    assert kept(s1 / total, "pb")[1] == ["g1"]  # exactly at the boundary: the prefix reaches p
    assert kept(s1 / total + 1e-9, "pb2")[1] == ["g1", "g2"]  # just above: the next group (g2 before g3)
    v, groups = kept(0.5, "p50")
    assert groups == ["g1", "g2"]
    reasons = {r["id"]: r["reason"] for r in v.decisions().to_pylist()}
    assert {reasons[f"g3-{s}"] for s in range(4)} == {"below_top_p"}
    assert {reasons[f"g4-{s}"] for s in range(4)} == {"zero_variance"}
    assert v.manifest["stats"]["std_mass_kept"] == pytest.approx((s1 + s2) / total)
    assert v.manifest["stats"]["prompts_kept"] == 2
    assert kept((s1 + s2) / total + 1e-9, "p_all")[1] == ["g1", "g2", "g3"]
    assert kept(1.0, "p1")[1] == ["g1", "g2", "g3"]
    # Kept groups keep their advantages (over the whole group here).
    g1 = np.array(variance_mass_groups()["g1"])
    assert [r["advantage"] for r in v.to_pylist()][:4] == pytest.approx(((g1 - 0.5) / (s1 + 1e-4)).tolist())


def test_top_p_with_zero_variance_groups_kept_and_an_all_flat_input(store):
    save(rollout_rows(variance_mass_groups()), name="ro", store=store)
    v = run_selector("ro", method="variance", name="nz", store=store, top_p=1.0, drop_zero_variance=False)
    assert list(dict.fromkeys(r["prompt_id"] for r in v.to_pylist())) == ["g1", "g2", "g3"]  # g4: mass 0
    assert {r["reason"] for r in v.decisions().to_pylist() if r["id"].startswith("g4")} == {"below_top_p"}
    save(rollout_rows({"a": [1.0, 1.0], "b": [0.0, 0.0]}), name="flat", store=store)
    v = run_selector("flat", method="variance", name="f", store=store, top_p=0.9, drop_zero_variance=False)
    assert len(v) == 0 and v.manifest["stats"]["std_mass_kept"] == 0.0  # a total of 0: nothing reaches it


def test_top_k_and_the_ddof_changes_the_ranking_across_group_sizes(store):
    save(rollout_rows(variance_mass_groups()), name="ro", store=store)
    v = run_selector("ro", method="variance", name="k2", store=store, top_k=2)
    assert list(dict.fromkeys(r["prompt_id"] for r in v.to_pylist())) == ["g1", "g2"]
    assert {r["reason"] for r in v.decisions().to_pylist() if r["id"].startswith("g3")} == {"below_top_k"}
    # "eight" (4 of 8 correct) has std .5 (ddof 0) or sqrt(2/7) = .5345 (ddof 1); "pair" [0, 1] .5 or .7071.
    save(rollout_rows({"eight": [0.0] * 4 + [1.0] * 4, "pair": [0.0, 1.0]}), name="sizes", store=store)
    pick = {
        ddof: run_selector("sizes", method="variance", name=f"d{ddof}", store=store, top_k=1, ddof=ddof)
        for ddof in (0, 1)
    }
    assert {r["prompt_id"] for r in pick[0].to_pylist()} == {"eight"}  # a tie at .5: first appearance
    assert {r["prompt_id"] for r in pick[1].to_pylist()} == {"pair"}


def test_variance_mass_ranks_the_kept_subset(store):
    # Whole groups: "rare" (1 of 8) std sqrt(1/8) = .354 < "even" (4 of 8) .535; down-sampled to 2 rollouts both
    # keep one 0 and one 1 (std .7071 each), and the tie goes to the first group.
    save(rollout_rows({"rare": [0.0] * 7 + [1.0], "even": [0.0] * 4 + [1.0] * 4}), name="ro", store=store)
    whole = run_selector("ro", method="variance", name="w", store=store, top_k=1)
    assert {r["prompt_id"] for r in whole.to_pylist()} == {"even"}
    sub = run_selector("ro", method="variance", name="s", store=store, top_k=1, keep_per_prompt=2)
    assert [r["id"] for r in sub.to_pylist()] == ["rare-0", "rare-7"]
    reasons = {r["id"]: r["reason"] for r in sub.decisions().to_pylist()}
    assert reasons["rare-1"] == "downsampled" and reasons["even-0"] == "below_top_k"


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
    bad = [
        ("--ddof must be 0 or 1", {"ddof": 2}),
        ("--ddof must be 0 or 1", {"ddof": True}),
        ("--metric must be one of acc, score", {"metric": "reward"}),
        ("--tolerance", {"tolerance": -1e-6}),
        ("--tolerance", {"tolerance": float("nan")}),
        (r"--top-p must be in \(0, 1\]", {"top_p": 0.0}),
        (r"--top-p must be in \(0, 1\]", {"top_p": 1.5}),
        ("--top-k must be a positive integer", {"top_k": 0}),
        ("give --top-p or --top-k, not both", {"top_p": 0.5, "top_k": 1}),
    ]
    for message, params in bad:
        with pytest.raises(CurateError, match=message):
            run_selector("ro", method="variance", name="x", store=store, **params)
    assert "x" not in store.datasets()


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
