"""RDS+: pick the pool rows most similar to a query set, taking turns over the query items.

What it computes. Every pool row and every query item (``--query REF``, a store version with a ``messages``
column: e.g. a few solved examples of the task you will evaluate on) becomes one vector: the position-weighted
mean of the model's last-layer hidden states (``--pooling weighted``: state j of M weighs j / (1 + ... + M), SGPT's
pooling, which RDS+ adopts), scaled to unit length. Similarity is the cosine. Selection (``--aggregate
round-robin``, the default) goes round the query items in their row order; each in turn takes its most similar
pool row not yet taken, until the budget (``--budget`` or ``--fraction``) is reached. So every query item gets an
equal share of the kept rows, and one crowded region of the pool cannot take the whole budget.
``--aggregate max`` instead ranks pool rows by their highest similarity to any query item.

Paper: H. Ivison, M. Zhang, F. Brahman, P. W. Koh, P. Dasigi, "Large-Scale Data Selection for Instruction Tuning",
2025, arXiv 2503.01807 (code: github.com/hamishivi/automated-instruction-selection).

Departures:
- The hidden states pooled are the LM head's inputs at the positions SFT trains on (the response), FisherSFT's
  cached features (``curate.embeddings``), not every position of the sequence; the weights rank those positions
  1..M. The paper's code weighs every token of the chat-templated example by its absolute position (prompt
  included). Reusing the cached features means a pool FisherSFT has scored costs no forward pass here.
- Round-robin is over query items, as this project's issue asks. The paper's released selection script scores a
  pool row by its maximum similarity over a task's query items and goes round-robin across *tasks*;
  ``--aggregate max`` is that script's single-task form.
- ``--embedding embedder`` swaps the LM for a sentence embedder (the paper's "Embed" baselines, e.g. GTR).

Ties: similarities are rounded to 12 decimals and, among equals, the lower row index goes first (the lower query
index for ``nearest_query``). Query items with a zero vector (no assistant turn to pool) take no turn; a query
with none left is an error. Pool rows with a zero vector are never picked (reason ``no_trained_tokens``).

Outputs. Kept rows in pick order with ``rds_similarity`` (to the query item that took the row; for ``max``, the
highest), ``rds_query`` (that item's id) and ``rds_rank``. Every row's decision score is its highest similarity to
any query item, and decisions.parquet names that item (``nearest_query``). The query version joins the lineage
and the version id.

Cost: the m x n similarity matrix (m query items, n pool rows) in float64, and per query item a ranking of only
its top rows (grown by doubling when its turns use them up).

    curate select pool --method rds --query gsm8k-dev --budget 1000 --name pool-rds
    curate select pool --method rds --query gsm8k-dev --fraction 0.05 --aggregate max --name pool-rds-max
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection
from curate.selectors.embedded import EmbeddingSelector
from curate.store import Version

__all__ = ["AGGREGATES", "RDSSelector", "by_max", "round_robin"]

AGGREGATES = ("round-robin", "max")
# Decimals similarities are rounded to before ranking: float64 rounding of a dot product of unit vectors is
# ~1e-16, so equal rows compare equal and the row index decides, whatever the BLAS blocking did.
DECIMALS = 12


def _ranked(row: np.ndarray, t: int) -> np.ndarray:
    """Indices of the ``t`` largest values of ``row`` (and any equal to the t-th), by value then index."""
    n = len(row)
    if t >= n:
        cand = np.arange(n)
    else:
        kth = -np.partition(-row, t - 1)[t - 1]
        cand = np.flatnonzero(row >= kth)
    return cand[np.lexsort((cand, -row[cand]))]


def round_robin(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Round-robin over the m query items of ``sims`` (m x n similarities): query 0, 1, ..., m-1, 0, 1, ... each
    takes its most similar row not taken yet, until ``k`` rows (capped at n). Returns (rows in pick order, the
    query item that took each).

    >>> sims = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.2, 0.3, 0.7]])
    >>> [p.tolist() for p in round_robin(sims, 3)]
    [[0, 3, 1], [0, 1, 0]]
    """
    sims = np.round(np.asarray(sims, dtype=np.float64), DECIMALS)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise CurateError(f"k must be a non-negative integer, got {k!r}")
    m, n = sims.shape
    k = min(int(k), n) if m else 0
    taken = np.zeros(n, dtype=bool)
    lists: list[np.ndarray] = [np.zeros(0, np.int64)] * m
    pos = [0] * m
    picks: list[int] = []
    by: list[int] = []
    # Each query item needs about k / m of its top rows, plus those other items took first.
    depth = max(16, 2 * (k // max(m, 1) + 1))
    while len(picks) < k:
        for q in range(m):
            if len(picks) == k:
                break
            while True:
                if pos[q] == len(lists[q]):
                    lists[q] = _ranked(sims[q], max(depth, 2 * len(lists[q])))
                j = int(lists[q][pos[q]])
                pos[q] += 1
                if not taken[j]:
                    break
            taken[j] = True
            picks.append(j)
            by.append(q)
    return np.asarray(picks, dtype=np.int64), np.asarray(by, dtype=np.int64)


def by_max(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows with the highest similarity to any query item (ties: lower row index), and that item.

    >>> [p.tolist() for p in by_max(np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.2, 0.3, 0.7]]), 3)]
    [[0, 1, 3], [0, 0, 1]]
    """
    sims = np.round(np.asarray(sims, dtype=np.float64), DECIMALS)
    m, n = sims.shape
    if not m or not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    best = sims.max(axis=0)
    order = _ranked(best, min(int(k), n))[: min(int(k), n)]
    return order.astype(np.int64), sims[:, order].argmax(axis=0).astype(np.int64)


class RDSSelector(EmbeddingSelector):
    """RDS+ (round-robin over query items of cosine similarity on weighted-mean-pooled hidden states).

    Args:
        query: Store ref of the query set (a messages column) the kept rows should resemble.
        aggregate: round-robin (each query item takes its nearest row in turn) or max (best similarity to any).
        pooling: How a row's hidden states become one vector: weighted (by position, RDS+) or mean.

    >>> v = curate.select("pool", method="rds", query="gsm8k-dev", budget=1000, name="pool-rds")   # doctest: +SKIP
    """

    name = "rds"

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        query: str | None = None,
        aggregate: str = "round-robin",
        embedding: str = "features",
        model: str | None = None,
        pooling: str = "weighted",
        dim: int | None = None,
        max_tokens_per_example: int | None = None,
        seed: int = 0,
        batch_tokens: int | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
    ):
        self.budget = budget
        self.fraction = fraction
        self.query = query
        self.aggregate = aggregate
        self.embedding = embedding
        self.model = model
        self.pooling = pooling
        self.dim = dim
        self.max_tokens_per_example = max_tokens_per_example
        self.seed = seed
        self.batch_tokens = batch_tokens
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker

    def extra_parents(self) -> list[str]:
        """The query version: it joins the lineage and the version id."""
        return [self.query] if self.query is not None else []

    def _query_version(self, version: Version) -> Version:
        if not isinstance(self.query, str) or not self.query:
            raise CurateError(f"--method {self.name} needs --query REF (a store version of query items)")
        try:
            q = version.store.load(self.query)
        except CurateError as err:
            raise CurateError(f"--query {self.query}: {err}") from None
        if self.embedding == "features" and "messages" not in q.columns:
            raise CurateError(
                f"--query {self.query}: needs a messages column (the version has {', '.join(q.columns)})"
            )
        if not {"messages", "prompt", "completion"} & set(q.columns):
            raise CurateError(
                f"--query {self.query}: needs a messages, prompt or completion column "
                f"(the version has {', '.join(q.columns)})"
            )
        if not len(q):
            raise CurateError(f"--query {self.query}: the version has no rows")
        return q

    def check_input(self, version: Version) -> None:
        super().check_input(version)
        if self.aggregate not in AGGREGATES:
            raise CurateError(f"--aggregate {self.aggregate!r}: expected one of {', '.join(AGGREGATES)}")
        self._query_version(version)

    def fit(self, version: Version) -> Self:
        self.check_input(version)
        query = self._query_version(version)
        x, cand = self.embed_pool(version)
        qx, qok = self.embed(query)
        if not qok.any():
            raise CurateError(
                f"--query {self.query}: no query item has a non-zero embedding (with --embedding features an item "
                "needs an assistant turn: RDS+ embeds query items like pool rows)"
            )
        n = len(version)
        used = np.flatnonzero(qok)
        # An empty pool has no columns to multiply (its embeddings are 0 x 0).
        sims = np.round(qx[used] @ x[cand].T, DECIMALS) if len(cand) else np.zeros((len(used), 0))
        k = min(self.rows_wanted(n), len(cand))
        picks, by = (round_robin if self.aggregate == "round-robin" else by_max)(sims, k)
        query_ids = self.row_ids(query)
        self.query_ids_ = [query_ids[i] for i in used]
        self.picks_ = cand[picks]
        self.picked_by_ = [self.query_ids_[q] for q in by.tolist()]
        self.pick_similarity_ = sims[by, picks] if len(picks) else np.zeros(0)
        scores = np.full(n, np.nan)
        self.nearest_query_: list[str | None] = [None] * n
        if len(cand):
            scores[cand] = sims.max(axis=0)
            for r, q in zip(cand.tolist(), sims.argmax(axis=0).tolist(), strict=True):
                self.nearest_query_[r] = self.query_ids_[q]
        self.scores_ = scores
        self.query_items_ = {"given": len(query), "used": len(used)}
        return self

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Kept rows in pick order with ``rds_similarity`` (to the query item that took the row), ``rds_query``
        (that item's id) and ``rds_rank`` (1 = first)."""
        out = table.take(pa.array(selection.order, type=pa.int64()))
        out = out.append_column("rds_similarity", pa.array(self.pick_similarity_.astype(np.float64), pa.float64()))
        out = out.append_column("rds_query", pa.array(self.picked_by_, type=pa.string()))
        return out.append_column("rds_rank", pa.array(np.arange(1, len(selection.order) + 1), pa.int64()))

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Base decisions (score: the highest similarity to any query item) plus ``nearest_query``: that item."""
        out = super().decisions(table, selection)
        return out.append_column("nearest_query", pa.array(self.nearest_query_, type=pa.string()))

    def stats(self, selection: Selection) -> dict[str, Any]:
        """Also how many query items were given and used, and the mean similarity of the kept rows."""
        sim = self.pick_similarity_
        return {
            **super().stats(selection),
            "query_items": self.query_items_,
            "mean_similarity": float(sim.mean()) if len(sim) else None,
        }
