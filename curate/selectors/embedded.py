"""The shared part of the selectors that work on one vector per row (``kcenter``, ``facility``, ``rds``).

Each reads its rows through ``curate.embeddings.row_embeddings`` (``--embedding features``: pooled last-layer
features of ``--model``, FisherSFT's cache; ``--embedding embedder``: a sentence embedder, semantic dedup's cache),
scales them to unit length, and compares rows by cosine similarity. A row whose vector is zero (with features: no
trained token) is never picked and gets reason ``no_trained_tokens``.

This base holds the options' checks, the model identity that goes into the version id, the embedding call and
the budget's row count; each method file holds its own ``__init__`` (the options it takes, stored unchanged) and
its algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curate.embeddings import KINDS, POOLINGS, row_embeddings, unit_rows
from curate.errors import CurateError
from curate.selectors.base import Selection, Selector, check_budget
from curate.store import Version

#: reason of a row with a zero vector (features: nothing SFT trains on; such a row has no direction to compare)
EMPTY_REASON = "no_trained_tokens"


class EmbeddingSelector(Selector):
    """A selector over unit-length row embeddings; subclasses store ``embedding``, ``model``, ``pooling``, ``dim``,
    ``max_tokens_per_example``, ``seed`` and ``batch_tokens`` plus the engine options.

    Args:
        embedding: Row vectors from features (pooled LM features of --model) or embedder (a sentence embedder).
        model: LM (--embedding features) or sentence embedder (--embedding embedder); none: the default one.
        pooling: How a row's hidden states become one vector: mean or weighted (by position).
        dim: Random projection of the features to this many dimensions (memory); none keeps them all.
        max_tokens_per_example: Cap on the trained tokens per row that enter the features (memory); none: all.
    """

    embedding: str
    model: str | None
    pooling: str
    dim: int | None
    max_tokens_per_example: int | None
    seed: int
    batch_tokens: int | None

    def check_embedding_params(self) -> None:
        """One-line errors naming the flag, before anything is computed."""
        if self.embedding not in KINDS:
            raise CurateError(f"--embedding {self.embedding!r}: expected one of {', '.join(KINDS)}")
        if self.pooling not in POOLINGS:
            raise CurateError(f"--pooling {self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1):
            raise CurateError(f"--dim must be a positive integer, got {self.dim!r}")
        mt = self.max_tokens_per_example
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            raise CurateError(f"--max-tokens-per-example must be a positive integer, got {mt!r}")

    def check_rows_budget(self) -> None:
        """``--budget`` or ``--fraction`` (these methods pick rows, not tokens), one of them, valid."""
        if getattr(self, "budget", None) is None and getattr(self, "fraction", None) is None:
            raise CurateError(f"--method {self.name} needs a budget: --budget K or --fraction F")
        check_budget(self.budget, self.fraction, None, required=True)  # type: ignore[attr-defined]

    def check_input(self, version: Version) -> None:
        self.check_rows_budget()
        self.check_embedding_params()
        if self.embedding == "features":
            if "messages" not in version.columns:
                raise CurateError(
                    f"{version.ref}: --method {self.name} --embedding features needs a messages column "
                    f"(the version has {', '.join(version.columns)})"
                )
        elif not {"messages", "prompt", "completion"} & set(version.columns):
            raise CurateError(
                f"{version.ref}: --method {self.name} needs a messages, prompt or completion column "
                f"(the version has {', '.join(version.columns)})"
            )

    def identity(self) -> dict[str, Any]:
        from curate.models import DEFAULT_EMBEDDER, DEFAULT_LM, resolve

        if self.embedding == "embedder":
            return {"embedder": resolve(self.model or DEFAULT_EMBEDDER).identity}
        return {"model": resolve(self.model or DEFAULT_LM).identity}

    def embed(self, version: Version) -> tuple[np.ndarray, np.ndarray]:
        """(unit-length float64 vectors, mask of rows with a non-zero vector) of every row of ``version``; the
        counts of computed and cached rows go to ``embed_stats_``."""
        if not hasattr(self, "embed_stats_"):
            self.embed_stats_: dict[str, Any] = {}
        x = row_embeddings(
            version,
            model=self.model,
            kind=self.embedding,
            store=version.store,
            pooling=self.pooling,
            dim=self.dim,
            max_tokens_per_example=self.max_tokens_per_example,
            seed=self.seed,
            batch_tokens=self.batch_tokens,
            stats=self.embed_stats_,
            **self.engine_kwargs(),
        )
        return unit_rows(x)

    def embed_pool(self, version: Version) -> tuple[np.ndarray, np.ndarray]:
        """The unit-length vectors of ``version``'s rows and the indices of those with a non-zero vector; sets
        ``version_``, ``ids_`` and ``empty_`` (rows with a zero vector) for ``select`` and the decisions."""
        self.version_ = version
        x, ok = self.embed(version)
        self.ids_ = self.row_ids(version)
        self.empty_ = ~ok
        return x, np.flatnonzero(ok)

    def select(self) -> Selection:
        """Kept rows in pick order (``picks_``); ``no_trained_tokens`` for rows with a zero vector, else
        ``below_budget``."""
        reasons = [EMPTY_REASON if e else "below_budget" for e in self.empty_]
        for i in self.picks_:
            reasons[i] = ""
        return Selection(order=np.asarray(self.picks_, dtype=np.int64), reasons=reasons)

    def rows_wanted(self, n: int) -> int:
        """How many rows ``--budget`` or ``--fraction`` asks for out of ``n``."""
        if getattr(self, "budget", None) is not None:
            return int(self.budget)  # type: ignore[attr-defined]
        return int(round(float(self.fraction) * n))  # type: ignore[attr-defined]

    @staticmethod
    def row_ids(version: Version) -> list[str]:
        if "id" in version.columns:
            return [str(x) for x in version.to_arrow(columns=["id"]).column("id").to_pylist()]
        return [str(i) for i in range(len(version))]

    def stats(self, selection: Selection) -> dict[str, Any]:
        """The base counts, reasons grouped by their kind (``covered_by:<id>`` counts as ``covered_by``), and how
        many rows' embeddings were computed vs read from the cache."""
        base = super().stats(selection)
        reasons: dict[str, int] = {}
        for r in selection.reasons:
            if r:
                kind = r.split(":", 1)[0]
                reasons[kind] = reasons.get(kind, 0) + 1
        return {**base, "reasons": reasons, "embeddings": dict(getattr(self, "embed_stats_", {}))}

    def rename_score(self, out: pa.Table, column: str) -> pa.Table:
        """``<method>_score`` under a name that says what it is (``kcenter_distance``, ``facility_gain``)."""
        return out.rename_columns([(column if c == f"{self.prefix}_score" else c) for c in out.column_names])
