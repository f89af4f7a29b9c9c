"""Rejection sampling (best-of-n): from rollouts, keep each prompt's top-k completions by reward as SFT rows.

What it computes. Input is a rollouts version (``curate rollout``: one row per sampled completion, grouped by
``prompt_id``, with ``prompt``, ``completion`` and ``reward``). Within each prompt the completions are ranked best
first: reward descending, then the shorter completion (``completion_tokens`` when every row has it, else characters),
then ``sample`` order (else row order). The first ``--k`` completions are kept (``--k none`` keeps every one);
with ``--min-reward R`` only completions with reward >= R are eligible, so a prompt may keep fewer than k or none.
Dropped rows get reason ``below_min_reward`` (reward < R, whatever its rank) or ``below_k`` (eligible but ranked
after the first k).

Output: one SFT row per kept completion, grouped by prompt (prompts in order of first appearance, rows best first
within a prompt), with ``messages`` = the prompt's turns + one assistant turn holding the completion. The row keeps its
``id``, ``prompt``, ``prompt_id``, ``reward``, ``answer``, ``data_source`` and the prompt's other columns; the
per-completion generation columns (``sample``, ``completion``, token counts, ``finish_reason``, ``advantage``) are
dropped, and so are ``*_rank`` columns of earlier selections (an export would otherwise order the rows by them).
``decisions.parquet`` has one row per rollout: ``id``, ``prompt_id``, ``score`` (= the reward), ``kept``, ``reason``.

Papers: RAFT (Dong et al., "RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment", TMLR 2023,
arXiv 2304.06767): sample n per prompt, keep the best by reward, fine-tune on them. The threshold form is rejection
sampling fine-tuning for math (Yuan et al., "Scaling Relationship on Learning Mathematical Reasoning with Large
Language Models", arXiv 2308.01825: keep the correct paths, ``--min-reward 1 --k none``).

Departures: one round, offline, from a fixed rollouts version (RAFT iterates sample -> rank -> fine-tune). RFT keeps
*distinct* correct reasoning paths (deduplicated by their equations); here identical completions are all kept (run
``--method dedup`` on the result to drop repeats). Ties are broken towards the shorter completion, a choice of this
implementation (the papers do not say).

    curate select math-rollouts --method rejection --k 1 --min-reward 1 --name math-best-of-n
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError
from curate.records import MESSAGES
from curate.selectors.base import Selection, Selector
from curate.selectors.variance import prompt_groups, rewards_of
from curate.store import Version

__all__ = [
    "GENERATION_COLUMNS",
    "ROLLOUT_COLUMNS",
    "RejectionSelector",
    "best_first",
    "check_prompts",
    "check_rollouts",
    "completion_lengths",
    "completions_of",
    "sample_order",
    "worst_first",
]

#: columns that describe how one completion was sampled: they mean nothing on an SFT row or a preference pair
GENERATION_COLUMNS = ("sample", "completion", "completion_tokens", "prompt_tokens", "finish_reason", "advantage")
#: what a rollouts version must have for the rollout-to-training-data selectors
ROLLOUT_COLUMNS = ("prompt_id", "reward", "prompt", "completion")


def check_rollouts(version: Version, method: str) -> None:
    """Refuse a version that is not a rollouts version, naming what is missing and how to make one."""
    missing = [c for c in ROLLOUT_COLUMNS if c not in version.columns]
    if missing:
        raise CurateError(
            f"{version.ref}: --method {method} needs a rollouts version with columns {', '.join(ROLLOUT_COLUMNS)} "
            f"(missing {', '.join(missing)}; run `curate rollout {version.name}` first)"
        )


def check_prompts(version: Version) -> None:
    """Refuse a rollout row whose ``prompt`` is null or has no turn, naming the row: its SFT row or preference pair
    would have no question (an SFT conversation opening with the answer, a pair no preference format can write)."""
    col = version.to_arrow(columns=["prompt"]).column("prompt")
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise CurateError(f"{version.ref}: field 'prompt' must be a list of {{role, content}} turns, got {col.type}")
    turns = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    if (turns == 0).any():
        row = int(np.flatnonzero(turns == 0)[0])
        rid = version.to_arrow(columns=["id"]).column("id")[row].as_py() if "id" in version.columns else row
        raise CurateError(f"{version.ref}: row {row} (id {rid}): field 'prompt' is null or empty")


def completions_of(version: Version, table: pa.Table) -> list[str]:
    """The ``completion`` column as text; a null completion is an error naming its row.

    >>> completions_of(v, pa.table({"completion": ["a", "bc"]}))   # doctest: +SKIP
    ['a', 'bc']
    """
    col = table.column("completion")
    if col.null_count:
        row = col.is_null().to_pylist().index(True)
        raise CurateError(f"{version.ref}: row {row}: field 'completion' is null")
    return [str(c) for c in col.to_pylist()]


def completion_lengths(table: pa.Table, texts: list[str]) -> np.ndarray:
    """Each completion's length for tie-breaks: ``completion_tokens`` when every row has it, else characters.

    >>> completion_lengths(pa.table({"x": [0, 0]}), ["ab", "c"]).tolist()
    [2, 1]
    """
    if "completion_tokens" in table.column_names and table.column("completion_tokens").null_count == 0:
        return np.asarray(table.column("completion_tokens").to_pylist(), dtype=np.int64)
    return np.asarray([len(t) for t in texts], dtype=np.int64)


def sample_order(table: pa.Table) -> np.ndarray:
    """The ``sample`` index of every row (its row position where the column is missing or has gaps)."""
    if "sample" in table.column_names and table.column("sample").null_count == 0:
        col = table.column("sample")
        if pa.types.is_integer(col.type):
            return np.asarray(col.to_pylist(), dtype=np.int64)
    return np.arange(table.num_rows, dtype=np.int64)


def best_first(rewards: np.ndarray, lengths: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Positions ranked best first: reward descending, then shorter, then lower sample index, then position.

    >>> best_first(np.array([1.0, 0.0, 1.0]), np.array([5, 1, 3]), np.array([0, 1, 2])).tolist()
    [2, 0, 1]
    """
    return np.lexsort((np.arange(len(rewards)), samples, lengths, -np.asarray(rewards, dtype=np.float64)))


