"""k-center: pick rows so that every row is close to a picked one (greedy farthest-first traversal).

What it computes. Rows are unit-length embeddings (``curate.embeddings.row_embeddings``: pooled last-layer features
of ``--model``, FisherSFT's cache, or ``--embedding embedder`` sentence embeddings) compared by cosine distance
``1 - cos(a, b)`` (0 = same direction, 2 = opposite). Greedy k-center (Gonzalez 1985) starts from one row and then
repeatedly picks the row farthest from everything picked so far, until the budget (``--budget`` or
``--fraction``). The *covering radius* of a selection is the largest distance from any row to its nearest pick;
farthest-first keeps it small, so the kept rows cover the spread of the data, outliers included.

Start: the row most aligned with the mean direction (largest dot product with the mean of the unit vectors; the
first row when that mean is zero), a deterministic and order-independent choice that is not an outlier.

Ties: distances within 1e-12 of the farthest count as tied and the lowest row index wins. A row with a zero vector
(no trained token) is never picked (reason ``no_trained_tokens``).

Guarantee. The cosine distance is not a metric, but on unit vectors it is a monotone function of the Euclidean
(chordal) distance ``sqrt(2 (1 - cos))``, which is; farthest-first makes the same picks under either, so its
radius is at most twice the optimal k-center radius in chordal distance (four times in cosine distance, the
square). tests/test_diversity.py checks the factor 2 against a brute-force optimum.

Outputs. Kept rows in pick order with ``kcenter_distance`` (the distance to the earlier picks when picked; inf for
the first) and ``kcenter_rank``. A dropped row's reason is ``covered_by:<id>``, the kept row nearest to it, with
that distance as its decision score and ``covered_by`` as a decisions column; the manifest's stats give the
selection's ``radius`` (the largest such distance). Cost: one pass over the n x d embeddings per pick.

Reference: T. F. Gonzalez, "Clustering to minimize the maximum intercluster distance", TCS 1985; used as a
coreset selector by Sener and Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach", ICLR 2018 (their greedy k-center). Departure: they use Euclidean distance on unnormalised features; here
directions only (cosine), so a long row's larger feature norm does not make it look far.

    curate select sft --method kcenter --budget 200 --name sft-kcenter
    curate select sft --method kcenter --fraction 0.1 --embedding embedder --name sft-kcenter-minilm
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection
from curate.selectors.embedded import EMPTY_REASON, EmbeddingSelector
from curate.store import Version

__all__ = ["KCenterSelector", "farthest_first"]

# Distances this close to the farthest are ties (lowest index wins): float64 rounding of a dot product of unit
# vectors is ~1e-16, so rounding never decides a pick.
TIE_ATOL = 1e-12


@dataclass
class Cover:
    """The outcome of ``farthest_first`` on n rows with k picks."""

    picks: np.ndarray  # (k,) row indices in pick order
    pick_distance: np.ndarray  # (k,) each pick's distance to the earlier picks when it was picked (inf first)
    nearest: np.ndarray  # (n,) index of each row's nearest pick (itself for a pick; -1 when there is none)
    distance: np.ndarray  # (n,) cosine distance to that pick (0 for a pick, inf when there is none)

    @property
    def radius(self) -> float:
        """The covering radius: the largest distance from a row to its nearest pick (0 for no rows)."""
        return float(self.distance.max()) if len(self.distance) else 0.0


def farthest_first(x: np.ndarray, k: int) -> Cover:
    """Greedy k-center on the unit rows of ``x`` (n x d) under cosine distance; ``k`` is capped at n.

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    >>> c = farthest_first(x, 2)
    >>> c.picks.tolist(), c.pick_distance.tolist(), round(c.radius, 6)
    ([3, 2], [inf, 1.6], 0.4)
    """
    x = np.asarray(x, dtype=np.float64)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise CurateError(f"k must be a non-negative integer, got {k!r}")
    n = len(x)
    k = min(int(k), n)
    nearest = np.full(n, -1, dtype=np.int64)
    mind = np.full(n, np.inf)
    picks: list[int] = []
    at: list[float] = []
    if k == 0:
        return Cover(np.zeros(0, np.int64), np.zeros(0), nearest, mind)
    align = x @ x.mean(axis=0)
    j = int(np.flatnonzero(align >= align.max() - TIE_ATOL)[0])
    dist_j = np.inf
    picked = np.zeros(n, dtype=bool)
    while True:
        picks.append(j)
        at.append(dist_j)
        picked[j] = True
        # Rounding can put 1 - cos a hair below 0 for (near-)identical rows; a distance is never negative.
        d = np.maximum(1.0 - x @ x[j], 0.0)
        closer = d < mind
        mind[closer] = d[closer]
        nearest[closer] = j
        mind[j], nearest[j] = 0.0, j
        if len(picks) == k:
            break
        left = np.where(picked, -np.inf, mind)
        j = int(np.flatnonzero(left >= left.max() - TIE_ATOL)[0])
        dist_j = float(left[j])
    return Cover(np.asarray(picks, dtype=np.int64), np.asarray(at), nearest, mind)


class KCenterSelector(EmbeddingSelector):
    """Greedy k-center (farthest-first) over row embeddings; keeps rows in pick order.

    >>> v = curate.select("sample-sft", method="kcenter", budget=50, name="sft-kcenter")   # doctest: +SKIP
    """

    name = "kcenter"

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        embedding: str = "features",
        model: str | None = None,
        pooling: str = "mean",
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

    def fit(self, version: Version) -> Self:
        self.check_input(version)
        x, cand = self.embed_pool(version)
        n = len(version)
        cover = farthest_first(x[cand], min(self.rows_wanted(n), len(cand)))
        self.picks_ = cand[cover.picks]
        self.covered_by_ = np.full(n, -1, dtype=np.int64)
        has = cover.nearest >= 0
        self.covered_by_[cand[has]] = cand[cover.nearest[has]]
        scores = np.full(n, np.nan)
        scores[cand] = cover.distance
        scores[self.picks_] = cover.pick_distance
        self.scores_ = scores
        unpicked = np.setdiff1d(cand, self.picks_)
        self.radius_: float | None = float(scores[unpicked].max()) if len(unpicked) else 0.0
        if not len(self.picks_) and len(unpicked):
            self.radius_ = None  # nothing picked covers nothing: no radius, not an infinite one in the manifest's JSON
        return self

    def select(self) -> Selection:
        """Kept rows in pick order; a dropped row names its nearest kept row (``covered_by:<id>``)."""
        reasons = []
        for i, (empty, c) in enumerate(zip(self.empty_, self.covered_by_, strict=True)):
            if empty:
                reasons.append(EMPTY_REASON)
            elif c < 0:
                reasons.append("below_budget")  # a budget of 0: nothing covers it
            elif c == i:
                reasons.append("")
            else:
                reasons.append(f"covered_by:{self.ids_[c]}")
        return Selection(order=np.asarray(self.picks_, dtype=np.int64), reasons=reasons)

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Kept rows in pick order with ``kcenter_distance`` (distance to the earlier picks when picked; inf for
        the first) and ``kcenter_rank`` (1 = first)."""
        return self.rename_score(super().transform(table, selection), "kcenter_distance")

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Base decisions (score: cosine distance to the nearest kept row; for a kept row, its distance when
        picked) plus ``covered_by``: that kept row's id (null for rows nothing covers)."""
        out = super().decisions(table, selection)
        ids = [self.ids_[c] if c >= 0 and c != i else None for i, c in enumerate(self.covered_by_.tolist())]
        return out.append_column("covered_by", pa.array(ids, type=pa.string()))

    def stats(self, selection: Selection) -> dict[str, Any]:
        """Also the covering radius: the largest cosine distance from a dropped row to its nearest kept row (0 when
        every row is kept, None when nothing is)."""
        return {**super().stats(selection), "radius": self.radius_}
