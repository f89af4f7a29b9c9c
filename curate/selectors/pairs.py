"""Preference pairs from rollouts: per prompt, a chosen and a rejected completion, ordered by reward.

What it computes. Input is a rollouts version (``curate rollout``: one row per sampled completion, grouped by
``prompt_id``, with ``prompt``, ``completion`` and ``reward``). For every prompt:

- ``--mode max-min`` (default): one pair, the best completion against the worst. Best = highest reward, ties to the
  shorter completion (``completion_tokens`` when every row has it, else characters), then the lower ``sample``;
  worst = lowest reward with the same tie-breaks (shorter, then lower sample).
- ``--mode all``: every pair (i, j) with reward_i > reward_j and reward_i - reward_j >= ``--margin``, ordered by
  i best first, then j worst first, so a prompt's first pair is its max-min pair.

A pair needs a strict preference, a reward gap above ``curate.groups.ZERO_STD_TOL`` (the tolerance under which the
rollout selectors call rewards equal), and a gap of at least ``--margin`` (default 0). Output: one row per pair,
prompts in order of first appearance: ``id`` (``<chosen id>><rejected id>``), ``prompt_id``, ``prompt`` (the
prompt's turns), ``chosen`` and ``rejected`` (message lists: the completion as one assistant turn), ``margin``
(chosen minus rejected reward), ``chosen_reward``, ``rejected_reward``, ``chosen_id``, ``rejected_id``, and the
prompt's own columns (``answer``, ``data_source``, ``level``, pass rate ...). These are the canonical preference
columns the ``trl-dpo``, ``llamafactory-dpo`` and ``openrlhf-dpo`` exports write.

The rows are new (a pair is not a rollout), so ``decisions.parquet`` says what became of each rollout row: ``kept``
when it is in at least one pair (``pairs`` counts them), else a reason: ``no_pair`` (all of its prompt's rewards
are equal, or it is the prompt's only rollout), ``below_margin`` (no partner at least ``--margin`` apart) or
``not_extreme`` (max-min: neither the prompt's best nor its worst). ``score`` is the row's reward.

Papers: DPO (Rafailov et al., "Direct Preference Optimization", NeurIPS 2023, arXiv 2305.18290) trains on such
pairs. Best-of-n against worst-of-n from the policy's own samples ranked by a reward is the on-policy pair
construction of iterative DPO (Dong et al., "RLHF Workflow: From Reward Modeling to Online RLHF",
arXiv 2405.07863). The ``margin`` column is the reward gap a margin-aware reward-model loss uses (Llama 2, Touvron
et al., arXiv 2307.09288); TRL's ``RewardTrainer`` subtracts it in its loss whenever the column is there, OpenRLHF's
``train_rm --model.margin_loss_enable`` reads it under that name.

Departures: pairs are built once, offline, from a fixed rollouts version (iterative DPO re-samples every round).
``--mode all`` and ``--margin`` are options of this implementation, not of the papers, and so is the length
tie-break (the shorter completion on both sides).

    curate select math-rollouts --method pairs --name math-pairs
    curate select math-rollouts --method pairs --mode all --margin 0.5 --name math-pairs-all
    curate export math-pairs --format trl-dpo --out exports/dpo
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.groups import ZERO_STD_TOL
from curate.records import MESSAGES
from curate.selectors.base import Selection, Selector
from curate.selectors.rejection import (
    GENERATION_COLUMNS,
    ROLLOUT_COLUMNS,
    best_first,
    check_prompts,
    check_rollouts,
    completion_lengths,
    completions_of,
    sample_order,
    worst_first,
)
from curate.selectors.variance import prompt_groups, rewards_of
from curate.store import Version

__all__ = ["MODES", "PAIR_COLUMNS", "PairsSelector"]

MODES = ("max-min", "all")
#: the columns a pairs version holds besides the prompt's own, in output order
PAIR_COLUMNS = (
    "id",
    "prompt_id",
    "prompt",
    "chosen",
    "rejected",
    "margin",
    "chosen_reward",
    "rejected_reward",
    "chosen_id",
    "rejected_id",
)


class PairsSelector(Selector):
    """Chosen/rejected pairs per prompt: best vs worst (``max-min``) or every pair at least ``margin`` apart.

    Args:
        mode: max-min (one pair per prompt: best against worst) or all (every pair at least --margin apart).
        margin: Smallest reward gap between chosen and rejected.

    >>> curate.select("math-rollouts", method="pairs", mode="all", margin=0.5, name="math-pairs")  # doctest: +SKIP
    """

    name = "pairs"
    requires = ROLLOUT_COLUMNS

    def __init__(self, *, mode: str = "max-min", margin: float = 0.0):
        self.mode = mode
        self.margin = margin

    def check_input(self, version: Version) -> None:
        check_rollouts(version, self.name)

    def _check_params(self) -> None:
        if self.mode not in MODES:
            raise CurateError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m) or m < 0:
            raise CurateError(f"--margin must be a finite number >= 0, got {m!r}")

    def fit(self, version: Version) -> Self:
        self._check_params()
        self.check_input(version)
        self.version_ = version
        self.pairs_: list[tuple[int, int]] = []
        wanted = ["prompt_id", "reward", "completion", "completion_tokens", "sample"]
        table = version.to_arrow(columns=[c for c in wanted if c in version.columns]) if len(version) else None
        if table is None or table.num_rows == 0:
            self.scores_ = np.zeros(0, dtype=np.float64)
            self.reasons_, self.prompt_ids_ = [], []
            self.row_prompt_ = np.zeros(0, dtype=np.int64)
            self.n_pairs_ = np.zeros(0, dtype=np.int64)
            return self
        ids, groups = prompt_groups(version, table)
        r = rewards_of(version, table, ids, groups)
        lengths = completion_lengths(table, completions_of(version, table))
        check_prompts(version)
        samples = sample_order(table)
        margin = float(self.margin)
        self.scores_ = r.copy()
        self.reasons_ = [""] * len(r)
        self.row_prompt_ = np.zeros(len(r), dtype=np.int64)
        for g, grp in enumerate(groups):
            self.row_prompt_[grp] = g
            best = grp[best_first(r[grp], lengths[grp], samples[grp])]
            worst = grp[worst_first(r[grp], lengths[grp], samples[grp])]
            if r[best[0]] - r[worst[0]] <= ZERO_STD_TOL:
                for i in grp:
                    self.reasons_[i] = "no_pair"
                continue
            if self.mode == "max-min":
                found = [(int(best[0]), int(worst[0]))] if r[best[0]] - r[worst[0]] >= margin - ZERO_STD_TOL else []
            else:
                found = [
                    (int(i), int(j))
                    for i in best
                    for j in worst
                    if r[i] - r[j] > ZERO_STD_TOL and r[i] - r[j] >= margin - ZERO_STD_TOL
                ]
            used = {i for pair in found for i in pair}
            for i in grp:
                if int(i) not in used:
                    self.reasons_[i] = "below_margin" if not found or self.mode == "all" else "not_extreme"
            self.pairs_ += found
        self.prompt_ids_ = ids
        self.n_pairs_ = np.bincount(
            np.asarray([i for pair in self.pairs_ for i in pair], dtype=np.int64), minlength=len(r)
        )
        return self

    def select(self) -> Selection:
        """The rollout rows used in a pair, in order of first use; reasons ``no_pair``, ``below_margin``,
        ``not_extreme``. ``transform`` builds the pair rows themselves."""
        order = list(dict.fromkeys(i for pair in self.pairs_ for i in pair))
        return Selection(order=np.asarray(order, dtype=np.int64), reasons=list(self.reasons_))

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """One row per pair: the canonical preference columns, then the prompt's own columns."""
        chosen = pa.array([c for c, _ in self.pairs_], type=pa.int64())
        rejected = pa.array([j for _, j in self.pairs_], type=pa.int64())
        if "prompt" not in table.column_names:  # an empty version stores no columns
            table = pa.table({"id": pa.array([], pa.string()), "prompt": pa.array([], MESSAGES)})
        first, second = table.take(chosen), table.take(rejected)
        ids_c = first.column("id").cast(pa.string()).to_pylist()
        ids_r = second.column("id").cast(pa.string()).to_pylist()
        rewards = self.scores_

        def turns(rows: pa.Table) -> pa.Array:
            texts = rows.column("completion").to_pylist() if "completion" in rows.column_names else []
            return pa.array([[{"role": "assistant", "content": t}] for t in texts], MESSAGES)

        cols: dict[str, pa.Array | pa.ChunkedArray] = {
            "id": pa.array([f"{a}>{b}" for a, b in zip(ids_c, ids_r, strict=True)], pa.string()),
            "prompt_id": pa.array([self.prompt_ids_[self.row_prompt_[c]] for c, _ in self.pairs_], pa.string()),
            "prompt": first.column("prompt"),
            "chosen": turns(first),
            "rejected": turns(second),
            "margin": pa.array([rewards[c] - rewards[j] for c, j in self.pairs_], pa.float64()),
            "chosen_reward": pa.array([rewards[c] for c, _ in self.pairs_], pa.float64()),
            "rejected_reward": pa.array([rewards[j] for _, j in self.pairs_], pa.float64()),
            "chosen_id": pa.array(ids_c, pa.string()),
            "rejected_id": pa.array(ids_r, pa.string()),
        }
        # The prompt's own columns are equal on every rollout of it; the per-completion ones mean nothing on a pair.
        skip = {*PAIR_COLUMNS, *GENERATION_COLUMNS, "reward", "messages"}
        for c in first.column_names:
            if c not in skip and not c.endswith("_rank"):
                cols[c] = first.column(c)
        return pa.table(cols)

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """One row per rollout: ``id``, ``prompt_id``, ``score`` (its reward), ``kept`` (in a pair), ``pairs``,
        ``reason``."""
        return pa.table(
            {
                "id": table.column("id").cast(pa.string())
                if "id" in table.column_names
                else pa.array([], pa.string()),
                "prompt_id": pa.array([self.prompt_ids_[g] for g in self.row_prompt_], type=pa.string()),
                "score": pa.array(self.scores_, type=pa.float64()),
                "kept": pa.array(selection.kept),
                "pairs": pa.array(self.n_pairs_, type=pa.int64()),
                "reason": pa.array(selection.reasons, type=pa.string()),
            }
        )

    def stats(self, selection: Selection) -> dict[str, Any]:
        margins = [self.scores_[c] - self.scores_[j] for c, j in self.pairs_]
        out = {
            **super().stats(selection),
            "prompts": len(self.prompt_ids_),
            "prompts_paired": len({int(self.row_prompt_[c]) for c, _ in self.pairs_}),
            "pairs": len(self.pairs_),
        }
        if margins:
            out["margin_mean"] = round(float(np.mean(margins)), 6)
        return out

    @classmethod
    def summary_lines(cls, stats: dict[str, Any], params: dict[str, Any]) -> list[str]:
        """Kept/dropped count rollout rows; this line counts the pairs the version holds."""
        if "pairs" not in stats:
            return []
        mean = f", mean margin {stats['margin_mean']}" if "margin_mean" in stats else ""
        return [
            f"{stats['pairs']} pairs from {stats.get('prompts_paired', 0)} of {stats.get('prompts', 0)} prompts{mean}"
        ]
