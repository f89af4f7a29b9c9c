"""curate: curate post-training data for LLMs.

    >>> import curate
    >>> v = curate.import_data("../shared/data/gsm8k/test.jsonl", name="gsm8k")   # doctest: +SKIP
    >>> picked = curate.select("gsm8k", method="fisher", budget=50, name="gsm8k-fisher")  # doctest: +SKIP
    >>> picked.to_polars()                                                           # doctest: +SKIP

Every function here is an operation of ``curate.ops.OPS`` (the same ones the CLI and the recipes run) or a read
of the store. Nothing heavy is imported: torch and transformers load only when an operation needs them.
"""

from __future__ import annotations

from curate._version import __version__
from curate.errors import CurateError
from curate.ops import (
    as_table,
    compare,
    diff,
    export,
    import_data,
    load,
    rollout,
    sample,
    save,
    select,
    synth,
    train,
    train_grpo,
    train_sft,
)
from curate.store import get_store, lineage, set_store

__all__ = [
    "CurateError",
    "__version__",
    "as_table",
    "compare",
    "diff",
    "export",
    "get_store",
    "import_data",
    "lineage",
    "load",
    "rollout",
    "sample",
    "save",
    "select",
    "set_store",
    "synth",
    "train",
    "train_grpo",
    "train_sft",
]
