"""curate: curate post-training data for LLMs.

    >>> import curate
    >>> v = curate.import_data("../shared/data/gsm8k/test.jsonl", name="gsm8k")   # doctest: +SKIP
    >>> picked = curate.select("gsm8k", method="fisher", budget=50, name="gsm8k-fisher")  # doctest: +SKIP
    >>> picked.to_polars()                                                           # doctest: +SKIP

Nothing heavy is imported here: torch and transformers load only when an operation needs them.
"""

from __future__ import annotations

from curate._version import __version__  # noqa: E402, F401
from curate.api import diff, get_store, import_data, lineage, load, sample, save, set_store  # noqa: E402
from curate.errors import CurateError  # noqa: E402


def select(ref, *, method: str, name: str | None = None, store=None, **params):
    """Run a selector (``curate.selectors.SELECTORS``) on ``ref`` and commit the result; see ``curate select``."""
    from curate.selectors import run_selector

    return run_selector(ref, method=method, name=name, store=store, **params)


def export(ref, *, format: str, out, store=None, **options):
    """Export a version for a trainer or as plain jsonl/parquet; see ``curate export``."""
    from curate.api import export as _export

    return _export(ref, format=format, out=out, store=store, **options)


__all__ = [
    "CurateError",
    "diff",
    "export",
    "get_store",
    "import_data",
    "lineage",
    "load",
    "sample",
    "save",
    "select",
    "set_store",
]
