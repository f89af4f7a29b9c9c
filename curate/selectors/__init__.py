"""Selectors: one file per method, and the one dict that maps a method name to its class.

curate select REF --method NAME --name OUT [--budget K | --fraction F | --budget-tokens T] [--seed S]
"""

from __future__ import annotations

import time
from typing import Any

from curate.errors import CurateError
from curate.options import params_of
from curate.selectors.base import Selection, Selector
from curate.selectors.decontam import DecontamSelector
from curate.selectors.dedup import DedupSelector
from curate.selectors.difficulty import DifficultySelector
from curate.selectors.facility import FacilitySelector
from curate.selectors.fisher import FisherSelector
from curate.selectors.ifd import IFDSelector
from curate.selectors.kcenter import KCenterSelector
from curate.selectors.length import LengthSelector
from curate.selectors.pairs import PairsSelector
from curate.selectors.perplexity import PerplexitySelector
from curate.selectors.random import RandomSelector
from curate.selectors.rds import RDSSelector
from curate.selectors.rejection import RejectionSelector
from curate.selectors.token_clean import TokenCleanSelector
from curate.selectors.variance import VarianceSelector

# The only place a method name maps to a class: the CLI, the Python API and the YAML pipelines all read it.
SELECTORS: dict[str, type[Selector]] = {
    "random": RandomSelector,
    "fisher": FisherSelector,
    "variance": VarianceSelector,
    "difficulty": DifficultySelector,
    "token-clean": TokenCleanSelector,
    "dedup": DedupSelector,
    "decontam": DecontamSelector,
    "length": LengthSelector,
    "ifd": IFDSelector,
    "perplexity": PerplexitySelector,
    "kcenter": KCenterSelector,
    "facility": FacilitySelector,
    "rds": RDSSelector,
    "rejection": RejectionSelector,
    "pairs": PairsSelector,
}


def register(cls: type[Selector]) -> type[Selector]:
    """Add a selector class under its ``name`` (a plugin's; built-in ones are listed above)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise CurateError(f"selector {cls.__name__}: set a class attribute `name`")
    if name in SELECTORS:
        raise CurateError(f"selector {name!r} is already registered")
    SELECTORS[name] = cls
    return cls


def get_selector(method: str) -> type[Selector]:
    try:
        return SELECTORS[method]
    except KeyError:
        raise CurateError(f"unknown method {method!r} (available: {', '.join(sorted(SELECTORS))})") from None


def make_selector(method: str, **params: Any) -> Selector:
    cls = get_selector(method)
    accepted = [p.name for p in params_of(cls)]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise CurateError(
            f"--method {method}: unknown option(s) {', '.join(unknown)} (accepted: {', '.join(accepted)})"
        )
    return cls(**params)


def run_selector(
    ref,
    *,
    method: str,
    name: str | None = None,
    store=None,
    services: dict[str, Any] | None = None,
    allow_empty: bool = True,
    **params: Any,
):
    """Fit a selector on ``ref``, select, and commit the kept rows with ``decisions.parquet``.

    ``services`` maps service names to callables (``{"train_sft": curate.train.sft}``); the selector gets those it
    ``uses`` through ``bind``. They decide how the work is done, not the recipe: the version id ignores them.
    ``allow_empty=False`` refuses, before anything is committed, a selection that keeps no row of a non-empty input.

    >>> v = curate.select("sample-sft", method="random", budget=50, name="sft-rand")   # doctest: +SKIP
    """
    from curate.store import get_store

    s = get_store(store)
    version = s.load(ref)
    selector = make_selector(method, **params)
    selector.bind(**{k: v for k, v in (services or {}).items() if k in selector.uses})
    selector.check_input(version)
    name = name or f"{version.name}-{method}"
    op = {"name": "select", "method": method, "params": selector.get_params(), **selector.identity()}
    # A selector that builds on other versions (e.g. a warm-up set that trains a reference model) names them in
    # ``extra_parents()``: they join the lineage and the recipe id.
    parents = [version, *(s.load(p) for p in selector.extra_parents())]

    def compute() -> dict[str, Any]:
        t0 = time.perf_counter()
        selector.fit(version)
        t1 = time.perf_counter()
        selection = selector.select()
        table = version.to_arrow()
        kept = selector.transform(table, selection)
        stats = selector.stats(selection)
        if not allow_empty and kept.num_rows == 0 and len(version):
            raise empty_selection(method, len(version), stats)
        return {
            "table": kept,
            "decisions": selector.decisions(table, selection),
            "stats": stats,
            "extra": getattr(selector, "manifest_extra_", None),  # e.g. the tokenizer and chat template of labels
            "timings": {"fit_s": round(t1 - t0, 4), "select_s": round(time.perf_counter() - t1, 4)},
        }

    return s.materialise(name, parents, op, compute)


def empty_selection(method: str, rows: int, stats: dict[str, Any], ref: str | None = None) -> CurateError:
    """The one-line error for a selection that kept none of ``rows`` rows (``stats``: the selection's)."""
    why = ", ".join(f"{k}: {n}" for k, n in (stats.get("reasons") or {}).items()) or "no reason recorded"
    where = f" (it is {ref})" if ref else ""
    return CurateError(
        f"--method {method} kept 0 of {rows} rows ({why}); raise the budget, or pass --allow-empty to accept an "
        f"empty selection{where}"
    )


__all__ = ["SELECTORS", "Selection", "Selector", "get_selector", "make_selector", "register", "run_selector"]
