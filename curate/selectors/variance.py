"""Rollout selection for GRPO: drop zero-variance prompt groups, keep the max-variance m of each group's n rollouts,
optionally keep only the highest-variance groups.

Input is a rollouts version (long format, one row per completion, grouped by ``prompt_id``, with a ``reward``).
For every prompt group:

1. **Zero-variance drop** (DAPO dynamic sampling, Yu et al., arXiv 2503.14476): a group whose rollouts all agree
   carries no GRPO advantage, so it is dropped (reason ``zero_variance``). ``--metric`` says what must agree:
   ``acc`` (the default, DAPO's ``metric=acc``: correctness, a reward > 0.5 as everywhere in curate, so all-correct
   and all-wrong groups go) or ``score`` (the reward itself). DAPO's objective constrains the number of *correct*
   outputs to 0 < |correct| < G; with a graded reward (1.0 correctness + a small format bonus) ``score`` would keep a
   group that is all correct and differs only in format, ``acc`` drops it. For binary rewards the two agree. A group
   is flat when the population std of its metric values is ``<= max(--min-std, --tolerance)``: ``--tolerance``
   (default 1e-6) is what "equal" means for float rewards, ``--min-std S`` with ``--metric score`` drops
   deliberately low-variance graded groups too.
2. **Max-variance down-sampling** (PODS, Xu, Savani, Fang, Kolter, arXiv 2504.13818): with
   ``--keep-per-prompt m``, keep the m of the group's n rollouts whose rewards have the largest variance; the other
   rows get reason ``downsampled``. PODS's lemma says an optimal subset is always the k highest plus the m - k lowest
   rewards for some k, so one sort and prefix sums of r and r**2 find it exactly in O(n log n)
   (``curate.groups.max_variance_subset``; for a fixed m the ddof does not change the subset).
3. **Variance-mass filter** (RAGEN-2 SNR-aware filtering, Wang et al., arXiv 2604.06268): the surviving groups are
   ranked by the reward std of the subset they keep (``--ddof``), largest first, ties by first appearance.
   ``--top-p P`` keeps the smallest prefix of that ranking whose summed std is ``>= P`` times the total
   (``curate.groups.top_p_groups``: the boundary group is kept; a total of 0 keeps nothing); ``--top-k K`` keeps the
   K first. The other groups get reason ``below_top_p`` / ``below_top_k``.
4. **Advantages** over the kept subset S: ``advantage = (r - mean_S) / (std_S + 1e-4)``, with ``--ddof 1`` (the
   default: the sample std, as TRL's ``GRPOTrainer`` and the PODS reference trainers compute it with
   ``Tensor.std``) or ``--ddof 0`` (the population std, sqrt(m / (m - 1)) larger advantages: 1.155x at m = 4;
   rewards [0, 0, 1, 1] give +-0.8659 with ddof 1, +-0.9998 with ddof 0). A one-rollout subset gets advantage 0. An
   ``advantage`` column already in the input is replaced.

Output: the kept rollout rows, grouped by prompt (groups in order of first appearance, rows in input order within a
group), with ``advantage``, ``variance_score`` and ``variance_rank``. ``variance_score`` (also the ``score`` in
``decisions.parquet``) is, for every row, the population variance of the rewards its prompt group keeps: the quantity
PODS maximises, and for binary rewards p(1 - p) of the kept subset (it does not depend on ``--ddof``). A dropped
group shows the variance of the subset it would have kept, so ``decisions.parquet`` says how close it came.

Departures:

- DAPO keeps generating until a batch is full of non-zero-variance groups; this works offline on a fixed rollouts
  version and only drops. DAPO also keeps one-rollout groups (their std is undefined); here a one-rollout group has
  std 0 and is dropped, because its GRPO advantage is 0. DAPO tests ``std > 0`` exactly; here within a tolerance.
- The zero-variance test looks at the whole group as generated (DAPO), not at the down-sampled subset, so whether a
  prompt survives it does not depend on ``--keep-per-prompt``; the variance-mass filter ranks what each group
  trains on, its kept subset.
- PODS recomputes the variance for every k (O(n log n + m**2)); the prefix-sum scan here is O(n log n) with the
  same result. Ties are broken deterministically (see ``max_variance_subset``).
- RAGEN-2 calls its score reward variance (RV); its code (``ragen/trainer/rollout_filter.py``, ``top_p`` strategy,
  ``linear`` mode) sums the in-group reward std (``Tensor.std``, ddof 1) and accepts a prefix once it reaches
  ``p * total - 0.01``. Here the mass is the same std (with ``--ddof``), and the boundary is exact (up to float
  rounding): a fixed 0.01 slack means a different share for every reward scale. RAGEN-2 filters each online batch;
  this filters a fixed rollouts version once. Zero-variance groups are out before the ranking (RAGEN-2's
  recommended ``include_zero=False``) unless ``--no-drop-zero-variance``.

    curate select math-rollouts --method variance --keep-per-prompt 4 --name math-pods
    curate select math-rollouts --method variance --top-p 0.9 --name math-snr
"""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError
from curate.groups import (
    DDOFS,
    DEFAULT_DDOF,
    METRICS,
    ZERO_STD_TOL,
    group_advantages,
    group_std,
    max_variance_subset,
    metric_values,
    top_k_groups,
    top_p_groups,
    zero_variance,
)
from curate.rollouts import PASS_THRESHOLD
from curate.selectors.base import Selection, Selector
from curate.store import Version


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
    """Drop zero-variance prompt groups (DAPO), keep the max-variance ``keep_per_prompt`` rollouts (PODS), and with
    ``top_p`` / ``top_k`` only the groups of highest reward std (RAGEN-2).

    Args:
        keep_per_prompt: Keep the m rollouts per prompt whose rewards vary most (PODS); none keeps every one.
        drop_zero_variance: Drop prompt groups whose rollouts all agree (DAPO); they give GRPO no advantage.
        metric: What must agree for a group to be flat: acc (correctness, reward > 0.5) or score (the reward).
        min_std: Also drop groups whose std of the metric is at most this (with --metric score).
        tolerance: Std at or below which rewards count as equal (float noise).
        ddof: Degrees of freedom of the std behind advantages and the ranking: 1 (sample) or 0 (population).
        top_p: Keep the highest-std groups whose summed std reaches this share of the total (RAGEN-2).
        top_k: Keep only this many groups, highest std first.
        seed: Accepted for a uniform interface; the method is deterministic.

    >>> curate.select("math-rollouts", method="variance", keep_per_prompt=4, name="math-pods")  # doctest: +SKIP
    """

    name = "variance"
    requires = ("prompt_id", "reward")

    def __init__(
        self,
        *,
        keep_per_prompt: int | None = None,
        drop_zero_variance: bool = True,
        metric: str = "acc",
        min_std: float = 0.0,
        tolerance: float = ZERO_STD_TOL,
        ddof: int = DEFAULT_DDOF,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int = 0,
    ):
        self.keep_per_prompt = keep_per_prompt
        self.drop_zero_variance = drop_zero_variance
        self.metric = metric
        self.min_std = min_std
        self.tolerance = tolerance
        self.ddof = ddof
        self.top_p = top_p
        self.top_k = top_k
        self.seed = seed  # accepted for a uniform interface; the method is deterministic

    def check_input(self, version: Version) -> None:
        missing = [c for c in self.requires if c not in version.columns]
        if missing:
            raise CurateError(
                f"{version.ref}: --method variance needs a rollouts version with columns prompt_id and reward "
                f"(missing {', '.join(missing)}; run `curate rollout {version.name}` first)"
            )

    def _check_params(self) -> None:
        def positive_int(v: object) -> bool:
            return not isinstance(v, bool) and isinstance(v, int | np.integer) and v >= 1

        def finite_non_negative(v: object) -> bool:
            return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and v >= 0

        if self.keep_per_prompt is not None and not positive_int(self.keep_per_prompt):
            raise CurateError(f"--keep-per-prompt must be a positive integer, got {self.keep_per_prompt!r}")
        if not finite_non_negative(self.min_std):
            raise CurateError(f"--min-std must be a finite number >= 0, got {self.min_std!r}")
        if not finite_non_negative(self.tolerance):
            raise CurateError(f"--tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if self.metric not in METRICS:
            raise CurateError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if isinstance(self.ddof, bool) or self.ddof not in DDOFS:
            raise CurateError(f"--ddof must be 0 or 1, got {self.ddof!r}")
        if self.top_p is not None and self.top_k is not None:
            raise CurateError("give --top-p or --top-k, not both")
        p = self.top_p
        if p is not None and not (finite_non_negative(p) and 0 < p <= 1):
            raise CurateError(f"--top-p must be in (0, 1], got {p!r}")
        if self.top_k is not None and not positive_int(self.top_k):
            raise CurateError(f"--top-k must be a positive integer, got {self.top_k!r}")

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
        subsets: list[np.ndarray] = []  # per group: the rows it keeps if it survives
        alive: list[int] = []  # groups past the zero-variance test, in order of first appearance
        for g, grp in enumerate(groups):
            rg = r[grp]
            local = (
                np.arange(len(grp))
                if self.keep_per_prompt is None
                else max_variance_subset(rg, int(self.keep_per_prompt))
            )
            subsets.append(grp[local])
            self.scores_[grp] = float(np.var(rg[local]))
            flat = zero_variance(
                metric_values(rg, self.metric, PASS_THRESHOLD), float(self.min_std), tolerance=float(self.tolerance)
            )
            if self.drop_zero_variance and flat:
                for i in grp:
                    self.reasons_[i] = "zero_variance"
                continue
            alive.append(g)
        # RAGEN-2's mass: the reward std of what each group trains on (its kept subset), with the advantages' ddof.
        mass = np.array([group_std(r[subsets[g]], int(self.ddof)) for g in alive], dtype=np.float64)
        self.mass_total_ = float(mass.sum())
        if self.top_p is not None or self.top_k is not None:
            if self.top_p is not None:
                picked, reason = top_p_groups(mass, float(self.top_p)), "below_top_p"
            else:
                picked, reason = top_k_groups(mass, int(self.top_k)), "below_top_k"
            keep = np.zeros(len(alive), dtype=bool)
            keep[picked] = True
            for j in np.flatnonzero(~keep):
                for i in groups[alive[j]]:
                    self.reasons_[i] = reason
            self.mass_kept_ = float(mass[keep].sum())
            alive = [g for g, k in zip(alive, keep, strict=True) if k]
        else:
            self.mass_kept_ = self.mass_total_
        kept: list[np.ndarray] = []
        for g in alive:
            sub = subsets[g]
            for i in np.setdiff1d(groups[g], sub):
                self.reasons_[i] = "downsampled"
            self.advantage_[sub] = group_advantages(r[sub], int(self.ddof))
            kept.append(sub)
        self.n_prompts_ = len(groups)
        self.kept_groups_ = [ids[g] for g in alive]
        self.order_ = np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, dtype=np.int64)
        return self

    def select(self) -> Selection:
        """Kept rows grouped by prompt in input order; reasons ``zero_variance``, ``below_top_p`` / ``below_top_k``
        and ``downsampled``."""
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
        out = {**super().stats(selection), "prompts": self.n_prompts_, "prompts_kept": len(self.kept_groups_)}
        if self.top_p is not None or self.top_k is not None:
            # the share of the surviving groups' reward-std mass the kept groups carry (RAGEN-2's p, as reached)
            out["std_mass_kept"] = self.mass_kept_ / self.mass_total_ if self.mass_total_ > 0 else 0.0
        return out
