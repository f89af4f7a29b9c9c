"""Rollout selection for GRPO: drop zero-variance prompt groups, keep the max-variance m of each group's n rollouts.

Input is a rollouts version (long format, one row per completion, grouped by ``prompt_id``, with a ``reward``).
For every prompt group:

1. **Zero-variance drop** (DAPO dynamic sampling, Yu et al., arXiv 2503.14476): a group whose rewards all agree
   carries no GRPO advantage, so it is dropped (reason ``zero_variance``). With graded rewards ``--min-std S``
   drops every group whose population std is ``<= S``; with the default ``S = 0`` only groups with std exactly 0
   (up to 1e-12) go.
2. **Max-variance down-sampling** (PODS, Xu, Savani, Fang, Kolter, arXiv 2504.13818): with
   ``--keep-per-prompt m``, keep the m of the group's n rollouts whose rewards have the largest population
   variance; the other rows get reason ``downsampled``. PODS's lemma says an optimal subset is always the k
   highest plus the m - k lowest rewards for some k, so one sort and prefix sums of r and r**2 find it exactly in
   O(n log n) (``max_variance_subset``).
3. **Advantages** over the kept subset S, the PODS convention: ``advantage = (r - mean_S) / (std_S + 1e-4)`` with the
   population std. An ``advantage`` column already in the input is replaced.

Output: the kept rollout rows, grouped by prompt (groups in order of first appearance, rows in input order within a
group), with ``advantage``, ``variance_score`` and ``variance_rank``. ``variance_score`` (also the ``score`` in
``decisions.parquet``) is, for every row, the population variance of the rewards its prompt group keeps: the quantity
PODS maximises, and for binary rewards p(1 - p) of the kept subset. A dropped zero-variance group shows the
variance of the subset it would have kept, so ``decisions.parquet`` says how close it came.

Departures:

- DAPO keeps generating until a batch is full of non-zero-variance groups; this works offline on a fixed rollouts
  version and only drops. DAPO also keeps one-rollout groups (their std is undefined); here a one-rollout group has
  std 0 and is dropped, because its GRPO advantage is 0.
- The zero-variance test looks at the whole group as generated (DAPO), not at the down-sampled subset, so whether a
  prompt survives does not depend on ``--keep-per-prompt``.
- PODS recomputes the variance for every k (O(n log n + m**2)); the prefix-sum scan here is O(n log n) with the
  same result. Ties are broken deterministically (see ``max_variance_subset``).

    curate select math-rollouts --method variance --keep-per-prompt 4 --name math-pods
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError
from curate.selectors.base import Selection, Selector
from curate.store import Version

#: PODS adds this to the std so a near-constant subset does not blow advantages up.
ADV_EPS = 1e-4
#: "std == 0" for float rewards: sums of floats like 0.1 leave rounding noise far below this.
ZERO_STD_TOL = 1e-12


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


def _population_std(values: np.ndarray) -> float:
    return float(np.std(values)) if values.size else 0.0


def prompt_groups(version: Version, table: pa.Table) -> tuple[list[str], list[np.ndarray]]:
    """Prompt ids in order of first appearance, and each group's row indices in input order.

    >>> prompt_groups(v, pa.table({"prompt_id": ["b", "a", "b"]}))   # doctest: +SKIP
    (['b', 'a'], [array([0, 2]), array([1])])
    """
    col = table.column("prompt_id")
    if col.null_count:
        row = int(pc.index(pc.is_null(col), True).as_py())
        raise CurateError(f"{version.ref}: row {row}: field 'prompt_id' is null")
    pids = np.asarray(col.cast(pa.string()).to_pylist(), dtype=object)
    if pids.size == 0:
        return [], []
    uniq, first, inverse = np.unique(pids, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    g = rank[inverse]
    rows = np.argsort(g, kind="stable")
    bounds = np.cumsum(np.bincount(g, minlength=len(uniq)))[:-1]
    groups = np.split(rows.astype(np.int64), bounds)
    ids = [str(pids[grp[0]]) for grp in groups]
    return ids, groups


def rewards_of(version: Version, table: pa.Table, prompt_ids: list[str], groups: list[np.ndarray]) -> np.ndarray:
    """The ``reward`` column as float64; a null or NaN reward is an error naming its prompt id and row.

    >>> rewards_of(v, t, *prompt_groups(v, t))                          # doctest: +SKIP
    array([1., 0., 1.])
    """
    col = table.column("reward")
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
        raise CurateError(f"{version.ref}: field 'reward' must be numeric, got {col.type}")
    r = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = ~np.isfinite(r)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        pid = next(p for p, grp in zip(prompt_ids, groups, strict=True) if row in grp)
        what = "null" if col[row].as_py() is None else str(r[row])
        raise CurateError(f"{version.ref}: prompt_id {pid!r} (row {row}): field 'reward' is {what}")
    return r


class VarianceSelector(Selector):
    """Drop zero-variance prompt groups (DAPO) and keep the max-variance ``keep_per_prompt`` rollouts (PODS).

    >>> curate.select("math-rollouts", method="variance", keep_per_prompt=4, name="math-pods")  # doctest: +SKIP
    """

    name = "variance"
    requires = ("prompt_id", "reward")

    def __init__(
        self,
        *,
        keep_per_prompt: int | None = None,
        drop_zero_variance: bool = True,
        min_std: float = 0.0,
        seed: int = 0,
    ):
        self.keep_per_prompt = keep_per_prompt
        self.drop_zero_variance = drop_zero_variance
        self.min_std = min_std
        self.seed = seed  # accepted for a uniform interface; the method is deterministic

    def check_input(self, version: Version) -> None:
        missing = [c for c in self.requires if c not in version.columns]
        if missing:
            raise CurateError(
                f"{version.ref}: --method variance needs a rollouts version with columns prompt_id and reward "
                f"(missing {', '.join(missing)}; run `curate rollout {version.name}` first)"
            )

    def _check_params(self) -> None:
        m = self.keep_per_prompt
        if m is not None and (isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 1):
            raise CurateError(f"--keep-per-prompt must be a positive integer, got {m!r}")
        if not isinstance(self.min_std, int | float) or not math.isfinite(self.min_std) or self.min_std < 0:
            raise CurateError(f"--min-std must be a finite number >= 0, got {self.min_std!r}")

    def fit(self, version: Version) -> Self:
        self._check_params()
        self.check_input(version)
        self.version_ = version
        table = version.to_arrow(columns=["prompt_id", "reward"])
        ids, groups = prompt_groups(version, table)
        r = rewards_of(version, table, ids, groups)
        n_rows = len(r)
        self.scores_ = np.zeros(n_rows, dtype=np.float64)
        self.advantage_ = np.full(n_rows, np.nan, dtype=np.float64)
        self.reasons_ = [""] * n_rows
        kept: list[np.ndarray] = []
        threshold = max(float(self.min_std), ZERO_STD_TOL)
        for grp in groups:
            rg = r[grp]
            local = (
                np.arange(len(grp))
                if self.keep_per_prompt is None
                else max_variance_subset(rg, int(self.keep_per_prompt))
            )
            sub = rg[local]
            self.scores_[grp] = float(np.var(sub))
            if self.drop_zero_variance and _population_std(rg) <= threshold:
                for i in grp:
                    self.reasons_[i] = "zero_variance"
                continue
            mask = np.zeros(len(grp), dtype=bool)
            mask[local] = True
            for i in grp[~mask]:
                self.reasons_[i] = "downsampled"
            self.advantage_[grp[local]] = (sub - sub.mean()) / (_population_std(sub) + ADV_EPS)
            kept.append(grp[local])
        self.n_prompts_ = len(groups)
        self.kept_groups_ = [ids[k] for k, grp in enumerate(groups) if self.reasons_[grp[0]] != "zero_variance"]
        self.order_ = np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, dtype=np.int64)
        return self

    def select(self) -> Selection:
        """Kept rows grouped by prompt in input order; reasons ``zero_variance`` and ``downsampled``."""
        return Selection(
            order=self.order_,
            reasons=list(self.reasons_),
            columns={"advantage": self.advantage_[self.order_].tolist()},
        )

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        drop = [c for c in ("advantage", f"{self.prefix}_score", f"{self.prefix}_rank") if c in table.column_names]
        out = super().transform(table.drop_columns(drop), Selection(selection.order, selection.reasons))
        return out.append_column("advantage", pa.array(selection.columns["advantage"], type=pa.float64()))

    def stats(self, selection: Selection) -> dict:
        return {**super().stats(selection), "prompts": self.n_prompts_, "prompts_kept": len(self.kept_groups_)}
