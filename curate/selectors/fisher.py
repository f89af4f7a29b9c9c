"""FisherSFT: pick the examples whose trained tokens add the most information about the LM head.

What it computes: every example i is a matrix X_i (M_i x d) of last-layer hidden states (the LM head's input)
at the positions SFT trains on. Greedy picks examples one at a time to maximise

    log det(lam * I_d + sum_{i in S} X_i^T X_i),

the log-determinant of the (linearised, L-independent part of the) Fisher information of the LM head. The gain
of adding i is log det(I + X_i V^-1 X_i^T) (matrix determinant lemma) and V^-1 is kept up to date with Woodbury
(float64). The loop is lazy (Minoux): gains only shrink as V grows, so a gain computed earlier is an upper bound;
each step re-evaluates only candidates whose bound could still win, largest bounds first, in vectorised batches.
Re-evaluations run in float32 and carry a margin (1e-3 relative): an example with at most d tokens keeps its
M_i x M_i kernel (in width classes, at most 256 MB) and brings it up to date with one product against the Woodbury
rows added since it was last seen, or recomputes it when that is cheaper or its float32 error could have grown;
longer examples use the exact d x d form. On the CPU, long examples are evaluated one at a time on their own rows
(BLAS triangular and symmetric rank-k products, LAPACK Cholesky: no padding, half the flops of general products),
short ones in padded batches. Before each pick, every candidate whose margin reaches the best is
re-evaluated exactly in float64 and the tie rule below is applied to those float64 gains, so the picks and gains
are plain float64 greedy's; if a float32 gain is ever found outside its margin, the run continues in float64.
Features may be a list of arrays or one flat (sum M_i) x d array (`FlatFeatures`, e.g. a float16 memmap): rows
are gathered and upcast per batch, never as a whole.

Tie-break (both loops): gains within a relative 1e-9 of the best gain count as tied and the lowest row index
wins, so rounding noise in the last bits never decides a pick. An example with no trained tokens has gain 0
and is never picked before one with a positive gain.

Paper: Deb, Thekumparampil, Kalantari, Hiranandani, Sabach, Kveton, "FisherSFT: Data-Efficient Supervised
Fine-Tuning of Language Models Using Information Gain", ICML 2025, arXiv 2505.14826.

Departures from the paper:
- Objective [recon]: no reference code exists and the full text was not available; the d x d log-det above is
  our reconstruction, from the abstract and secondary summaries, of the paper's tractable lower bound of the
  MLR Hessian's log-det (the softmax factor that depends on the vocabulary is dropped).
- lam = 1.0 by default (the paper's value is unknown). It only keeps V invertible: one SmolLM2-135M token has
  ||x||^2 of about 2,000, so the prior is negligible after the first pick in any direction.
- Only the response tokens SFT trains on (`chat.assistant_token_mask`) contribute, not prompt tokens.
- Position t's hidden state predicts token t+1, so example i's rows are the hidden states at positions t whose
  *next* token is trained (the label positions), see `curate.scoring`.
- Optional random projection (`dim`) and a per-example token cap (`max_tokens_per_example`) for memory.

Length preference. An example's gain grows with the trained tokens it adds (log det(I + X_i V^-1 X_i^T) sums
over its M_i rows), so at a row budget (`--budget K`) FisherSFT mostly picks the longest answers: measured on
GSM8K with SmolLM2-135M (#16), 11 of its 16 picks were among the 16 longest rows and it trained on 1.3-1.4x the
tokens of a random pick of 16. A row-matched comparison against random then mixes "informative" with "long".
Use `--budget-tokens T` to give it the same trained tokens as the alternative, and `curate compare` (arms
`random`, `random-tokens`, `longest`) to see whether the picks beat matched controls on held-out loss. The study in
`docs/studies/compare-gsm8k-smollm2.md` did: on a 200-row GSM8K pool, 13 of its 16 picks were among the 16 longest
(2.0x random's tokens), and it was worse than random at a row budget (+0.023 nats held-out NLL, paired interval
excluding 0) and at a token budget (+0.081, level with the longest rows).

    curate select sample-sft --method fisher --budget 50 --name sft-fisher
    curate select sample-sft --method fisher --budget-tokens 4000 --name sft-fisher-tokens
    curate compare sample-sft --arms fisher,random,random-tokens,longest --budget 50 --seeds 3 --eval HELDOUT \
        --name cmp-fisher
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.scoring import FlatFeatures
from curate.selectors.base import Selection, Selector, check_budget
from curate.store import Version

__all__ = ["FisherSelector", "FlatFeatures", "LogDetState", "greedy_logdet", "plain_greedy_logdet"]

# Gains this close (relative) to the best are ties, broken by the lowest index. Float64 rounding in a gain is
# ~1e-15 relative; 1e-9 absorbs it so batched and single evaluations can never disagree on a pick.
TIE_RTOL = 1e-9
# Elements (rows x d) in one padded batch of gain evaluations: bounds memory to ~32 MB of float64.
_CHUNK_ELEMS = 1 << 22
# A float32 gain g is trusted to lie within g * _F32_RTOL + _F32_ATOL of the float64 one. Measured float32
# error with the drift cap below is ~1e-5 relative; the lazy loop checks every float32 gain it re-checks in
# float64 against this margin and falls back to float64 for the rest of the run if one is ever outside it.
_F32_RTOL = 1e-3
_F32_ATOL = 1e-6
# Bytes of float32 M_i x M_i kernels the lazy loop keeps (an example is cached only while under the cap).
_CACHE_BYTES = 1 << 28
# A kernel downdated to below this fraction of its trace when last computed fresh is recomputed fresh next time:
# float32 cancellation error grows with how much has been subtracted.
_DRIFT = 0.1
# On the CPU, examples of a width class w with w * d * (d + w) (the multiply-adds of one evaluation) at least this
# are evaluated one at a time on their own rows (no padding), with BLAS's triangular and symmetric rank-k products
# and LAPACK's Cholesky; cheaper ones in padded batches, where per-call overhead would dominate.
_EACH_MADDS = 1 << 23
# The fixed cost of one round of evaluations (Python, gathers, small calls) in multiply-adds: ~1 ms here.
_CALL_MADDS = 1 << 25


def _tie_threshold(best: float) -> float:
    return best - TIE_RTOL * abs(best)


def _is_flat(features: Any) -> bool:
    return hasattr(features, "flat") and hasattr(features, "lengths")


def _lengths_of(features: Any) -> np.ndarray:
    if _is_flat(features):
        return np.asarray(features.lengths, dtype=np.int64)
    return np.array([len(x) for x in features], dtype=np.int64)


class LogDetState:
    """V^-1 for V = lam I + sum of selected X_i^T X_i, and batched gains against it.

    V^-1 is kept in float64 (torch; CUDA when given, else CPU). Features stay in their own dtype as one flat
    (sum M_i) x d numpy array (a memmap stays a memmap); each batch of evaluations gathers its rows and upcasts
    only them. ``gains`` is exact float64. ``estimate`` (the lazy loop's) is float32 with an error margin and,
    with ``cache_kernels``, keeps each evaluated short example's kernel K_i = X_i V^-1 X_i^T (at most
    ``_CACHE_BYTES``): every Woodbury step V^-1 <- V^-1 - W_j^T W_j is kept as rows W_j, and a cached kernel is
    brought up to date as K_i - (X_i W^T)(X_i W^T)^T over the rows added since, which costs (new rows) / d of a
    fresh evaluation.

    >>> s = LogDetState([np.eye(2), np.ones((1, 2))], lam=1.0)
    >>> round(float(s.gains(np.array([0]))[0]), 6)   # log det(I + I) in 2 dims
    1.386294
    """

    def __init__(self, features: Any, lam: float = 1.0, device: Any = None, cache_kernels: bool = False):
        import torch

        if not lam > 0:
            raise CurateError(f"--lam must be > 0, got {lam!r}")
        self.device = torch.device(device) if device is not None else _default_device()
        self.lam = float(lam)
        if _is_flat(features):
            self.src, self.m, self._check_rows = _flat_source(features)
        else:
            self.src, self.m = _list_source(features)
            self._check_rows = False
        self.d = d = int(self.src.shape[1])
        self.n = len(self.m)
        # Evaluations that cost about as much as one call's fixed overhead: a round may take this many more than
        # it expects to need (cheap rows: an extra round costs more than evaluating a few hundred extra).
        madds = self.m * d * (d + self.m)
        self.slack = int(_CALL_MADDS // max(1.0, float(madds[self.m > 0].mean()))) if (self.m > 0).any() else 0
        self.offsets = (np.cumsum(self.m) - self.m).astype(np.int64)
        eye = torch.eye(d, dtype=torch.float64, device=self.device)
        self.vinv = eye / self.lam
        self.V = eye * self.lam
        self.vinv32 = self.vinv.float()
        self._u32: np.ndarray | None = None  # float32 Cholesky factor of V^-1 (CPU), made when first needed
        self._u64: np.ndarray | bool | None = None  # its float64 original (False: the factorisation failed)
        self.f32 = True  # estimates in float32 until a margin check fails
        self._w = torch.zeros(64, d, dtype=torch.float32, device=self.device)  # Woodbury rows, grown by doubling
        self.r = 0  # Woodbury rows so far
        self.epoch = 0  # bumped by an update that is not a Woodbury step: cached kernels then go stale
        self.evaluations = self.forced = 0  # the lazy loop's counts (see greedy_logdet)
        # Short examples (0 < M_i <= d) fall in width classes (padding <= 25%); each class keeps its cached kernels
        # in one (slots, w, w) float32 tensor, so a batch gathers and stores them with one index each.
        self.width = np.zeros(self.n, dtype=np.int64)
        short = (self.m > 0) & (self.m <= d)
        self.width[short] = _width_class(self.m[short])
        self._kr = np.full(self.n, -1, dtype=np.int64)  # self.r when the cached kernel was last brought up to date
        self._ktr = np.zeros(self.n)  # its trace when last computed fresh
        self._kepoch = np.zeros(self.n, dtype=np.int64)
        self._slot = np.full(self.n, -1, dtype=np.int64)
        self._bufs: dict[int, Any] = {}
        self._nslots: dict[int, int] = {}
        if cache_kernels:
            # Longest first (they have the largest gains, so the lazy loop re-evaluates them most), up to the cap.
            used = 0
            for i in np.argsort(-self.m[short], kind="stable"):
                i = int(np.nonzero(short)[0][i])
                w = int(self.width[i])
                if used + 4 * w * w > _CACHE_BYTES:
                    continue
                used += 4 * w * w
                self._slot[i] = self._nslots.get(w, 0)
                self._nslots[w] = self._slot[i] + 1

    @classmethod
    def from_flat(
        cls, flat: np.ndarray, lengths: np.ndarray, lam: float = 1.0, device: Any = None, cache_kernels: bool = False
    ) -> LogDetState:
        """The state for features given as one (sum lengths) x d array (may be an ``np.memmap``) and the lengths.

        >>> s = LogDetState.from_flat(np.eye(2, dtype=np.float16), np.array([2, 0]))
        >>> s.gains(np.array([0, 1])).round(6).tolist()
        [1.386294, 0.0]
        """
        return cls(FlatFeatures(flat, lengths), lam=lam, device=device, cache_kernels=cache_kernels)

    def _rows(self, ids: np.ndarray, width: int, dtype):
        """(len(ids), width, d) rows of ``ids`` in ``dtype``, zero-padded past each example's length."""
        import torch

        if width >= 32 and self.device.type == "cpu":
            # Long rows: one slice copy (and upcast) per example straight into the padded batch.
            out = np.empty((len(ids), width, self.d), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
            for b, i in enumerate(ids):
                o, m = int(self.offsets[i]), int(self.m[i])
                out[b, :m] = self.src[o : o + m]
                out[b, m:] = 0
            if self._check_rows and not np.isfinite(out).all():
                self._raise_bad_row(ids)
            return torch.from_numpy(out)
        ar = np.arange(width)
        valid = (ar[None, :] < self.m[ids][:, None]).ravel()
        at = (self.offsets[ids][:, None] + ar[None, :]).ravel()
        # One gather of every (padded) position; a padding position reads row 0 and is zeroed after.
        rows = np.take(self.src, np.where(valid, at, 0), axis=0)  # only examples with rows get here
        if not valid.all():
            rows[~valid] = 0
        if self._check_rows and not np.isfinite(rows).all():
            self._raise_bad_row(ids)
        X = torch.from_numpy(rows).to(self.device, dtype)
        return X.reshape(len(ids), width, self.d)

    def _raise_bad_row(self, ids: np.ndarray) -> None:
        bad = next(i for i in ids if not np.isfinite(self.src[self.offsets[i] : self.offsets[i] + self.m[i]]).all())
        raise CurateError(f"features[{int(bad)}] has NaN or infinite values")

    @staticmethod
    def _batches(lengths: np.ndarray, cols: int) -> Iterator[np.ndarray]:
        """Positions into ``lengths``, sorted by length and cut so a padded batch holds about _CHUNK_ELEMS elements."""
        order = np.argsort(lengths, kind="stable")
        m = lengths[order].astype(np.int64)
        start = 0
        while start < len(order):
            # (count so far) x (longest so far) only grows along the sorted lengths: the batch ends before the first
            # position where it passes the chunk (at least one example per batch).
            size = (np.arange(1, len(order) - start + 1) * m[start:] * cols) > _CHUNK_ELEMS
            stop = start + max(1, int(np.argmax(size)) if size.any() else len(order) - start)
            yield order[start:stop]
            start = stop

    def _exact(self, ids: np.ndarray) -> np.ndarray:
        import torch

        width = int(self.m[ids].max())
        if width <= self.d and self._one_by_one(width) and self._chol64() is not None:
            return self._each64(ids)
        X = self._rows(ids, width, torch.float64)  # padded rows are zero and add log 1 = 0
        if width <= self.d:
            K = (X.reshape(-1, self.d) @ self.vinv).reshape(X.shape) @ X.transpose(1, 2)
            return _logdet_eye_plus(K)
        # More tokens than dimensions: the d x d form of the same determinant is cheaper.
        K = self.vinv @ (X.transpose(1, 2) @ X)
        K.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return torch.linalg.slogdet(K).logabsdet.cpu().numpy()

    def gains(self, idx: np.ndarray) -> np.ndarray:
        """Exact float64 gains log det(I + X_i V^-1 X_i^T) of ``idx`` against the current V (0 for empty examples)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros(len(idx), dtype=np.float64)
        pos = np.nonzero(self.m[idx] > 0)[0]
        for sel in self._batches(self.m[idx[pos]], self.d):
            out[pos[sel]] = self._exact(idx[pos[sel]])
        # A zero gain is exact (no information), never a small negative from rounding.
        return np.maximum(out, 0.0)

    def estimate(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gains of ``idx`` and an error margin: the exact gain lies within ``gain +- margin`` (margin 0: exact).

        Float32 (with cached kernels brought up to date where that is cheaper) for examples of at most d rows,
        float64 for the rest and once ``f32`` is off.
        """
        idx = np.asarray(idx, dtype=np.int64)
        g = np.zeros(len(idx))
        err = np.zeros(len(idx))
        m = self.m[idx]
        approx = (m > 0) & (m <= self.d) if self.f32 else np.zeros(len(idx), dtype=bool)
        exact = np.nonzero((m > 0) & ~approx)[0]
        if len(exact):
            g[exact] = self.gains(idx[exact])
        pos = np.nonzero(approx)[0]
        if len(pos) == 0:
            return g, err
        kr = self._kr[idx[pos]]
        wid = self.width[idx[pos]]
        # Multiply-adds per example, r rows added since: one by one M r (d + M/2) to bring a kernel up to date against
        # M d (d + M) / 2 fresh; in padded CPU batches M r (d + M) against M d (d/2 + M) (a triangular X U, a full
        # K); on other devices about r / d of a fresh one (a full X V^-1).
        since, d, mp = self.r - kr, self.d, m[pos]
        batched = since * (d + mp) <= d * (d // 2 + mp) if self.device.type == "cpu" else since <= 3 * d // 4
        cheaper = np.where(self._one_by_one_w(wid), since * (2 * d + mp) <= d * (d + mp), batched)
        inc = (kr >= 0) & (self._kepoch[idx[pos]] == self.epoch) & cheaper
        for w in np.unique(wid):
            # One by one: group by when each kernel was last updated, one product with the rows added since serves
            # the group. Padded batches: one product with the rows since the oldest, each kernel's own masked.
            here = inc & (wid == w)
            if self._one_by_one(w):
                groups = [kr[here] == f for f in np.unique(kr[here])]
            else:
                groups = [np.ones(np.count_nonzero(here), dtype=bool)]
            for same in groups:
                grp, first = pos[here][same], kr[here][same]
                for sel in self._batches(np.full(len(grp), w), self.d + self.r - int(first.min(initial=self.r))):
                    g[grp[sel]] = self._incremental(idx[grp[sel]], int(w), first[sel])
            grp = pos[~inc & (wid == w)]
            for sel in self._batches(np.full(len(grp), w), self.d):
                g[grp[sel]] = self._fresh32(idx[grp[sel]], int(w))
        bad = pos[~np.isfinite(g[pos])]  # float32 Cholesky failed: exact instead
        if len(bad):
            g[bad] = self.gains(idx[bad])
        ok = np.setdiff1d(pos, bad) if len(bad) else pos
        g[ok] = np.maximum(g[ok], 0.0)
        err[ok] = g[ok] * _F32_RTOL + _F32_ATOL
        return g, err

    def _each64(self, ids: np.ndarray) -> np.ndarray:
        """Exact float64 gains on the CPU, one example at a time on its own rows (as ``_each``, without a cache)."""
        dsyrk, dtrmm, dpotrf = _blas(np.float64)
        flat, starts = self._flat(ids, np.float64)
        if self.r == 0 and self.epoch == 0:  # nothing picked yet: V^-1 = I / lam
            A, alpha = flat.T, 1.0 / self.lam
        else:
            A, alpha = dtrmm(1.0, self._chol64(), flat.T, lower=1, trans_a=1, overwrite_b=1), 1.0
        g = np.empty(len(ids))
        for b in range(len(ids)):
            Y = A[:, int(starts[b]) : int(starts[b + 1])]
            K = dsyrk(alpha, Y, trans=1, lower=1)
            K[np.diag_indices(len(K))] += 1.0
            L, info = dpotrf(K, lower=1, clean=0, overwrite_a=1)
            if info == 0:
                g[b] = 2.0 * float(np.log(np.diagonal(L)).sum())
            else:  # I + K is positive definite in exact arithmetic: only rounding gets here
                K = alpha * (Y.T @ Y) + np.eye(Y.shape[1])
                g[b] = float(np.linalg.slogdet(K)[1])
        return g

    def _flat(self, ids: np.ndarray, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``ids`` one after another (sum M_i x d, C order, ``dtype``), and where each example starts."""
        m = self.m[ids]
        starts = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(m, out=starts[1:])
        out = np.empty((int(starts[-1]), self.d), dtype=dtype)
        for b, i in enumerate(ids):
            o = int(self.offsets[i])
            out[starts[b] : starts[b + 1]] = self.src[o : o + int(m[b])]
        if self._check_rows and not np.isfinite(out).all():
            self._raise_bad_row(ids)
        return out, starts

    def _u(self) -> np.ndarray:
        """V^-1's float32 lower Cholesky factor U (V^-1 = U U^T), Fortran order, made once per V."""
        import torch

        if self._u32 is None:
            u = self._chol64()
            u = torch.linalg.cholesky(self.vinv).numpy() if u is None else u  # raises what the failure was
            self._u32 = np.asfortranarray(u, dtype=np.float32)
        return self._u32

    def _chol64(self) -> np.ndarray | None:
        """V^-1's float64 lower Cholesky factor (CPU, Fortran order, once per V); None if rounding broke it."""
        import torch

        if self._u64 is None:
            L, info = torch.linalg.cholesky_ex(self.vinv)
            self._u64 = np.asfortranarray(L.cpu().numpy()) if int(info) == 0 else False
        return None if self._u64 is False else self._u64

    def _buffer(self, width: int):
        """The cached kernels of a width class, (slots, width, width) float32, allocated when first needed."""
        import torch

        if width not in self._bufs:
            self._bufs[width] = torch.zeros(self._nslots[width], width, width, dtype=torch.float32, device=self.device)
        return self._bufs[width]

    def _one_by_one(self, width: int) -> bool:
        return bool(self._one_by_one_w(np.array([width]))[0])

    def _one_by_one_w(self, width: np.ndarray) -> np.ndarray:
        return (self.device.type == "cpu") & (width * self.d * (self.d + width) >= _EACH_MADDS)

    def _each(self, ids: np.ndarray, width: int, first: int | None) -> np.ndarray:
        """CPU, one example at a time on its own M_i rows: fresh (``first`` None) or brought up to date.

        Fresh: Y^T = U^T X^T (triangular product, all examples at once), K_i = Y_i Y_i^T (symmetric rank-k, half the
        flops of a general product). Up to date: K_i -= Q_i Q_i^T with Q = X W^T over the Woodbury rows since
        ``first``. Only K_i's lower triangle is computed, kept and read.
        """
        ssyrk, strmm, spotrf = _blas()
        flat, starts = self._flat(ids)
        slots = self._slot[ids]
        buf = self._buffer(width).numpy() if (slots >= 0).any() else None  # CPU only: shares the tensor's memory
        if first is None:
            if self.r == 0 and self.epoch == 0:  # nothing picked yet: V^-1 = I / lam
                A, alpha = flat.T, 1.0 / self.lam
            else:
                A, alpha = strmm(1.0, self._u(), flat.T, lower=1, trans_a=1, overwrite_b=1), 1.0
        else:
            A, alpha = np.matmul(flat, self._w[first : self.r].numpy().T).T, -1.0  # Q^T, (rows since) x sum M_i
        g = np.empty(len(ids))
        keep = np.zeros(len(ids), dtype=bool)
        for b, i in enumerate(ids):
            s0, s1, slot = int(starts[b]), int(starts[b + 1]), int(slots[b])
            m = s1 - s0
            if first is None:
                K = ssyrk(alpha, A[:, s0:s1], trans=1, lower=1)
                tr = float(np.trace(K))
                if slot >= 0:
                    self._ktr[i] = tr
            else:
                K = ssyrk(
                    alpha,
                    A[:, s0:s1],
                    beta=1.0,
                    c=np.array(buf[slot, :m, :m], order="F"),
                    trans=1,
                    lower=1,
                    overwrite_c=1,
                )
                tr = float(np.trace(K))
            keep[b] = slot >= 0 and (first is None or tr >= _DRIFT * self._ktr[i])
            if keep[b]:
                buf[slot, :m, :m] = K
            K[np.diag_indices(m)] += 1.0
            L, info = spotrf(K, lower=1, clean=0, overwrite_a=1)
            g[b] = 2.0 * float(np.log(np.diagonal(L)).sum()) if info == 0 else np.nan
        self._mark(ids, keep)
        return g

    def _fresh32(self, ids: np.ndarray, width: int) -> np.ndarray:
        import torch

        if self._one_by_one(width):
            return self._each(ids, width, None)
        X = self._rows(ids, width, torch.float32)
        if self.r == 0 and self.epoch == 0:  # nothing picked yet: V^-1 = I / lam
            K = (X @ X.transpose(1, 2)).div_(self.lam)
        elif self.device.type == "cpu":
            # K = (X U)(X U)^T with V^-1 = U U^T: BLAS's triangular product does X U in half the flops of X V^-1
            # (measured 2.2x faster here), and K comes out positive semi-definite by construction.
            strmm = _blas()[1]
            flat = X.reshape(-1, self.d).numpy()
            Y = strmm(1.0, self._u(), flat.T, lower=1, trans_a=1, overwrite_b=1).T  # in place: U^T X^T
            Y = torch.from_numpy(np.ascontiguousarray(Y)).reshape(X.shape)
            K = Y @ Y.transpose(1, 2)
        else:
            K = (X.reshape(-1, self.d) @ self.vinv32).reshape(X.shape) @ X.transpose(1, 2)
        tr = K.diagonal(dim1=-2, dim2=-1).sum(-1).cpu().numpy()
        keep = self._slot[ids] >= 0
        self._ktr[ids[keep]] = tr[keep]
        self._remember(ids, K, keep, width)
        return _logdet_eye_plus(K, fallback=False, overwrite=True)  # K is a copy: the cache kept its own

    def _incremental(self, ids: np.ndarray, width: int, first: np.ndarray) -> np.ndarray:
        """Kernels of ``ids`` brought up to date from the Woodbury rows since ``first`` (each id's own)."""
        import torch

        lo = int(first.min())
        if self._one_by_one(width):
            return self._each(ids, width, lo)  # one group, one ``first``
        X = self._rows(ids, width, torch.float32)
        Q = (X.reshape(-1, self.d) @ self._w[lo : self.r].T).reshape(len(ids), width, self.r - lo)
        if (first > lo).any():  # rows before an example's own ``first`` are in its kernel already
            older = (
                torch.arange(lo, self.r, device=self.device)[None, :]
                < torch.as_tensor(first, device=self.device)[:, None]
            )
            Q.masked_fill_(older[:, None, :], 0.0)
        K = self._bufs[width][torch.as_tensor(self._slot[ids], device=self.device)]
        K.baddbmm_(Q, Q.transpose(1, 2), alpha=-1.0)
        tr = K.diagonal(dim1=-2, dim2=-1).sum(-1).cpu().numpy()
        self._remember(ids, K, tr >= _DRIFT * self._ktr[ids], width)
        return _logdet_eye_plus(K, fallback=False, overwrite=True)  # K is a copy: the cache kept its own

    def _remember(self, ids: np.ndarray, K, keep: np.ndarray, width: int) -> None:
        import torch

        self._mark(ids, keep)
        if keep.any():
            self._buffer(width)[torch.as_tensor(self._slot[ids[keep]], device=self.device)] = (
                K if keep.all() else K[torch.as_tensor(keep)]
            )

    def _mark(self, ids: np.ndarray, keep: np.ndarray) -> None:
        """Kept kernels are up to date as of now; the others are not cached (recomputed fresh next time)."""
        self._kr[ids] = np.where(keep, self.r, -1)
        self._kepoch[ids[keep]] = self.epoch

    def add(self, j: int) -> None:
        """Add example j to V and update V^-1 (Woodbury when M_j <= d, else a fresh inverse)."""
        import torch

        mj = int(self.m[j])
        if mj == 0:
            return
        X = self._rows(np.array([j]), mj, torch.float64)[0]
        self.V = self.V + X.T @ X
        if mj <= self.d:
            Y = X @ self.vinv
            S = Y @ X.T
            S.diagonal().add_(1.0)
            W = torch.linalg.solve_triangular(torch.linalg.cholesky(S), Y, upper=False)
            self.vinv = self.vinv - W.T @ W
            if self.r + mj > len(self._w):
                grown = torch.zeros(2 * (self.r + mj), self.d, dtype=torch.float32, device=self.device)
                grown[: self.r] = self._w[: self.r]
                self._w = grown
            self._w[self.r : self.r + mj] = W
            self.r += mj
        else:
            self.vinv = torch.cholesky_inverse(torch.linalg.cholesky(self.V))
            self.epoch += 1
        # Woodbury drifts off symmetry in the last bits; keep it exactly symmetric.
        self.vinv = 0.5 * (self.vinv + self.vinv.T)
        self.vinv32 = self.vinv.float()
        self._u32 = self._u64 = None

    def exact_only(self) -> None:
        """Switch ``estimate`` to exact float64 for the rest of the run (drops the float32 kernel cache)."""
        self.f32 = False
        self._kr[:] = -1
        self._bufs.clear()


@cache
def _blas(dtype: Any = np.float32) -> tuple[Any, Any, Any]:
    """scipy's syrk, trmm and potrf for ``dtype``, looked up once (an in-function import costs ~0.5 ms a call)."""
    from scipy.linalg import blas, lapack

    p = "s" if dtype == np.float32 else "d"
    return getattr(blas, p + "syrk"), getattr(blas, p + "trmm"), getattr(lapack, p + "potrf")


def _width_class(m: np.ndarray) -> np.ndarray:
    """The smallest of 8, 10, 12, 16, 20, 24, 32, 40, 48, ... (1, 1.25, 1.5 times a power of 2) that is >= m."""
    ladder = np.array([f * 2**e for e in range(3, 40) for f in (1, 1.25, 1.5)], dtype=np.int64)
    return ladder[np.searchsorted(ladder, m)]


def _list_source(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    for i, x in enumerate(features):
        if np.ndim(x) != 2:
            raise CurateError(f"features[{i}]: expected a 2-D (tokens x d) array, got shape {np.shape(x)}")
    dims = {np.shape(x)[1] for x in features}
    if len(dims) > 1:
        raise CurateError(f"features have different widths {sorted(dims)}: every example needs the same d")
    d = dims.pop() if dims else 0
    arrays = [np.asarray(x) for x in features]
    dtype = np.result_type(*(a.dtype for a in arrays)) if arrays else np.dtype(np.float64)
    if dtype.kind != "f" or dtype.itemsize > 8:
        dtype = np.dtype(np.float64)
    src = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros((0, d))
    if not np.isfinite(src).all():
        bad = next(i for i, x in enumerate(arrays) if not np.isfinite(x).all())
        raise CurateError(f"features[{bad}] has NaN or infinite values")
    return src, np.array([len(x) for x in arrays], dtype=np.int64)


def _flat_source(features: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    flat, lengths = features.flat, np.asarray(features.lengths)
    if np.ndim(flat) != 2:
        raise CurateError(f"flat features: expected a 2-D (rows x d) array, got shape {np.shape(flat)}")
    if not isinstance(flat, np.ndarray) or flat.dtype.kind != "f" or flat.dtype.itemsize > 8:
        raise CurateError(f"flat features: expected a float16/32/64 array, got {getattr(flat, 'dtype', type(flat))}")
    if lengths.ndim != 1 or (len(lengths) and (lengths.dtype.kind not in "iu" or lengths.min() < 0)):
        raise CurateError("flat features: lengths must be a 1-D array of non-negative integers")
    lengths = lengths.astype(np.int64)
    if int(lengths.sum()) != len(flat):
        raise CurateError(f"flat features: lengths sum to {int(lengths.sum())} but there are {len(flat)} rows")
    # Finiteness is checked on every gathered batch rather than in one pass over a possibly huge memmap.
    return flat, lengths, True


def _logdet_eye_plus(K, fallback: bool = True, overwrite: bool = False) -> np.ndarray:
    """log det(I + K) for a batch of symmetric PSD K (Cholesky; LU where rounding breaks positivity, or NaN).

    ``overwrite``: K itself becomes I + K (no copy).
    """
    import torch

    A = K if overwrite else K.clone()
    A.diagonal(dim1=-2, dim2=-1).add_(1.0)
    L, info = torch.linalg.cholesky_ex(A)
    g = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    if bool(info.any()):
        bad = info != 0
        g[bad] = torch.linalg.slogdet(A[bad]).logabsdet if fallback else float("nan")
    return g.cpu().numpy().astype(np.float64)


@contextmanager
def _one_cpu_thread(device: Any) -> Iterator[None]:
    """Run torch single-threaded on CPU for the duration.

    The loop is thousands of small matrix ops; torch's intra-op thread pool spins between them, which on a
    busy 2-core machine made the lazy loop 35x slower (and plain greedy 4x) than one thread.
    """
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_args(lengths: np.ndarray, k: int | None, budget_tokens: int | None, tokens) -> np.ndarray:
    if k is not None and (not isinstance(k, int | np.integer) or k < 0):
        raise CurateError(f"k must be a non-negative integer, got {k!r}")
    if budget_tokens is not None and budget_tokens < 0:
        raise CurateError(f"--budget-tokens must be non-negative, got {budget_tokens!r}")
    if tokens is None:
        return lengths
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.shape != (len(lengths),):
        raise CurateError(f"tokens has shape {tokens.shape}, expected ({len(lengths)},)")
    return tokens


def _lazy_greedy(
    state: LogDetState, k: int | None, budget_tokens: int | None, tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = state.n
    k = n if k is None else min(int(k), n)
    left = None if budget_tokens is None else int(budget_tokens)
    picks: list[int] = []
    gains: list[float] = []
    if n == 0 or k == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    # [lo, hi] brackets i's gain when last evaluated (float32 +- margin, or exact). hi stays an upper bound as V
    # grows, since gains only shrink; an exact zero (hi == 0) needs no re-evaluation, gains being >= 0.
    g, err = state.estimate(np.arange(n))
    state.evaluations = state.forced = n  # every candidate once, to start
    hi, lo = g + err, g - err
    fresh = np.ones(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    batch = 1
    cap = 512 + 4 * state.slack  # the most one round takes (more where evaluations are cheap)
    while len(picks) < k:
        if left is not None:
            alive &= tokens <= left  # the token budget only shrinks: what does not fit now never will
        stale_hi = np.full(0, 0.0)  # the bounds that the candidates evaluated this step had before
        size = batch
        broken = False
        while True:
            known = alive & fresh
            best = -np.inf  # the best exact gain is at least this
            if known.any():
                at = np.nonzero(known)[0]
                lead = int(at[np.argmax(lo[at])])
                if hi[lead] > lo[lead]:
                    # The leader's exact gain (float64) is the best exact gain: nothing in the float32 margin
                    # below it needs re-evaluating (with dense gains that band holds a quarter of the candidates).
                    exact = float(state.gains(np.array([lead]))[0])
                    if not lo[lead] <= exact <= hi[lead]:
                        broken = True
                        break
                    hi[lead] = lo[lead] = exact
                best = float(lo[known].max())
            # Only stale candidates whose bound could beat or tie the best exact gain need re-evaluating.
            need = np.nonzero(alive & ~fresh & (hi >= _tie_threshold(best)))[0]
            if len(need) == 0:
                break
            if len(need) > size + state.slack:
                # The largest bounds first; one vectorised evaluation of a batch is far cheaper than many
                # single ones, and the extra gains only tighten bounds. ``slack`` more cost about one call.
                take = size + state.slack
                need = need[np.argpartition(-hi[need], take - 1)[:take]]
            stale_hi = np.concatenate([stale_hi, hi[need]])
            state.evaluations += len(need)
            size = min(2 * size, cap)  # still not done: the next round takes more at once
            g, err = state.estimate(need)
            hi[need], lo[need] = g + err, g - err
            fresh[need] = True
        if not broken and best == -np.inf:
            break
        # Every candidate that could tie the best gets its exact float64 gain, so the tie rule sees what plain
        # greedy sees: the lowest index among the gains within TIE_RTOL of the best.
        if not broken:
            close = np.nonzero(alive & fresh & (hi >= _tie_threshold(best)))[0]
            loose = close[hi[close] > lo[close]]
            if len(loose):
                exact = state.gains(loose)
                broken = bool(np.any((exact > hi[loose]) | (exact < lo[loose])))
                hi[loose] = lo[loose] = exact
        if broken:
            # A float32 gain left its margin: no float32 bound can be trusted, so start over exactly.
            state.exact_only()
            hi = np.zeros(n)
            hi[alive] = state.gains(np.nonzero(alive)[0])
            lo = hi.copy()
            fresh = np.ones(n, dtype=bool)
            continue
        top = float(hi[close].max())
        j = int(close[hi[close] >= _tie_threshold(top)][0])
        picks.append(j)
        gains.append(float(hi[j]))
        state.add(j)
        alive[j] = False
        if left is not None:
            left -= int(tokens[j])
        fresh = hi == 0.0
        # The next step likely needs about as many re-evaluations as this one did: those whose stale bound
        # reached the pick's gain (any exact lazy loop evaluates them), not the batches' overshoot.
        forced = int(np.count_nonzero(stale_hi >= _tie_threshold(gains[-1])))
        state.forced += forced
        batch = int(min(cap, max(8, forced)))
    return np.asarray(picks, dtype=np.int64), np.asarray(gains, dtype=np.float64)


def greedy_logdet(
    features: Sequence[np.ndarray] | FlatFeatures,
    k: int | None = None,
    *,
    lam: float = 1.0,
    budget_tokens: int | None = None,
    tokens: Sequence[int] | np.ndarray | None = None,
    device: Any = None,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy maximisation of log det(lam I + sum_{i in S} X_i^T X_i); exactly plain greedy's answer.

    ``features[i]`` is example i's (M_i x d) token features, or ``features`` has ``.flat`` ((sum M_i) x d, any
    float dtype, may be an ``np.memmap``) and ``.lengths`` (M_i), see `FlatFeatures`. Stops after ``k`` picks
    (None = no limit) or when nothing fits ``budget_tokens`` (example i costs ``tokens[i]``, default M_i;
    candidates that no longer fit are skipped and the loop goes on). Returns picked indices in pick order and
    each pick's exact float64 gain. ``stats``, if given, receives the loop's gain ``evaluations`` (every candidate
    once to start, then each re-evaluation of a stale bound; the float64 re-checks of the leader and of near-ties
    are not counted) and how many of them were ``forced``: of candidates whose bound reached the gain picked at
    that step (every exact lazy greedy with these bounds evaluates those; the rest are the rounds' overshoot).

    >>> X = [np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, 1.0]])]
    >>> idx, g = greedy_logdet(X, 2)
    >>> idx.tolist(), np.round(g, 4).tolist()
    ([1, 2], [1.6094, 0.6931])
    """
    state = LogDetState(features, lam=lam, device=device, cache_kernels=True)
    if tokens is None:  # a reduced row (QR factor) holds fewer rows than the tokens it stands for
        tokens = getattr(features, "tokens", None)
    tokens_arr = _check_args(state.m, k, budget_tokens, tokens)
    with _one_cpu_thread(state.device):
        out = _lazy_greedy(state, k, budget_tokens, tokens_arr)
    if stats is not None:
        stats.update(evaluations=state.evaluations, forced=state.forced)
    return out


def plain_greedy_logdet(
    features: Sequence[np.ndarray] | FlatFeatures,
    k: int | None = None,
    *,
    lam: float = 1.0,
    budget_tokens: int | None = None,
    tokens: Sequence[int] | np.ndarray | None = None,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy that recomputes every candidate's exact gain (batched) at every step: the baseline for the lazy loop.

    >>> X = [np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, 1.0]])]
    >>> plain_greedy_logdet(X, 2)[0].tolist()
    [1, 2]
    """
    state = LogDetState(features, lam=lam, device=device)
    if tokens is None:
        tokens = getattr(features, "tokens", None)
    tokens_arr = _check_args(state.m, k, budget_tokens, tokens)
    with _one_cpu_thread(state.device):
        return _plain_loop(state, k, budget_tokens, tokens_arr)


def _plain_loop(
    state: LogDetState, k: int | None, budget_tokens: int | None, tokens_arr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = state.n
    k = n if k is None else min(int(k), n)
    left = None if budget_tokens is None else int(budget_tokens)
    alive = np.ones(n, dtype=bool)
    picks: list[int] = []
    gains: list[float] = []
    while len(picks) < k:
        if left is not None:
            alive &= tokens_arr <= left
        cand = np.nonzero(alive)[0]
        if len(cand) == 0:
            break
        g = state.gains(cand)
        pos = int(np.nonzero(g >= _tie_threshold(float(g.max())))[0][0])  # lowest index among the tied
        j = int(cand[pos])
        picks.append(j)
        gains.append(float(g[pos]))
        alive[j] = False
        state.add(j)
        if left is not None:
            left -= int(tokens_arr[j])
    return np.asarray(picks, dtype=np.int64), np.asarray(gains, dtype=np.float64)


class FisherSelector(Selector):
    """Greedy log-det (FisherSFT) over last-layer features of the trained tokens; keeps rows in pick order.

    Args:
        model: LM whose last-layer features (the LM head's input) score the rows.
        lam: Prior lam of lam * I in the log-det; only keeps the matrix invertible.
        dim: Random projection of the features to this many dimensions (memory); none keeps them all.
        max_tokens_per_example: Cap on the trained tokens per row that enter the features (memory); none: all.

    >>> v = curate.select("sample-sft", method="fisher", budget=50, name="sft-fisher")   # doctest: +SKIP
    """

    name = "fisher"
    requires = ("messages",)

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        budget_tokens: int | None = None,
        seed: int = 0,
        model: str = "smollm2-135m",
        lam: float = 1.0,
        dim: int | None = None,
        max_tokens_per_example: int | None = None,
        batch_tokens: int | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
    ):
        self.budget = budget
        self.fraction = fraction
        self.budget_tokens = budget_tokens
        self.seed = seed
        self.model = model
        self.lam = lam
        self.dim = dim
        self.max_tokens_per_example = max_tokens_per_example
        self.batch_tokens = batch_tokens
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker

    def fit(self, version: Version) -> Self:
        """Features on disk (``scoring.feature_matrix``: each row's X_i, or the d x d R of its QR when M_i > d,
        float16), then the lazy greedy over them; memory holds the greedy's state, not the features."""
        from curate.scoring import feature_matrix

        check_budget(self.budget, self.fraction, self.budget_tokens, required=True)
        if not self.lam > 0:
            raise CurateError(f"--lam must be > 0, got {self.lam!r}")
        self.version_ = version
        self.stats_: dict[str, int] = {}
        feats = feature_matrix(
            version,
            model=self.model,
            dim=self.dim,
            max_tokens_per_example=self.max_tokens_per_example,
            seed=self.seed,
            batch_tokens=self.batch_tokens,
            stats=self.stats_,
            **self.engine_kwargs(),
        )
        n = len(feats)
        self.empty_ = feats.lengths == 0
        cand = np.nonzero(~self.empty_)[0]
        tokens = self.token_counts()[cand] if self.budget_tokens is not None else None
        if self.budget is not None:
            k = int(self.budget)
        elif self.fraction is not None:
            k = int(round(float(self.fraction) * n))
        else:
            k = None
        # Empty rows own no rows of ``flat``: dropping their lengths leaves every other row's block in place.
        state = LogDetState.from_flat(feats.flat, feats.lengths[cand], lam=self.lam, cache_kernels=True)
        with _one_cpu_thread(state.device):
            picks, gains = _lazy_greedy(state, k, self.budget_tokens, state.m if tokens is None else tokens)
            # Unpicked rows get their exact gain against the final V, so decisions.parquet ranks every row.
            rest = np.setdiff1d(np.arange(len(cand)), picks)
            rest_gains = state.gains(rest)
        self.picks_ = cand[picks]
        scores = np.zeros(n, dtype=np.float64)
        scores[self.picks_] = gains
        scores[cand[rest]] = rest_gains
        self.scores_ = scores
        return self

    def stats(self, selection: Selection) -> dict[str, Any]:
        """The base counts plus how many rows' features were computed vs read from the cache."""
        return {**super().stats(selection), "features": dict(getattr(self, "stats_", {}))}

    def identity(self) -> dict[str, Any]:
        from curate.models import resolve

        return {"model": resolve(self.model).identity}

    def token_counts(self) -> np.ndarray:
        from curate.scoring import response_token_counts

        return response_token_counts(self.version_, self.model)

    def select(self) -> Selection:
        """Kept rows in pick order; ``no_trained_tokens`` for rows with nothing to train on, else ``below_budget``."""
        reasons = ["no_trained_tokens" if e else "below_budget" for e in self.empty_]
        for i in self.picks_:
            reasons[i] = ""
        return Selection(order=np.asarray(self.picks_, dtype=np.int64), reasons=reasons)

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Kept rows in pick order with ``fisher_gain`` (the gain when picked) and ``fisher_rank`` (1 = first)."""
        out = super().transform(table, selection)
        return out.rename_columns([("fisher_gain" if c == "fisher_score" else c) for c in out.column_names])
