"""The selector base: score every row in ``fit``, choose rows in ``select``, one reason per dropped row.

A selector is a small estimator (scikit-learn ``SelectKBest`` style). ``__init__`` stores keyword
hyperparameters unchanged; ``fit(version)`` sets ``scores_`` (one float per parent row) and returns ``self``;
``select()`` turns scores into kept rows with a stable tie-break (higher score first, then lower row index).
Every budget form (``budget`` rows, ``fraction`` of rows, ``budget_tokens``) shares the one scorer.

A new method is one file with one subclass that implements ``fit``; register it in ``SELECTORS``. Its options are
described in an ``Args:`` section of its class docstring (see ``Selector``): the CLI help shows those lines.

A selector that needs a service it does not own (token cleaning fine-tunes a reference model with a trainer) names
it in ``uses``; whoever runs the selector hands it over with ``bind`` (``curate select`` passes
``train_sft=curate.train.sft``). Services are how the work is done, never what is computed: they stay out of
``get_params``, the recipe and the version id, and selectors never import the trainers themselves.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.store import Version


@dataclass
class Selection:
    """The outcome of ``select()``: kept parent rows in output order, and a reason for every dropped one."""

    order: np.ndarray
    reasons: list[str]
    columns: dict[str, list[Any]] = field(default_factory=dict)  # extra columns, aligned with ``order``

    @property
    def kept(self) -> np.ndarray:
        mask = np.zeros(len(self.reasons), dtype=bool)
        mask[self.order] = True
        return mask


def check_budget(budget: int | None, fraction: float | None, budget_tokens: int | None, *, required: bool) -> None:
    given = [
        n
        for n, v in (("--budget", budget), ("--fraction", fraction), ("--budget-tokens", budget_tokens))
        if v is not None
    ]
    if len(given) > 1:
        raise CurateError(f"give one budget form, not {' and '.join(given)}")
    if required and not given:
        raise CurateError("give a budget: --budget K, --fraction F or --budget-tokens T")
    if budget is not None and (not isinstance(budget, int | np.integer) or budget < 0):
        raise CurateError(f"--budget must be a non-negative integer, got {budget!r}")
    if fraction is not None and not 0.0 <= float(fraction) <= 1.0:
        raise CurateError(f"--fraction must be in [0, 1], got {fraction!r}")
    if budget_tokens is not None and (not isinstance(budget_tokens, int | np.integer) or budget_tokens < 0):
        raise CurateError(f"--budget-tokens must be a non-negative integer, got {budget_tokens!r}")


def take_by_budget(
    ranked: np.ndarray,
    *,
    n_rows: int,
    budget: int | None = None,
    fraction: float | None = None,
    budget_tokens: int | None = None,
    tokens: np.ndarray | None = None,
) -> np.ndarray:
    """The prefix of ``ranked`` a budget allows. A token budget skips rows that would overflow it and goes on."""
    if budget is not None:
        return ranked[: min(int(budget), len(ranked))]
    if fraction is not None:
        return ranked[: min(int(round(float(fraction) * n_rows)), len(ranked))]
    if budget_tokens is not None:
        if tokens is None:
            raise CurateError("--budget-tokens needs token counts for the rows")
        keep, used = [], 0
        for i in ranked:
            if used + int(tokens[i]) <= budget_tokens:
                keep.append(i)
                used += int(tokens[i])
        return np.asarray(keep, dtype=np.int64)
    return ranked


def rank_desc(scores: np.ndarray) -> np.ndarray:
    """Indices by score, highest first; ties keep row order (stable), NaN last."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-s, kind="stable")


#: where per-row scoring runs (``--engine local|ray`` ...): never what it computes, so never part of a recipe id
ENGINE_PARAMS = ("engine", "ray_address", "num_workers", "gpus_per_worker")
#: how the scoring is run, not what it computes (the per-row caches ignore them too): kept out of recipe ids
EXECUTION_PARAMS = (*ENGINE_PARAMS, "batch_tokens")


