"""Facility location: pick the rows that best represent all rows (submodular, lazy greedy, exact).

What it computes. Rows are unit-length embeddings (``curate.embeddings.row_embeddings``: pooled last-layer features
of ``--model``, FisherSFT's cache, or ``--embedding embedder`` sentence embeddings). The similarity of two rows is
their cosine similarity clipped at 0, ``s(i, j) = max(0, cos(i, j))``, and a set S of kept rows scores

    f(S) = sum over every row i of max_{j in S} s(i, j),

how well each row is represented by its most similar kept row (apricot's ``FacilityLocationSelection`` and
submodlib's ``FacilityLocationFunction``; the clip keeps f monotone and f(empty) = 0, as those libraries require
non-negative similarities). f is monotone submodular, so greedy (add the row with the largest gain
f(S + j) - f(S) until the budget) is within 1 - 1/e of the best set of that size (Nemhauser, Wolsey, Fisher 1978).

The loop is lazy (Minoux 1978): gains only shrink as S grows, so a gain computed earlier is an upper bound; each
step re-evaluates only the candidates whose bound could still win (largest bounds first, in batches that double)
and returns exactly plain greedy's picks. Tie-break: gains within 1e-9 x max(1, best gain) of the best count as
tied and the lowest row index wins. Once every row is fully represented the gains are 0 and the rest go by row index.

Cost: the n x n similarities are held in memory up to 4,096 rows (128 MB) and otherwise computed a block of rows
at a time from the n x d embeddings (the first step and the final scores each read all n^2 pairs); memory is then
O(n d + block n). A row with a zero vector (no trained token) adds nothing and is never picked (reason
``no_trained_tokens``).

Outputs. Kept rows in pick order with ``facility_gain`` (the gain when picked) and ``facility_rank``. Every dropped
row's decision score is its gain against the final selection, and decisions.parquet names the kept row that
represents it (``represented_by``, its most similar kept row; null when no kept row has a positive similarity).
The manifest's stats give the objective f(S) and ``coverage`` = f(S) / f(all rows).

References: G. L. Nemhauser, L. A. Wolsey, M. L. Fisher, "An analysis of approximations for maximizing submodular
set functions", Math. Programming 1978; M. Minoux, "Accelerated greedy algorithms for maximizing submodular set
functions", 1978; apricot (Schreiber, Bilmes, Noble, JMLR 2020) and submodlib (Kaushal et al. 2022) implement the
same objective. benchmarks/diversity.py times this loop against a vectorised plain numpy greedy.

    curate select sft --method facility --budget 200 --name sft-facility
    curate select sft --method facility --fraction 0.1 --embedding embedder --name sft-facility-minilm
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection
from curate.selectors.embedded import EmbeddingSelector
from curate.store import Version

__all__ = ["FacilitySelector", "greedy_facility"]

# Gains within 1e-9 x max(1, best) of the best are ties, broken by the lowest index. A gain is a sum of n terms of
# at most 1, each rounded at ~1e-16: far below the tolerance, so the way similarities were computed (one matrix or
# blocks of rows) never decides a pick. The floor of 1 matters once gains reach 0: a rounding residue of 1e-16 must
# not beat an exact 0.
TIE_TOL = 1e-9
# Largest n whose n x n float64 similarity matrix is kept (4,096 rows: 128 MB); above it, blocks of rows.
DENSE_MAX_ROWS = 4096
# Elements (candidates x n) in one block of gain evaluations: bounds a block to ~32 MB of float64.
_BLOCK_ELEMS = 1 << 22


def _tie_threshold(best: float) -> float:
    return best - TIE_TOL * max(1.0, abs(best))


class FacilityState:
    """The best similarity so far of every row to the picks (``cur``), and exact gains against it.

    >>> s = FacilityState(np.eye(2))
    >>> s.gains(np.array([0, 1])).tolist()
    [1.0, 1.0]
    """

    def __init__(self, x: np.ndarray, dense_max_rows: int = DENSE_MAX_ROWS):
        self.x = np.ascontiguousarray(x, dtype=np.float64)
        self.n = len(self.x)
        self.cur = np.zeros(self.n)
        self.dense = self.x @ self.x.T if self.n <= dense_max_rows else None

    def sims(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the similarity matrix: (len(idx), n), not clipped (the gain's max(0, .) clips)."""
        return self.dense[idx] if self.dense is not None else self.x[idx] @ self.x.T

    def gains(self, idx: np.ndarray) -> np.ndarray:
        """f(S + j) - f(S) for each j in ``idx``: sum_i max(0, s(i, j) - cur_i); cur >= 0 does the clip at 0."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros(len(idx))
        step = max(1, _BLOCK_ELEMS // max(self.n, 1))
        for a in range(0, len(idx), step):
            # Candidates on rows: each gain is one contiguous row sum, so its rounding never depends on the batch.
            out[a : a + step] = np.maximum(self.sims(idx[a : a + step]) - self.cur, 0.0).sum(axis=1)
        return out

    def add(self, j: int) -> None:
        np.maximum(self.cur, self.sims(np.array([j]))[0], out=self.cur)

    def represented_by(self, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``picks`` of each row's most similar pick, that similarity); ties: the earlier pick."""
        if not len(picks):
            return np.full(self.n, -1, dtype=np.int64), np.zeros(self.n)
        best = np.full(self.n, -np.inf)
        which = np.full(self.n, -1, dtype=np.int64)
        step = max(1, _BLOCK_ELEMS // max(self.n, 1))
        for a in range(0, len(picks), step):
            s = self.sims(picks[a : a + step])
            top = s.argmax(axis=0)
            val = s[top, np.arange(self.n)]
            better = val > best
            best[better], which[better] = val[better], a + top[better]
        return which, best


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise CurateError(f"k must be a non-negative integer, got {k!r}")


def lazy_loop(state: FacilityState, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy on ``state`` for ``k`` picks (capped at n); picks in order and each pick's gain."""
    n = state.n
    k = min(int(k), n)
    picks: list[int] = []
    gains: list[float] = []
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    # bound[i] is i's gain when last evaluated: an upper bound now (submodularity). A zero bound is exact.
    bound = state.gains(np.arange(n))
    fresh = np.ones(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    while len(picks) < k:
        # Re-evaluate the largest bounds in batches that double: a step that needs m evaluations does at most 2m
        # (plus 8), in about log2(m) vectorised calls.
        batch = 8
        while True:
            known = alive & fresh
            best = float(bound[known].max()) if known.any() else -np.inf
            # Only stale candidates whose bound could beat or tie the best exact gain need re-evaluating.
            need = np.flatnonzero(alive & ~fresh & (bound >= _tie_threshold(best)))
            if len(need) == 0:
                break
            if len(need) > batch:
                # The largest bounds first: one vectorised evaluation of a batch costs about what one does.
                need = need[np.argpartition(-bound[need], batch - 1)[:batch]]
            bound[need] = state.gains(need)
            fresh[need] = True
            batch = min(2 * batch, 1024)
        j = int(np.flatnonzero(alive & fresh & (bound >= _tie_threshold(best)))[0])
        picks.append(j)
        gains.append(float(bound[j]))
        state.add(j)
        alive[j] = False
        fresh = bound == 0.0
    return np.asarray(picks, dtype=np.int64), np.asarray(gains)


def greedy_facility(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy facility location on the unit rows of ``x`` (n x d); exactly plain greedy's picks.

    Returns the picked row indices in pick order (at most ``k``) and each pick's gain.

    >>> x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    >>> idx, g = greedy_facility(x, 2)
    >>> idx.tolist(), np.round(g, 4).tolist()
    ([1, 2], [3.36, 0.4])
    """
    _check_k(k)
    return lazy_loop(FacilityState(x), k)


class FacilitySelector(EmbeddingSelector):
    """Facility location (lazy greedy) over row embeddings; keeps rows in pick order.

    >>> v = curate.select("sample-sft", method="facility", budget=50, name="sft-facility")   # doctest: +SKIP
    """

    name = "facility"

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
        state = FacilityState(x[cand])
        picks, gains = lazy_loop(state, min(self.rows_wanted(n), len(cand)))
        self.picks_ = cand[picks]
        scores = np.zeros(n)
        # Unpicked rows get their exact gain against the final selection, so decisions.parquet ranks every row.
        rest = np.setdiff1d(np.arange(len(cand)), picks)
        scores[cand[rest]] = state.gains(rest)
        scores[self.picks_] = gains
        self.scores_ = scores
        which, best = state.represented_by(picks)
        self.represented_by_ = np.full(n, -1, dtype=np.int64)
        has = (which >= 0) & (best > 0)
        self.represented_by_[cand[has]] = self.picks_[which[has]]
        self.objective_ = float(state.cur.sum())
        # f(all rows) = the number of rows with a vector: each row represents itself with similarity 1.
        self.coverage_ = self.objective_ / len(cand) if len(cand) else 0.0
        return self

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Kept rows in pick order with ``facility_gain`` (the gain when picked) and ``facility_rank`` (1 = first)."""
        return self.rename_score(super().transform(table, selection), "facility_gain")

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Base decisions (score: the gain when picked, or against the final selection) plus ``represented_by``:
        the id of the row's most similar kept row (itself when kept; null when no kept row is similar)."""
        out = super().decisions(table, selection)
        ids = [self.ids_[r] if r >= 0 else None for r in self.represented_by_.tolist()]
        return out.append_column("represented_by", pa.array(ids, type=pa.string()))

    def stats(self, selection: Selection) -> dict[str, Any]:
        """Also the objective f(S) and ``coverage`` = f(S) / f(all rows) (1.0: every row fully represented)."""
        return {**super().stats(selection), "objective": self.objective_, "coverage": self.coverage_}
