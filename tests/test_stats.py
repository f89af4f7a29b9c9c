"""Bootstrap intervals for `curate compare` (curate/stats.py): golden values, invariants, coverage, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

import curate.stats as stats
from curate.errors import CurateError
from curate.stats import Interval, bootstrap_interval, paired_difference, ratio_mean


def noisy_arm(rng: np.random.Generator, seeds: int, rows: int, *, row_sd: float, seed_sd: float):
    """Token-mean NLL runs: row i has n_i tokens at mean NLL 1 + u_i (+ a per-seed offset); returns sums, counts."""
    n = rng.integers(5, 30, size=rows).astype(np.float64)
    u = rng.normal(0.0, row_sd, size=rows)
    delta = rng.normal(0.0, seed_sd, size=(seeds, 1))
    return n * (1.0 + u + delta), np.tile(n, (seeds, 1))


# ---------------------------------------------------------------------------------------------- golden values
def test_ratio_mean_golden():
    # seed 0: (2 + 4 + 3) / (2 + 4 + 2) = 9/8; seed 1: (2.5 + 3.5 + 3) / 8 = 9/8; mean 1.125.
    assert ratio_mean([[2.0, 4.0, 3.0], [2.5, 3.5, 3.0]], [[2, 4, 2], [2, 4, 2]]) == 1.125
    # Tokens are pooled across rows: (1 + 6) / (1 + 3) = 1.75, not the mean of per-row ratios (1/1 + 6/3) / 2 = 1.5.
    assert ratio_mean([[1.0, 6.0]], [[1, 3]]) == 1.75
    # Seeds weigh equally whatever their token counts: (1/1 + 9/3) / 2 = 2.
    assert ratio_mean([[1.0], [9.0]], [[1], [3]]) == 2.0
    # Accuracy: 0/1 with n_i = 1 is the plain mean over rows and seeds.
    assert ratio_mean([[1, 0, 1, 1], [0, 0, 1, 1]], np.ones((2, 4))) == 0.625


def test_zero_variance_collapses_to_the_value():
    # Every row and every seed identical: every replicate is 1.5 k / 3 k = 0.5 exactly.
    ci = bootstrap_interval(np.full((4, 25), 1.5), np.full((4, 25), 3), n_boot=300)
    assert ci == Interval(0.5, 0.5, 0.5)


def test_seed_level_golden():
    # Rows identical within a seed, seeds at 1.0 and 2.0: a replicate is the mean of two seeds drawn with
    # replacement, 1.0 / 1.5 / 2.0 with probability 1/4, 1/2, 1/4, so the 95% percentile interval is exactly [1, 2].
    sums = np.array([[3.0] * 10, [6.0] * 10])
    ci = bootstrap_interval(sums, np.full((2, 10), 3), n_boot=2000, seed=0)
    assert ci == Interval(1.5, 1.0, 2.0)


def test_one_seed_row_level_only():
    # One seed: only held-out rows vary; the interval lies within the per-row extremes and brackets the value.
    rng = np.random.default_rng(7)
    sums, counts = noisy_arm(rng, 1, 40, row_sd=0.5, seed_sd=0.0)
    ci = bootstrap_interval(sums, counts, n_boot=500)
    per_row = sums[0] / counts[0]
    assert per_row.min() < ci.low < ci.value < ci.high < per_row.max()
    assert ci.value == ratio_mean(sums, counts)


def test_level_widens_the_interval():
    rng = np.random.default_rng(1)
    sums, counts = noisy_arm(rng, 3, 40, row_sd=0.5, seed_sd=0.05)
    narrow = bootstrap_interval(sums, counts, level=0.5, n_boot=500)
    wide = bootstrap_interval(sums, counts, level=0.99, n_boot=500)
    assert wide.low < narrow.low < narrow.value < narrow.high < wide.high


# ---------------------------------------------------------------------------------------------- coverage
def test_coverage_of_the_true_ratio():
    # 200 independent data sets with truth 1.0 (row effects and seed offsets have mean 0); the 95% interval should
    # contain it in roughly 95% of them. Shrunk for speed: 30 rows, 3 seeds, n_boot 200 (coverage ~0.9 here;
    # the percentile bootstrap runs a little narrow at this size and with 3 seeds, see the module docstring).
    hits = 0
    for k in range(200):
        sums, counts = noisy_arm(np.random.default_rng(1000 + k), 3, 30, row_sd=0.5, seed_sd=0.05)
        ci = bootstrap_interval(sums, counts, n_boot=200, seed=k)
        hits += ci.low <= 1.0 <= ci.high
    assert 0.88 * 200 <= hits <= 0.99 * 200


# ---------------------------------------------------------------------------------------------- paired difference
def test_arm_against_itself_is_exactly_zero():
    rng = np.random.default_rng(2)
    sums, counts = noisy_arm(rng, 1, 40, row_sd=0.5, seed_sd=0.0)
    assert paired_difference(sums, counts, sums, counts, n_boot=300) == Interval(0.0, 0.0, 0.0)
    # Several seeds that are all alike: the independent seed resamples cannot differ either.
    same = np.tile(sums, (3, 1)), np.tile(counts, (3, 1))
    assert paired_difference(*same, *same, n_boot=300) == Interval(0.0, 0.0, 0.0)


def test_arm_against_itself_with_seed_variance_brackets_zero():
    # Seeds are resampled independently per arm (the two arms' seed j are separate runs), so distinct seeds leave
    # seed-level spread around an exact 0 point estimate.
    sums, counts = noisy_arm(np.random.default_rng(3), 3, 40, row_sd=0.5, seed_sd=0.1)
    d = paired_difference(sums, counts, sums, counts, n_boot=500)
    assert d.value == 0.0 and d.low < 0.0 < d.high


def test_constant_shift_is_recovered_tightly():
    # Every token of every row costs 0.1 more in arm a, in every seed: each replicate differs by 0.1 up to rounding.
    sums_b, counts = noisy_arm(np.random.default_rng(4), 3, 40, row_sd=0.5, seed_sd=0.0)
    d = paired_difference(sums_b + 0.1 * counts, counts, sums_b, counts, n_boot=500)
    assert d.value == pytest.approx(0.1, abs=1e-12)
    assert d.low == pytest.approx(0.1, abs=1e-12) and d.high == pytest.approx(0.1, abs=1e-12)


def test_paired_is_narrower_than_two_intervals():
    # Hard rows are hard for both arms: the shared row effect cancels in the paired difference. The two arms'
    # intervals overlap, yet the paired interval excludes 0 and is several times narrower than the unpaired one.
    rng = np.random.default_rng(5)
    sums_b, counts = noisy_arm(rng, 3, 60, row_sd=0.6, seed_sd=0.01)
    sums_a = sums_b + counts * (0.1 + rng.normal(0.0, 0.05, size=sums_b.shape))
    a = bootstrap_interval(sums_a, counts, n_boot=1000)
    b = bootstrap_interval(sums_b, counts, n_boot=1000)
    d = paired_difference(sums_a, counts, sums_b, counts, n_boot=1000)
    unpaired = np.hypot(a.high - a.low, b.high - b.low)
    assert a.overlaps(b)
    assert d.low > 0.0 and d.value == pytest.approx(a.value - b.value, abs=1e-12)
    assert d.high - d.low < 0.25 * unpaired


def test_arms_may_have_different_seed_counts():
    # A deterministic selector with one run against `random` with three seeds: the shapes need only share rows.
    rng = np.random.default_rng(6)
    sums_a, counts_a = noisy_arm(rng, 1, 30, row_sd=0.3, seed_sd=0.0)
    sums_b = np.vstack([sums_a[0] + counts_a[0] * off for off in (0.0, 0.1, 0.2)])
    d = paired_difference(sums_a, counts_a, sums_b, np.tile(counts_a, (3, 1)), n_boot=1000)
    # b's seeds sit 0, 0.1, 0.2 above a: the difference is -0.1 and only the seed level of b varies it.
    assert d.value == pytest.approx(-0.1, abs=1e-12)
    assert -0.2 - 1e-12 <= d.low < -0.1 < d.high <= 0.0 + 1e-12


# ---------------------------------------------------------------------------------------------- determinism
def test_deterministic_given_seed():
    sums, counts = noisy_arm(np.random.default_rng(8), 3, 40, row_sd=0.5, seed_sd=0.05)
    other = sums[::-1] * 1.01
    assert bootstrap_interval(sums, counts, n_boot=300, seed=3) == bootstrap_interval(sums, counts, n_boot=300, seed=3)
    assert bootstrap_interval(sums, counts, n_boot=300, seed=3) != bootstrap_interval(sums, counts, n_boot=300, seed=4)
    d3 = paired_difference(sums, counts, other, counts, n_boot=300, seed=3)
    assert d3 == paired_difference(sums, counts, other, counts, n_boot=300, seed=3)
    assert d3 != paired_difference(sums, counts, other, counts, n_boot=300, seed=4)


def test_chunking_does_not_change_results(monkeypatch):
    # Replicates are drawn in memory-bounded chunks; the random stream, and so every bound, is the same whatever
    # the chunk size (odd row count on purpose: a chunk boundary mid-way through a 32-bit draw would show).
    sums, counts = noisy_arm(np.random.default_rng(9), 3, 51, row_sd=0.5, seed_sd=0.05)

    def both():
        return bootstrap_interval(sums, counts, n_boot=150), paired_difference(
            sums, counts, sums * 1.1, counts, n_boot=150
        )

    expected = both()
    for cells in (1, 51 * 7, 10_000):
        monkeypatch.setattr(stats, "_CHUNK_CELLS", cells)
        assert both() == expected


def test_overlaps():
    a = Interval(1.0, 0.5, 1.5)
    assert a.overlaps(Interval(2.0, 1.5, 2.5)) and Interval(2.0, 1.5, 2.5).overlaps(a)  # touching ends
    assert a.overlaps(Interval(1.0, 0.9, 1.1)) and Interval(1.0, 0.9, 1.1).overlaps(a)  # nested
    assert not a.overlaps(Interval(2.0, 1.6, 2.5)) and not Interval(2.0, 1.6, 2.5).overlaps(a)


# ---------------------------------------------------------------------------------------------- bad input
GOOD = np.ones((2, 3))

BAD_ARM = [
    (
        np.ones((2, 3)),
        np.ones((2, 4)),
        "sums and counts must have the same (seeds, rows) shape, got (2, 3) and (2, 4)",
    ),
    (np.ones(3), np.ones(3), "sums must be a 2-D (seeds, rows) array, got shape (3,)"),
    (np.ones((2, 0)), np.ones((2, 0)), "sums is empty (shape (2, 0)): need at least one seed and one held-out row"),
    (np.ones((0, 3)), np.ones((0, 3)), "sums is empty (shape (0, 3)): need at least one seed and one held-out row"),
    ([[1.0, np.nan, 1.0]], [[1, 1, 1]], "sums has a non-finite value (nan) at seed 0, row 1"),
    ([[1.0, 1.0]], [[1.0, np.inf]], "counts has a non-finite value (inf) at seed 0, row 1"),
    ([[1.0, 1.0], [1.0, 1.0]], [[1, 1], [1, 0]], "counts must be > 0 in every held-out row, got 0 at seed 1, row 1"),
    ([[1.0, 1.0]], [[-2, 1]], "counts must be > 0 in every held-out row, got -2 at seed 0, row 0"),
    ([["a", "b"]], [[1, 1]], "sums must be a numeric (seeds, rows) array: could not convert string to float: 'a'"),
]


@pytest.mark.parametrize("sums, counts, message", BAD_ARM)
def test_bad_arm_raises_one_line(sums, counts, message):
    for call in (
        lambda: ratio_mean(sums, counts),
        lambda: bootstrap_interval(sums, counts),
    ):
        with pytest.raises(CurateError, match=f"^{re.escape(message)}$"):
            call()
    # In a paired difference the message names the arm.
    arm_a = message.replace("sums", "sums_a").replace("counts", "counts_a")
    with pytest.raises(CurateError, match=f"^{re.escape(arm_a)}$"):
        paired_difference(sums, counts, GOOD, GOOD)


def test_arms_with_different_rows():
    msg = (
        "the arms have different held-out rows: 3 in a, 4 in b "
        "(a paired difference needs the same held-out rows, in the same order, in both arms)"
    )
    with pytest.raises(CurateError, match=f"^{re.escape(msg)}$"):
        paired_difference(GOOD, GOOD, np.ones((2, 4)), np.ones((2, 4)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": 1.0}, "level must be in (0, 1), got 1.0"),
        ({"level": 0.0}, "level must be in (0, 1), got 0.0"),
        ({"level": 95}, "level must be in (0, 1), got 95"),
        ({"level": float("nan")}, "level must be in (0, 1), got nan"),
        ({"n_boot": 99}, "n_boot must be an integer >= 100, got 99"),
        ({"n_boot": 500.0}, "n_boot must be an integer >= 100, got 500.0"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(CurateError, match=f"^{re.escape(message)}$"):
        bootstrap_interval(GOOD, GOOD, **kwargs)
    with pytest.raises(CurateError, match=f"^{re.escape(message)}$"):
        paired_difference(GOOD, GOOD, GOOD, GOOD, **kwargs)