class Selector(ABC):
    """Base class; subclasses set ``name`` and implement ``fit``.

    Every option (an ``__init__`` parameter) is described in an ``Args:`` section of the selector's class
    docstring: one ``name: what it does`` line per option, a continuation indented under it. ``curate --help`` and
    ``curate methods`` show these lines (``curate.options.arg_docs``). Options many selectors share are described
    once below; a selector's own entry for the same name replaces the shared one.

    Args:
        budget: Keep this many rows, highest score first.
        fraction: Keep this fraction of the rows (0 to 1), highest score first.
        budget_tokens: Keep rows, highest score first, while their response tokens fit this total.
        seed: Random seed (ties, projections, sampling): the same seed keeps the same rows.
        model: Model alias or path that scores the rows (see `curate models`).
        batch_tokens: Tokens per scoring batch (memory and speed only; not part of the version id).
        engine: Where per-row scoring runs: local (this process) or ray; not part of the version id.
        ray_address: Ray cluster address for --engine ray (none: start or join a local Ray).
        num_workers: Ray workers, each loading the model once (--engine ray).
        gpus_per_worker: GPUs per Ray worker (--engine ray).
    """

    name: ClassVar[str]
    #: columns the input version must have
    requires: ClassVar[tuple[str, ...]] = ()
    #: services ``fit`` may call, handed over with ``bind`` (``"train_sft"``: a function like ``curate.train.sft``)
    uses: ClassVar[tuple[str, ...]] = ()
    #: options added after versions were made without them: left out of ``get_params`` while at their default, so
    #: those versions keep their ids
    added_params: ClassVar[tuple[str, ...]] = ()
    #: options read only in some configurations: option -> (what uses it, in words; a test on the selector). Given
    #: away from its default where the test fails, it would enter the recipe id and the lineage and change nothing,
    #: so it is refused (``--method random --model M`` without ``--budget-tokens``)
    only_with: ClassVar[dict[str, tuple[str, Callable[[Any], bool]]]] = {}

    scores_: np.ndarray
    version_: Version
    services_: dict[str, Any]

    @abstractmethod
    def fit(self, version: Version) -> Self:
        """Compute ``self.scores_`` (one float per row of ``version``) and return ``self``."""

    # ------------------------------------------------------------------ shared machinery
    @property
    def prefix(self) -> str:
        return self.name.replace("-", "_")

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to ``__init__``, for the recipe hash and the lineage; an option this
        configuration does not read (``only_with``) is refused here, before anything runs."""
        sig = inspect.signature(type(self).__init__)
        for k, (users, used) in self.only_with.items():
            if k in sig.parameters and getattr(self, k, None) != sig.parameters[k].default and not used(self):
                flag = "--" + k.replace("_", "-")
                raise CurateError(f"--method {self.name}: {flag} is only read with {users}; leave it out")
        return {
            k: getattr(self, k)
            for k, p in sig.parameters.items()
            if k != "self"
            and k not in EXECUTION_PARAMS
            and hasattr(self, k)
            and not (k in self.added_params and getattr(self, k) == p.default)
        }

    def bind(self, **services: Any) -> Self:
        """Hand over services named in ``uses``; returns ``self``. They never enter ``get_params`` or the recipe.

        >>> TokenCleanSelector(reference_from="warmup").bind(train_sft=curate.train.sft)  # doctest: +SKIP
        """
        unknown = sorted(k for k in services if k not in self.uses)
        if unknown:
            uses = ", ".join(self.uses) or "none"
            raise CurateError(f"--method {self.name}: unknown service(s) {', '.join(unknown)} (it uses: {uses})")
        self.services_ = {**getattr(self, "services_", {}), **services}
        return self

    def service(self, name: str) -> Any | None:
        """The bound service ``name`` (one of ``uses``), or None when nobody bound it."""
        return getattr(self, "services_", {}).get(name)

    def engine_kwargs(self) -> dict[str, Any]:
        """The engine options this selector was given, to pass on to the per-row scoring stage."""
        return {k: getattr(self, k) for k in ENGINE_PARAMS if hasattr(self, k)}

    def identity(self) -> dict[str, Any]:
        """What else determines the result (model identities): part of the version id."""
        return {}

    def extra_parents(self) -> list[str]:
        """Refs of other versions the result depends on (besides the input): lineage and recipe id."""
        return []

    def check_input(self, version: Version) -> None:
        missing = [c for c in self.requires if c not in version.columns]
        if missing:
            raise CurateError(
                f"{version.ref}: --method {self.name} needs column(s) {', '.join(missing)} "
                f"(the version has {', '.join(version.columns)})"
            )

    def token_counts(self) -> np.ndarray | None:
        """Per-row token counts for ``budget_tokens``; selectors that tokenise override this."""
        return None

    def select(self) -> Selection:
        """Keep rows by score within the budget; the rest get reason ``below_budget``."""
        ranked = rank_desc(self.scores_)
        keep = take_by_budget(
            ranked,
            n_rows=len(self.scores_),
            budget=getattr(self, "budget", None),
            fraction=getattr(self, "fraction", None),
            budget_tokens=getattr(self, "budget_tokens", None),
            tokens=self.token_counts() if getattr(self, "budget_tokens", None) is not None else None,
        )
        reasons = ["below_budget"] * len(self.scores_)
        for i in keep:
            reasons[i] = ""
        return Selection(order=np.asarray(keep, dtype=np.int64), reasons=reasons)

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Kept rows in output order, plus ``<method>_score`` and ``<method>_rank`` (1 = first); a selection of a
        selection made by the same method replaces those columns (a Parquet file cannot hold a name twice)."""
        out = table.take(pa.array(selection.order, type=pa.int64()))
        mine = {f"{self.prefix}_score", f"{self.prefix}_rank", *selection.columns}
        out = out.drop_columns([c for c in out.column_names if c in mine])
        out = out.append_column(
            f"{self.prefix}_score", pa.array(self.scores_[selection.order].astype(np.float64), type=pa.float64())
        )
        out = out.append_column(f"{self.prefix}_rank", pa.array(np.arange(1, len(selection.order) + 1), pa.int64()))
        for col, values in selection.columns.items():
            out = out.append_column(col, pa.array(values))
        return out

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """One row per parent row: id, score, kept, reason."""
        return pa.table(
            {
                "id": table.column("id"),
                "score": pa.array(self.scores_.astype(np.float64), type=pa.float64()),
                "kept": pa.array(selection.kept),
                "reason": pa.array(selection.reasons, type=pa.string()),
            }
        )

    @classmethod
    def summary_lines(cls, stats: dict[str, Any], params: dict[str, Any]) -> list[str]:
        """Lines the CLI prints after a selection's one-line summary (e.g. decontam's leaks with ``--report``)."""
        return []

    def stats(self, selection: Selection) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in selection.reasons:
            if r:
                reasons[r] = reasons.get(r, 0) + 1
        return {
            "kept": int(len(selection.order)),
            "dropped": int(len(selection.reasons) - len(selection.order)),
            "reasons": reasons,
        }


class FilterSelector(Selector):
    """A selector that drops rows for a stated reason (a duplicate, a benchmark leak) and keeps every other row in
    input order, its columns unchanged. ``fit`` sets ``reasons_`` ("" = kept) besides ``scores_``."""

    reasons_: list[str]

    def check_text_columns(self, version: Version) -> None:
        """The rows must carry text to compare: a messages, prompt or completion column."""
        if not {"messages", "prompt", "completion"} & set(version.columns):
            raise CurateError(
                f"{version.ref}: --method {self.name} needs a messages, prompt or completion column "
                f"(the version has {', '.join(version.columns)})"
            )

    def select(self) -> Selection:
        """Keep the rows with no reason, in input order."""
        keep = np.flatnonzero(np.array([r == "" for r in self.reasons_], dtype=bool))
        return Selection(order=keep.astype(np.int64), reasons=list(self.reasons_))

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """The kept rows, columns unchanged (the evidence is in decisions.parquet)."""
        return table.take(pa.array(selection.order, type=pa.int64()))