def worst_first(rewards: np.ndarray, lengths: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Positions ranked worst first: reward ascending, then shorter, then lower sample index, then position.

    >>> worst_first(np.array([1.0, 0.0, 0.0]), np.array([5, 4, 3]), np.array([0, 1, 2])).tolist()
    [2, 1, 0]
    """
    return np.lexsort((np.arange(len(rewards)), samples, lengths, np.asarray(rewards, dtype=np.float64)))


def _stale_ranks(columns: list[str]) -> list[str]:
    # A rank column of an earlier selection would make an export re-order these rows by it (``curriculum_order``).
    return [c for c in columns if c.endswith("_rank")]


class RejectionSelector(Selector):
    """Best-of-n: each prompt's top-k completions by reward (ties: shorter, then sample order) as SFT rows.

    Args:
        k: Completions kept per prompt, best reward first; none keeps every eligible one.
        min_reward: Only completions with at least this reward are eligible (a prompt may keep none).

    >>> curate.select("math-rollouts", method="rejection", k=1, min_reward=1.0, name="math-bon")  # doctest: +SKIP
    """

    name = "rejection"
    requires = ROLLOUT_COLUMNS

    def __init__(self, *, k: int | None = 1, min_reward: float | None = None):
        self.k = k
        self.min_reward = min_reward

    def check_input(self, version: Version) -> None:
        check_rollouts(version, self.name)

    def _check_params(self) -> None:
        k = self.k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
            raise CurateError(f"--k must be a positive integer (or none for every completion), got {k!r}")
        m = self.min_reward
        if m is not None and (isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m)):
            raise CurateError(f"--min-reward must be a finite number, got {m!r}")

    def fit(self, version: Version) -> Self:
        self._check_params()
        self.check_input(version)
        self.version_ = version
        wanted = ["prompt_id", "reward", "completion", "completion_tokens", "sample"]
        table = version.to_arrow(columns=[c for c in wanted if c in version.columns]) if len(version) else None
        if table is None or table.num_rows == 0:
            self.scores_ = np.zeros(0, dtype=np.float64)
            self.reasons_, self.order_, self.prompt_ids_ = [], np.zeros(0, dtype=np.int64), []
            self.row_prompt_ = np.zeros(0, dtype=np.int64)
            return self
        ids, groups = prompt_groups(version, table)
        r = rewards_of(version, table, ids, groups)
        lengths = completion_lengths(table, completions_of(version, table))
        check_prompts(version)
        samples = sample_order(table)
        self.scores_ = r.copy()
        self.reasons_ = [""] * len(r)
        self.row_prompt_ = np.zeros(len(r), dtype=np.int64)
        order: list[int] = []
        for g, grp in enumerate(groups):
            self.row_prompt_[grp] = g
            taken = 0
            for i in grp[best_first(r[grp], lengths[grp], samples[grp])]:
                if self.min_reward is not None and r[i] < float(self.min_reward):
                    self.reasons_[i] = "below_min_reward"
                elif self.k is not None and taken >= int(self.k):
                    self.reasons_[i] = "below_k"
                else:
                    order.append(int(i))
                    taken += 1
        self.prompt_ids_ = ids
        self.order_ = np.asarray(order, dtype=np.int64)
        return self

    def select(self) -> Selection:
        """Kept rows grouped by prompt, best first; reasons ``below_min_reward`` and ``below_k``."""
        return Selection(order=self.order_, reasons=list(self.reasons_))

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """The kept rollouts as SFT rows: ``messages`` = prompt + the completion as the assistant turn."""
        out = table.take(pa.array(selection.order, type=pa.int64()))
        if "prompt" not in out.column_names:  # an empty version stores no columns
            return pa.table({"id": pa.array([], pa.string()), "messages": pa.array([], MESSAGES)})
        messages = [
            [{"role": m["role"], "content": m["content"]} for m in (prompt or [])]
            + [{"role": "assistant", "content": completion}]
            for prompt, completion in zip(
                out.column("prompt").to_pylist(), out.column("completion").to_pylist(), strict=True
            )
        ]
        drop = [c for c in out.column_names if c in (*GENERATION_COLUMNS, "messages")]
        out = out.drop_columns(drop + _stale_ranks(out.column_names))
        at = out.column_names.index("id") + 1 if "id" in out.column_names else 0
        return out.add_column(at, "messages", pa.array(messages, MESSAGES))

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """One row per rollout: ``id``, ``prompt_id``, ``score`` (its reward), ``kept``, ``reason``."""
        return pa.table(
            {
                "id": table.column("id").cast(pa.string())
                if "id" in table.column_names
                else pa.array([], pa.string()),
                "prompt_id": pa.array([self.prompt_ids_[g] for g in self.row_prompt_], type=pa.string()),
                "score": pa.array(self.scores_, type=pa.float64()),
                "kept": pa.array(selection.kept),
                "reason": pa.array(selection.reasons, type=pa.string()),
            }
        )

    def stats(self, selection: Selection) -> dict[str, Any]:
        kept_prompts = {int(self.row_prompt_[i]) for i in selection.order}
        return {**super().stats(selection), "prompts": len(self.prompt_ids_), "prompts_kept": len(kept_prompts)}
