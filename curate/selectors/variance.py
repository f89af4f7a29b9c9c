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
   O(n log n) (``curate.groups.max_variance_subset``).
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
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError
from curate.groups import group_advantages, max_variance_subset, zero_variance
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
        for grp in groups:
            rg = r[grp]
            local = (
                np.arange(len(grp))
                if self.keep_per_prompt is None
                else max_variance_subset(rg, int(self.keep_per_prompt))
            )
            sub = rg[local]
            self.scores_[grp] = float(np.var(sub))
            if self.drop_zero_variance and zero_variance(rg, float(self.min_std)):
                for i in grp:
                    self.reasons_[i] = "zero_variance"
                continue
            mask = np.zeros(len(grp), dtype=bool)
            mask[local] = True
            for i in grp[~mask]:
                self.reasons_[i] = "downsampled"
            self.advantage_[grp[local]] = group_advantages(sub)
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
