"""FisherSFT: pick the examples whose trained tokens add the most information about the LM head.

What it computes: every example i is a matrix X_i (M_i x d) of last-layer hidden states (the LM head's input)
at the positions SFT trains on. Greedy picks examples one at a time to maximise

    log det(lam * I_d + sum_{i in S} X_i^T X_i),

the log-determinant of the (linearised, L-independent part of the) Fisher information of the LM head. The gain
of adding i is log det(I + X_i V^-1 X_i^T) (matrix determinant lemma) and V^-1 is kept up to date with Woodbury.
The loop is lazy (Minoux): gains only shrink as V grows, so a gain computed earlier is an upper bound; each step
re-evaluates only candidates whose bound could still win, largest bounds first, in vectorised batches, and
updates their cached M_i x M_i kernels incrementally. It returns exactly what plain greedy returns.

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
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection, Selector, check_budget
from curate.store import Version

__all__ = ["FisherSelector", "greedy_logdet", "plain_greedy_logdet"]

# Gains this close (relative) to the best are ties, broken by the lowest index. Float64 rounding in a gain is
# ~1e-15 relative; 1e-9 absorbs it so batched and single evaluations can never disagree on a pick.
TIE_RTOL = 1e-9
# Elements (rows x d) in one padded batch of gain evaluations: bounds memory to ~32 MB of float64.
_CHUNK_ELEMS = 1 << 22
# Longest example whose M x M kernel the lazy loop caches (memory: N * 32^2 float64 = 8 KB per example).
_CACHE_MAX_TOKENS = 32


def _tie_threshold(best: float) -> float:
    return best - TIE_RTOL * abs(best)


class LogDetState:
    """V^-1 for V = lam I + sum of selected X_i^T X_i, and batched exact gains against it.

    All numerics are float64 (torch; CUDA when given, else CPU). Features are stored once as one flat
    (sum M_i + 1) x d tensor whose last row is zero, so a padded batch is a single gather.

    Every Woodbury step V^-1 <- V^-1 - W_j^T W_j (W_j = L_j^-1 X_j V^-1, L_j L_j^T = I + X_j V^-1 X_j^T) is
    also kept as rows W_j. With ``cache_kernels`` the kernel K_i = X_i V^-1 X_i^T of each short example is
    remembered when computed, and ``refresh`` brings it up to date as K_i - (X_i W^T)(X_i W^T)^T over the rows
    added since, which costs (new rows) / d of a fresh evaluation: the lazy loop re-evaluates mostly
    candidates it saw a few steps ago.

    >>> s = LogDetState([np.eye(2), np.ones((1, 2))], lam=1.0)
    >>> round(float(s.gains(np.array([0]))[0]), 6)   # log det(I + I) in 2 dims
    1.386294
    """

    def __init__(
        self, features: Sequence[np.ndarray], lam: float = 1.0, device: Any = None, cache_kernels: bool = False
    ):
        import torch

        if not lam > 0:
            raise CurateError(f"--lam must be > 0, got {lam!r}")
        self.device = torch.device(device) if device is not None else _default_device()
        self.lam = float(lam)
        for i, x in enumerate(features):
            if np.ndim(x) != 2:
                raise CurateError(f"features[{i}]: expected a 2-D (tokens x d) array, got shape {np.shape(x)}")
        dims = {np.shape(x)[1] for x in features}
        if len(dims) > 1:
            raise CurateError(f"features have different widths {sorted(dims)}: every example needs the same d")
        self.d = d = dims.pop() if dims else 0
        self.n = len(features)
        self.m = np.array([len(x) for x in features], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.m)[:-1]]).astype(np.int64) if self.n else self.m
        self.zero_row = int(self.m.sum())
        flat = np.concatenate([*(np.asarray(x) for x in features), np.zeros((1, d))]).astype(np.float64)
        if not np.isfinite(flat).all():
            bad = next(i for i, x in enumerate(features) if not np.isfinite(np.asarray(x)).all())
            raise CurateError(f"features[{bad}] has NaN or infinite values")
        self.flat = torch.from_numpy(flat).to(self.device)
        eye = torch.eye(d, dtype=torch.float64, device=self.device)
        self.vinv = eye / self.lam
        self.V = eye * self.lam
        self._w = torch.zeros(64, d, dtype=torch.float64, device=self.device)  # Woodbury rows, grown by doubling
        self.r = 0  # Woodbury rows so far
        self.epoch = 0  # bumped by an update that is not a Woodbury step: cached kernels then go stale
        self.kbuf = None
        if cache_kernels and self.n:
            self.kw = min(int(self.m.max()), _CACHE_MAX_TOKENS, d)
            self.kbuf = torch.zeros(self.n, self.kw, self.kw, dtype=torch.float64, device=self.device)
            self.krow = np.full(self.n, -1, dtype=np.int64)  # self.r when the cached kernel was computed
            self.kepoch = np.zeros(self.n, dtype=np.int64)

    def _rows(self, ids: np.ndarray, width: int):
        import torch

        ar = np.arange(width)
        idx = self.offsets[ids][:, None] + ar[None, :]
        idx = np.where(ar[None, :] < self.m[ids][:, None], idx, self.zero_row)
        return self.flat[torch.as_tensor(idx, device=self.device)]

    def _remember(self, ids: np.ndarray, K, width: int) -> None:
        import torch

        if self.kbuf is None or width > self.kw:
            return
        self.kbuf[torch.as_tensor(ids, device=self.device), :width, :width] = K
        self.krow[ids] = self.r
        self.kepoch[ids] = self.epoch

    def _fresh(self, ids: np.ndarray) -> np.ndarray:
        import torch

        width = int(self.m[ids].max())
        X = self._rows(ids, width)  # (B, width, d); padded rows are zero and add log 1 = 0
        if width <= self.d:
            K = (X.reshape(-1, self.d) @ self.vinv).reshape(X.shape) @ X.transpose(1, 2)
            self._remember(ids, K, width)
            return _logdet_eye_plus(K)
        # More tokens than dimensions: the d x d form of the same determinant is cheaper.
        K = self.vinv @ (X.transpose(1, 2) @ X)
        K.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return torch.linalg.slogdet(K).logabsdet.cpu().numpy()

    def _incremental(self, ids: np.ndarray) -> np.ndarray:
        import torch

        width = int(self.m[ids].max())
        since = self.krow[ids]
        first = int(since.min())
        X = self._rows(ids, width)
        Q = (X.reshape(-1, self.d) @ self._w[first : self.r].T).reshape(len(ids), width, self.r - first)
        # Rows added before a candidate's own cache time are already inside its cached kernel.
        keep = np.arange(self.r - first)[None, :] >= (since - first)[:, None]
        Q = Q * torch.as_tensor(keep, dtype=Q.dtype, device=self.device)[:, None, :]
        K = self.kbuf[torch.as_tensor(ids, device=self.device), :width, :width] - Q @ Q.transpose(1, 2)
        self._remember(ids, K, width)
        return _logdet_eye_plus(K)

    def gains(self, idx: np.ndarray) -> np.ndarray:
        """Exact gains log det(I + X_i V^-1 X_i^T) of ``idx`` against the current V (0 for empty examples)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros(len(idx), dtype=np.float64)
        m = self.m[idx]
        nz = np.nonzero(m > 0)[0]
        # Sorting by length keeps the zero padding of each batch small.
        order = nz[np.argsort(m[nz], kind="stable")]
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * int(m[order[stop]]) * self.d <= _CHUNK_ELEMS:
                stop += 1
            pos = order[start:stop]
            out[pos] = self._fresh(idx[pos])
            start = stop
        # A zero gain is exact (no information), never a small negative from rounding.
        return np.maximum(out, 0.0)

    def refresh(self, idx: np.ndarray) -> np.ndarray:
        """The same gains as ``gains``, updating cached kernels where that is cheaper than recomputing."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.kbuf is None:
            return self.gains(idx)
        out = np.zeros(len(idx), dtype=np.float64)
        new = self.r - self.krow[idx]
        ok = (self.krow[idx] >= 0) & (self.kepoch[idx] == self.epoch) & (self.m[idx] > 0) & (self.m[idx] <= self.kw)
        # Group by how many rows are new, so one old cache entry does not make the whole batch pay for its rows.
        done = np.zeros(len(idx), dtype=bool)
        for cap in (self.d // 16, self.d // 8, self.d // 4, self.d // 2, self.d):
            grp = np.nonzero(ok & ~done & (new <= cap))[0]
            if len(grp):
                out[grp] = self._incremental(idx[grp])
                done[grp] = True
        rest = np.nonzero(~done)[0]
        if len(rest):
            out[rest] = self.gains(idx[rest])
        return np.maximum(out, 0.0)

    def add(self, j: int) -> None:
        """Add example j to V and update V^-1 (Woodbury when M_j <= d, else a fresh inverse)."""
        import torch

        mj = int(self.m[j])
        if mj == 0:
            return
        X = self.flat[int(self.offsets[j]) : int(self.offsets[j]) + mj]
        self.V = self.V + X.T @ X
        if mj <= self.d:
            Y = X @ self.vinv
            S = Y @ X.T
            S.diagonal().add_(1.0)
            W = torch.linalg.solve_triangular(torch.linalg.cholesky(S), Y, upper=False)
            self.vinv = self.vinv - W.T @ W
            if self.r + mj > len(self._w):
                grown = torch.zeros(2 * (self.r + mj), self.d, dtype=torch.float64, device=self.device)
                grown[: self.r] = self._w[: self.r]
                self._w = grown
            self._w[self.r : self.r + mj] = W
            self.r += mj
        else:
            self.vinv = torch.cholesky_inverse(torch.linalg.cholesky(self.V))
            self.epoch += 1
        # Woodbury drifts off symmetry in the last bits; keep it exactly symmetric.
        self.vinv = 0.5 * (self.vinv + self.vinv.T)


def _logdet_eye_plus(K) -> np.ndarray:
    """log det(I + K) for a batch of symmetric PSD K (Cholesky; LU where rounding breaks positivity)."""
    import torch

    A = K.clone()
    A.diagonal(dim1=-2, dim2=-1).add_(1.0)
    L, info = torch.linalg.cholesky_ex(A)
    g = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    if bool(info.any()):
        bad = info != 0
        g[bad] = torch.linalg.slogdet(A[bad]).logabsdet
    return g.cpu().numpy()


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


def _check_args(features: Sequence[np.ndarray], k: int | None, budget_tokens: int | None, tokens) -> np.ndarray:
    if k is not None and (not isinstance(k, int | np.integer) or k < 0):
        raise CurateError(f"k must be a non-negative integer, got {k!r}")
    if budget_tokens is not None and budget_tokens < 0:
        raise CurateError(f"--budget-tokens must be non-negative, got {budget_tokens!r}")
    if tokens is None:
        return np.array([len(x) for x in features], dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.shape != (len(features),):
        raise CurateError(f"tokens has shape {tokens.shape}, expected ({len(features)},)")
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
    # bound[i] is i's gain when last evaluated: an upper bound now, since gains only shrink as V grows.
    # A zero bound is exact (gains are >= 0), so zeros never need re-evaluation.
    bound = state.refresh(np.arange(n))
    fresh = np.ones(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    batch = 1
    while len(picks) < k:
        if left is not None:
            alive &= tokens <= left  # the token budget only shrinks: what does not fit now never will
        evaluated = 0
        while True:
            known = alive & fresh
            best = float(bound[known].max()) if known.any() else -np.inf
            # Only stale candidates whose bound could beat or tie the best exact gain need re-evaluating.
            need = np.nonzero(alive & ~fresh & (bound >= _tie_threshold(best)))[0]
            if len(need) == 0:
                break
            if len(need) > batch:
                # The largest bounds first; one vectorised evaluation of a batch is far cheaper than many
                # single ones, and the extra exact gains change nothing.
                need = need[np.argpartition(-bound[need], batch - 1)[:batch]]
            bound[need] = state.refresh(need)
            fresh[need] = True
            evaluated += len(need)
        if best == -np.inf:
            break
        # Tie-break: the lowest index among the gains within TIE_RTOL of the best.
        j = int(np.nonzero(alive & fresh & (bound >= _tie_threshold(best)))[0][0])
        picks.append(j)
        gains.append(float(bound[j]))
        state.add(j)
        alive[j] = False
        if left is not None:
            left -= int(tokens[j])
        fresh = bound == 0.0
        # The next step likely needs about as many re-evaluations as this one did.
        batch = int(min(512, max(8, 2 * evaluated)))
    return np.asarray(picks, dtype=np.int64), np.asarray(gains, dtype=np.float64)


def greedy_logdet(
    features: Sequence[np.ndarray],
    k: int | None = None,
    *,
    lam: float = 1.0,
    budget_tokens: int | None = None,
    tokens: Sequence[int] | np.ndarray | None = None,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lazy greedy maximisation of log det(lam I + sum_{i in S} X_i^T X_i); exactly plain greedy's answer.

    ``features[i]`` is example i's (M_i x d) token features. Stops after ``k`` picks (None = no limit) or when
    nothing fits ``budget_tokens`` (example i costs ``tokens[i]``, default M_i; candidates that no longer fit
    are skipped and the loop goes on). Returns picked indices in pick order and each pick's gain.

    >>> X = [np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, 1.0]])]
    >>> idx, g = greedy_logdet(X, 2)
    >>> idx.tolist(), np.round(g, 4).tolist()
    ([1, 2], [1.6094, 0.6931])
    """
    tokens_arr = _check_args(features, k, budget_tokens, tokens)
    state = LogDetState(features, lam=lam, device=device, cache_kernels=True)
    with _one_cpu_thread(state.device):
        return _lazy_greedy(state, k, budget_tokens, tokens_arr)


