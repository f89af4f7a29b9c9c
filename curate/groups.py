"""Math on one prompt's group of rollouts (its n rewards), shared by the selectors and the trainers.

A GRPO group is the n completions sampled for one prompt; what a group is worth to the policy gradient depends only
on its rewards. The offline selectors (``selectors/variance.py``, ``selectors/difficulty.py``) and the online trainer
(``train/grpo.py``, ``train/curriculum.py``) apply the same rules, so they live here, once:

- ``zero_variance``: values that all agree (population std ``<= max(min_std, tolerance)``) give every completion
  advantage 0, so the group carries no gradient (DAPO dynamic sampling, Yu et al., arXiv 2503.14476). DAPO compares
  accuracy, not the raw reward: ``metric_values(rewards, "acc", threshold)`` turns rewards into 0/1 correctness.
- ``max_variance_subset``: the m of n rollouts whose rewards have the largest population variance (PODS, Xu, Savani,
  Fang, Kolter, arXiv 2504.13818), exact by PODS's lemma. For a fixed m the ddof only rescales every subset's
  variance by the same factor, so the subset does not depend on it.
- ``group_advantages``: ``(r - mean) / (std + 1e-4)``, by default with the sample std (``ddof=1``, Bessel's
  correction): TRL's ``GRPOTrainer`` (``nanstd`` in ``trl/trainer/utils.py``) and the PODS reference trainers
  (TRL-based, ``Tensor.std``) both divide by ``n - 1``. ``ddof=0`` (the population std) gives advantages
  ``sqrt(n / (n - 1))`` larger: 1.155x at n = 4.
- ``top_p_groups`` / ``top_k_groups``: keep the groups carrying the top-p of the total reward-std mass, or the k
  largest (RAGEN-2 SNR-aware filtering, Wang et al., arXiv 2604.06268).
- ``learnability``: p (1 - p) of a pass rate p (LILO, Foster et al., arXiv 2502.12272).

Pure numpy, no store and no model: ``curate select ... --method variance`` and ``curate train grpo ...
--downsample 4 --drop-zero-variance`` both end up here.

    >>> group_advantages(np.array([0.0, 0.0, 1.0, 1.0])).round(3).tolist(), zero_variance([1.0, 1.0])
    ([-0.866, -0.866, 0.866, 0.866], True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from curate.errors import CurateError

__all__ = [
    "ADV_EPS",
    "DDOFS",
    "DEFAULT_DDOF",
    "METRICS",
    "ZERO_STD_TOL",
    "group_advantages",
    "group_std",
    "learnability",
    "max_variance_subset",
    "metric_values",
    "top_k_groups",
    "top_p_groups",
    "zero_variance",
]

#: TRL and PODS add this to the std so a near-constant group does not blow advantages up.
ADV_EPS = 1e-4
#: the std convention of the advantages: 1 (sample std, TRL / PODS) or 0 (population std)
DDOFS = (0, 1)
DEFAULT_DDOF = 1
#: what the zero-variance test compares: ``acc`` (correctness, reward > threshold; DAPO) or ``score`` (the reward)
METRICS = ("acc", "score")
#: "all rewards agree" for float rewards: a population std at or below this (the default ``--tolerance``). Far above
#: float rounding noise (1e-17 for sums like 0.1 + 0.2), far below any reward difference meant as signal.
ZERO_STD_TOL = 1e-6
#: relative slack of the top-p boundary: a prefix whose mass equals p * total up to float rounding still reaches it
_MASS_RTOL = 1e-12


def group_std(rewards: Sequence[float] | np.ndarray, ddof: int = DEFAULT_DDOF) -> float:
    """The std of a group's rewards with ``ddof`` (1: sample std, 0: population std); 0 for ``n <= ddof``.

    A group too small for the estimate (one rollout with ``ddof=1``, as TRL's ``num_generations == 1``) counts as
    flat: its advantage is 0.

    >>> group_std([0.0, 1.0], ddof=0), round(group_std([0.0, 1.0]), 4), group_std([0.3])
    (0.5, 0.7071, 0.0)
    """
    r = np.asarray(rewards, dtype=np.float64)
    return float(np.std(r, ddof=ddof)) if r.size > ddof else 0.0


def metric_values(rewards: Sequence[float] | np.ndarray, metric: str, threshold: float) -> np.ndarray:
    """What the zero-variance test compares: the rewards (``score``) or 0/1 correctness ``reward > threshold``
    (``acc``, DAPO's metric).

    >>> metric_values([0.0, 0.3, 1.2], "acc", 0.5).tolist(), metric_values([0.0, 0.3], "score", 0.5).tolist()
    ([0.0, 0.0, 1.0], [0.0, 0.3])
    """
    r = np.asarray(rewards, dtype=np.float64)
    if metric == "acc":
        return (r > threshold).astype(np.float64)
    if metric == "score":
        return r
    raise CurateError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")


def zero_variance(
    values: Sequence[float] | np.ndarray, min_std: float = 0.0, *, tolerance: float = ZERO_STD_TOL
) -> bool:
    """Whether the group carries no GRPO signal: population std ``<= max(min_std, tolerance)``.

    A one-rollout group has std 0 and counts as zero-variance: its advantage is 0. The test uses the population std
    whatever the advantages' ddof, so ``min_std`` keeps one meaning.

    >>> zero_variance([0.5, 0.5]), zero_variance([0.0, 0.1]), zero_variance([0.0, 0.1], min_std=0.05)
    (True, False, True)
    >>> zero_variance([0.0, 1e-7]), zero_variance([0.0, 1e-7], tolerance=0.0)
    (True, False)
    """
    return group_std(values, ddof=0) <= max(float(min_std), float(tolerance))


def group_advantages(rewards: np.ndarray, ddof: int = DEFAULT_DDOF) -> np.ndarray:
    """``(r - mean) / (std + ADV_EPS)`` over the group, std with ``ddof``; an all-equal group gets 0 (up to
    rounding), and so does a group too small for the std (see ``group_std``).

    >>> group_advantages(np.array([0.2, 0.0]), ddof=0).round(4).tolist()
    [0.999, -0.999]
    >>> group_advantages(np.array([0.0, 0.0, 1.0, 1.0])).round(4).tolist()
    [-0.8659, -0.8659, 0.8659, 0.8659]
    """
    r = np.asarray(rewards, dtype=np.float64)
    return (r - r.mean()) / (group_std(r, ddof) + ADV_EPS)


def top_p_groups(mass: Sequence[float] | np.ndarray, p: float) -> np.ndarray:
    """The groups carrying the top-``p`` share of the total mass: indices of the smallest prefix, in order of mass
    (largest first, ties by lower index), whose summed mass is ``>= p * total``.

    The boundary group is kept (the prefix reaches p, it does not stop short of it). Zero-mass groups never help reach
    the threshold, so they are never kept, not even at ``p = 1`` (RAGEN-2's code keeps every group at ``p >= 1``); a
    total of 0 keeps none (the empty prefix reaches 0).
    Equality is judged up to 1e-12 of the total (float rounding).

    >>> top_p_groups([0.5, 0.2, 0.3], 0.5).tolist(), top_p_groups([0.5, 0.2, 0.3], 0.8).tolist()
    ([0], [0, 2])
    """
    m = np.asarray(mass, dtype=np.float64).ravel()
    if not (isinstance(p, int | float) and not isinstance(p, bool) and 0.0 < p <= 1.0):
        raise CurateError(f"--top-p must be in (0, 1], got {p!r}")
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise CurateError("top_p_groups: masses must be finite and >= 0")
    order = np.argsort(-m, kind="stable")
    total = float(m.sum())
    cum = np.cumsum(m[order])
    need = p * total - _MASS_RTOL * total
    k = int(np.searchsorted(cum, need, side="left")) + 1 if need > 0 else 0
    return order[: min(k, len(order))].astype(np.int64)


def top_k_groups(mass: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """The ``k`` groups of largest mass, largest first (ties by lower index); all of them if ``k >= len(mass)``.

    >>> top_k_groups([0.5, 0.2, 0.5], 2).tolist()
    [0, 2]
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise CurateError(f"--top-k must be a positive integer, got {k!r}")
    m = np.asarray(mass, dtype=np.float64).ravel()
    return np.argsort(-m, kind="stable")[:k].astype(np.int64)


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
