"""Math on one prompt's group of rollouts (its n rewards), shared by the selectors and the trainers.

A GRPO group is the n completions sampled for one prompt; what a group is worth to the policy gradient depends only
on its rewards. The offline selectors (``selectors/variance.py``, ``selectors/difficulty.py``) and the online trainer
(``train/grpo.py``, ``train/curriculum.py``) apply the same rules, so they live here, once:

- ``zero_variance``: rewards that all agree give every completion advantage 0, so the group carries no gradient
  (DAPO dynamic sampling, Yu et al., arXiv 2503.14476).
- ``max_variance_subset``: the m of n rollouts whose rewards have the largest population variance (PODS, Xu, Savani,
  Fang, Kolter, arXiv 2504.13818), exact by PODS's lemma.
- ``group_advantages``: ``(r - mean) / (std + 1e-4)`` with the population std (the PODS / GRPO convention).
- ``learnability``: p (1 - p) of a pass rate p (LILO, Foster et al., arXiv 2502.12272).

Pure numpy, no store and no model: ``curate select ... --method variance`` and ``curate train grpo ...
--downsample 4 --drop-zero-variance`` both end up here.

    >>> group_advantages(np.array([0.0, 1.0])).round(3).tolist(), zero_variance([1.0, 1.0])
    ([-1.0, 1.0], True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.errors import CurateError

__all__ = [
    "ADV_EPS",
    "ZERO_STD_TOL",
    "group_advantages",
    "learnability",
    "max_variance_subset",
    "population_std",
    "zero_variance",
]

#: PODS adds this to the std so a near-constant subset does not blow advantages up.
ADV_EPS = 1e-4
#: "std == 0" for float rewards: sums of floats like 0.1 leave rounding noise far below this.
ZERO_STD_TOL = 1e-12


def population_std(rewards: Sequence[float] | np.ndarray) -> float:
    """The population std of a group's rewards (0 for an empty group).

    >>> population_std([0.0, 1.0])
    0.5
    """
    r = np.asarray(rewards, dtype=np.float64)
    return float(np.std(r)) if r.size else 0.0


def zero_variance(rewards: Sequence[float] | np.ndarray, min_std: float = 0.0) -> bool:
    """Whether the group carries no GRPO signal: population std ``<= min_std`` (exactly 0, up to 1e-12, by default).

    A one-rollout group has std 0 and counts as zero-variance: its advantage is 0.

    >>> zero_variance([0.5, 0.5]), zero_variance([0.0, 0.1]), zero_variance([0.0, 0.1], min_std=0.05)
    (True, False, True)
    """
    return population_std(rewards) <= max(float(min_std), ZERO_STD_TOL)


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """``(r - mean) / (std + ADV_EPS)`` over the group, population std; an all-equal group gets 0 (up to rounding).

    >>> group_advantages(np.array([0.2, 0.0])).round(4).tolist()
    [0.999, -0.999]
    """
    r = np.asarray(rewards, dtype=np.float64)
    return (r - r.mean()) / (population_std(r) + ADV_EPS)


def learnability(pass_rate: float | np.ndarray) -> float | np.ndarray:
    """p (1 - p): largest at p = 0.5, 0 for prompts always or never solved (LILO's learnability score).

    >>> learnability(np.array([0.0, 0.5, 0.75])).tolist()
    [0.0, 0.25, 0.1875]
    """
    return pass_rate * (1.0 - pass_rate)


def max_variance_subset(rewards: Sequence[float] | np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` rewards with the largest population variance, sorted ascending.

    Exact (PODS's lemma): the best subset is the k highest plus the m - k lowest rewards for some k in 0..m; one
    stable sort and prefix sums of r and r**2 score every k in O(1). Tie-breaks, so the result is deterministic:
    among k with equal variance (within 1e-12 relative) the smallest k wins (more rows from the low end); among equal
    rewards the lower original index is kept. ``m >= len(rewards)`` keeps everything; ``m = 1`` keeps the lowest
    reward (every single row has variance 0, so k = 0 wins).

    >>> max_variance_subset([0, 0.1, 0.15, 0.2, 1.0], 3).tolist()
    [0, 1, 4]
    >>> max_variance_subset([0, 0, 0, 1, 1, 1, 1, 1], 4).tolist()
    [0, 1, 3, 4]
    """
    r = np.asarray(rewards, dtype=np.float64).ravel()
    n = r.size
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 0:
        raise CurateError(f"max_variance_subset: m must be a non-negative integer, got {m!r}")
    if not np.all(np.isfinite(r)):
        raise CurateError(f"max_variance_subset: rewards must be finite, got {r[~np.isfinite(r)][:3].tolist()}")
    if m >= n:
        return np.arange(n, dtype=np.int64)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(r, kind="stable")
    s = r[order]
    # Centring before squaring keeps the prefix-sum variance free of cancellation for rewards far from 0.
    c = s - s[n // 2]
    p1 = np.concatenate(([0.0], np.cumsum(c)))
    p2 = np.concatenate(([0.0], np.cumsum(c * c)))
    k = np.arange(m + 1)
    lo = m - k
    s1 = p1[lo] + p1[n] - p1[n - k]
    s2 = p2[lo] + p2[n] - p2[n - k]
    var = s2 / m - (s1 / m) ** 2
    tol = 1e-12 * max(1.0, float(np.max(np.abs(c))) ** 2)
    best = int(np.flatnonzero(var >= var.max() - tol)[0])
    chosen = np.zeros(n, dtype=bool)
    chosen[: m - best] = True
    chosen[n - best :] = True
    # Equal rewards sit in one run of the stable sort (original indices ascending); give each run's quota of picks
    # to its lowest indices, so "k highest" never prefers a later duplicate over an earlier one.
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    counts = np.add.reduceat(chosen.astype(np.int64), starts)
    run_len = np.diff(np.concatenate((starts, [n])))
    pos_in_run = np.arange(n) - np.repeat(starts, run_len)
    chosen = pos_in_run < np.repeat(counts, run_len)
    return np.sort(order[chosen]).astype(np.int64)