def plain_greedy_logdet(
    features: Sequence[np.ndarray],
    k: int | None = None,
    *,
    lam: float = 1.0,
    budget_tokens: int | None = None,
    tokens: Sequence[int] | np.ndarray | None = None,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy that recomputes every candidate's gain (batched) at every step: the baseline for the lazy loop.

    >>> X = [np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, 1.0]])]
    >>> plain_greedy_logdet(X, 2)[0].tolist()
    [1, 2]
    """
    tokens_arr = _check_args(features, k, budget_tokens, tokens)
    state = LogDetState(features, lam=lam, device=device)
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
        from curate.scoring import extract_features

        check_budget(self.budget, self.fraction, self.budget_tokens, required=True)
        if not self.lam > 0:
            raise CurateError(f"--lam must be > 0, got {self.lam!r}")
        self.version_ = version
        self.stats_: dict[str, int] = {}
        feats = extract_features(
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
        self.empty_ = np.array([len(x) == 0 for x in feats], dtype=bool)
        cand = np.nonzero(~self.empty_)[0]
        tokens = self.token_counts()[cand] if self.budget_tokens is not None else None
        if self.budget is not None:
            k = int(self.budget)
        elif self.fraction is not None:
            k = int(round(float(self.fraction) * n))
        else:
            k = None
        state = LogDetState([feats[i] for i in cand], lam=self.lam, cache_kernels=True)
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
