"""Token Cleaning: keep the SFT label only on the response tokens a reference model learned best.

What it computes. Token quality is treated as a noisy-label problem: every response token starts with label 1
(trained), and cleaning keeps it only if its influence

    score(i, j) = loss_base(x_ij | x_i<j) - loss_ref(x_ij | x_i<j)

is among the top ``keep`` share (per-token cross-entropy, natural log, from ``curate.scoring.token_losses``: one
forward pass per model, no backward, cached), or among the top ``budget_tokens`` tokens (a token budget). A high score
means the reference learned the token much better than the base model; a token neither predicts (noise, a typo, an
arbitrary fact) scores low and is dropped. Candidates are the tokens SFT trains on (``chat.assistant_token_mask``:
assistant content and its end-of-turn token); prompt tokens are never kept. ``scope="global"`` ranks all response
tokens of the dataset together (the paper's method), ``scope="sample"`` ranks within each row (the RHO-1 style
baseline) and ``random=True`` keeps a seeded uniform ``keep`` share instead (the paper's random baseline; global, or
per row with ``scope="sample"``). Exactly ``int(total * keep)`` tokens are kept (``int(n_i * keep)`` per row for
``sample``), as the reference code does, or ``min(budget_tokens, total)`` (global scope, fixed mode only); ties go to
the higher score first, then the lower (row, position); a NaN score ranks last.

The reference model: ``reference`` names one; ``reference_from`` names a warm-up version, on which
``curate.train.sft`` fine-tunes ``base`` (``ref_epochs``, ``ref_steps``, ``ref_lr``, ``ref_batch_size``); the result
lives under the store's cache dir keyed by (base identity, warm-up version id, config), so a re-run reuses it,
and the warm-up version becomes a second parent of the output. ``mode="self-evolving"`` splits the pool in order
into ``rounds + 1`` parts, fine-tunes ``base`` on every response token of part 0 (theta_0), then for t = 1..R
scores part t against theta_{t-1} (the base term stays the original ``base``, as in the reference code), keeps
the top ``keep`` share within part t, and fine-tunes theta_{t-1} on part t's cleaned labels to get theta_t.
The trainer is a service (``uses = ("train_sft",)``): ``curate select`` binds ``curate.train.sft``, and a selector
fitted by hand needs ``bind(train_sft=curate.train.sft)`` (selectors never import the trainers).

Output: the same rows in the same order, each with ``input_ids`` and ``labels`` (int32; -100 on prompt and
dropped tokens; ``curate train sft`` trains on exactly the kept tokens), ``kept_token_share`` (kept / response
tokens of the row; NaN for a row without response tokens), ``token_clean_score`` (the row's mean token score over
its response tokens: ``scores_`` and the decisions' score; NaN when no scores exist) and, with
``store_scores=True``, ``token_scores`` (float32 per token, NaN off the response). Self-evolving adds
``token_clean_round`` (0 = the warm-up part). Every row is kept (reason ""), except with ``budget_tokens``: a row
left with no kept token is dropped (``no_kept_tokens``), since training on it costs compute and changes nothing.
The manifest's ``tokenizer`` entry names the tokenizer and chat template the ids belong to.

Paper: Pang, Di, Zhu, Wei, Cheng, Qian, Liu, "Token Cleaning: Fine-Grained Data Selection for LLM Supervised
Fine-Tuning", ICML 2025, arXiv 2502.01968; reference code UCSC-REAL/TokenCleaning.

Departures from the paper:
- The reference is a full fine-tune (AdamW, ``curate.train.sft``, default lr 2e-5, 1 epoch) instead of a LoRA
  (r 64, alpha 16, lr 1e-4) merged into the base; sizes are whatever you pass (the paper: 10k warm-up, 50k pool).
- Sequences are cut at the tokenizer's ``model_max_length`` (8192 for SmolLM2) instead of 2048, and stored
  ragged, not padded.
- Self-evolving: part 0 keeps every response token (theta_0 trains on all of them, as in the paper; its rows
  have ``token_clean_round`` 0 and NaN scores). The last fine-tune, theta_R on part R, is not run: the output is
  the labels, and the models theta_0..theta_{R-1} are listed in the version's stats (``models``) to continue from.
- ``curate train sft`` normalises the loss by the kept tokens of the whole optimizer step; the reference code's
  HF loss averages per micro-batch.

    curate select pool --method token-clean --reference-from warmup --keep 0.6 --name pool-clean
    curate select pool --method token-clean --reference-from warmup --budget-tokens 2048 --name pool-clean-2k
    curate select pool --method token-clean --reference runs/ref --scope sample --name pool-rho
    curate select pool --method token-clean --random --name pool-random60
    curate select pool --method token-clean --mode self-evolving --rounds 4 --name pool-clean-se
    curate train sft pool-clean --model smollm2-135m --out runs/clean
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection, Selector, check_budget, rank_desc
from curate.store import Store, Version

__all__ = ["TokenCleanSelector", "keep_random", "keep_top", "train_reference"]

IGNORE = -100
SCOPES = ("global", "sample")
MODES = ("fixed", "self-evolving")
_OUT_COLUMNS = ("input_ids", "labels", "kept_token_share", "token_scores", "token_clean_score", "token_clean_round")
#: the run info ``curate.train.sft`` writes last into a model folder (``curate.train.data.CONFIG_FILE``): its
#: presence means the reference model is complete. Spelled out because selectors never import the trainers.
TRAINED_MARKER = "curate_train.json"


# ---------------------------------------------------------------------------------------------- choosing tokens


def keep_top(
    scores: Sequence[np.ndarray], *, keep: float, scope: str = "global", count: int | None = None
) -> list[np.ndarray]:
    """Keep-masks over each row's candidate tokens: the top ``keep`` share by score.

    ``global`` keeps ``int(total * keep)`` tokens of all rows together (``count`` of them when given: a token
    budget), ``sample`` ``int(n_i * keep)`` per row. Ties: higher score first, then lower (row, position); NaN ranks
    last.

    >>> [m.tolist() for m in keep_top([np.array([3.0, 1.0]), np.array([3.0, 2.0, 0.0])], keep=0.6)]
    [[True, False], [True, True, False]]
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    if scope == "sample":
        out = []
        for s in arrays:
            m = np.zeros(len(s), dtype=bool)
            m[rank_desc(s)[: int(len(s) * float(keep))]] = True
            out.append(m)
        return out
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    m = np.zeros(len(flat), dtype=bool)
    k = int(len(flat) * float(keep)) if count is None else min(int(count), len(flat))
    # rank_desc is a stable sort of the row-major flat array, so equal scores keep (row, position) order.
    m[rank_desc(flat)[:k]] = True
    return np.split(m, np.cumsum([len(s) for s in arrays])[:-1]) if arrays else []


def keep_random(
    counts: Sequence[int], *, keep: float, scope: str = "global", seed: int = 0, count: int | None = None
) -> list[np.ndarray]:
    """Keep-masks for the random baseline: the same counts as ``keep_top``, positions drawn uniformly under ``seed``.

    >>> [int(m.sum()) for m in keep_random([5, 5], keep=0.6, seed=0)]  # 6 of 10, anywhere
    [3, 3]
    """
    rng = np.random.default_rng(seed)
    if scope == "sample":
        out = []
        for n in counts:
            m = np.zeros(int(n), dtype=bool)
            m[rng.permutation(int(n))[: int(int(n) * float(keep))]] = True
            out.append(m)
        return out
    total = int(sum(counts))
    m = np.zeros(total, dtype=bool)
    k = int(total * float(keep)) if count is None else min(int(count), total)
    m[rng.permutation(total)[:k]] = True
    return np.split(m, np.cumsum([int(n) for n in counts])[:-1]) if len(counts) else []


# ---------------------------------------------------------------------------------------------- reference models


def _models_root(store: Store, key: str) -> Path:
    if store.remote:  # trainers write local folders; a remote store's cache is not one
        from curate.models import cache_root

        return cache_root() / "token-clean-models" / key
    return Path(store.cache_dir("token-clean-models", key))


def train_reference(
    store: Store,
    start: str,
    data: Version | Sequence[dict],
    *,
    data_key: str,
    config: dict[str, Any],
    train_sft: Callable[..., Any],
) -> Path:
    """Fine-tune ``start`` on ``data`` with ``train_sft`` once; return the model folder (reused when present).

    ``train_sft`` is ``curate.train.sft`` or a function with its signature (``data``, ``store=``, ``model=``,
    ``out=``, SFT settings); ``data`` is a store version or rows (``id`` + ``messages`` or ``input_ids``/``labels``),
    handed to it as they are. The folder is ``<store>/cache/token-clean-models/<key>``, key = hash(start identity,
    ``data_key``, ``config``); it is trained in a staging folder and renamed into place when finished, so a killed
    run leaves nothing that looks done.

    >>> w = store.load("warmup")                                                                  # doctest: +SKIP
    >>> train_reference(store, "smollm2-135m", w, data_key=f"version:{w.id}", config={"lr": 2e-5},
    ...                 train_sft=curate.train.sft)                                             # doctest: +SKIP
    """
    from curate.cache import settings_key
    from curate.models import resolve
    from curate.outputs import writing_store_cache

    key = settings_key({"start": resolve(start).identity, "data": data_key, "config": config})
    out = _models_root(store, key)
    if (out / TRAINED_MARKER).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with writing_store_cache():  # the one trainer --out that may lie in the store: its own model cache
            train_sft(
                data if isinstance(data, Version) else list(data), store=store, model=start, out=str(stage), **config
            )
        try:
            os.replace(stage, out)
        except OSError:
            if not (out / TRAINED_MARKER).exists():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _rows_key(rows: Sequence[dict]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        for col in ("input_ids", "labels"):
            a = np.asarray(r[col], dtype=np.int32)
            digest.update(np.int64(len(a)).tobytes() + a.tobytes())
    return digest.hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- the selector


class TokenCleanSelector(Selector):
    """Token Cleaning (global top-``keep`` of loss_base - loss_ref over response tokens); keeps every row.

    Args:
        keep: Share of response tokens kept as labels, highest score first.
        budget_tokens: Keep this many response tokens instead of a share (global scope, fixed mode).
        scope: Rank tokens over the whole dataset (global, the paper) or within each row (sample).
        random: Keep a seeded uniform --keep share instead of the top scores (the paper's baseline).
        seed: Seed of --random.
        base: Base model whose token losses the reference's are compared with.
        reference: A fine-tuned reference model to score with (alias or folder).
        reference_from: A warm-up version to fine-tune --base on as the reference instead.
        mode: fixed (one reference) or self-evolving (--rounds parts, each scored by the model of the last).
        rounds: Rounds of self-evolving mode (the pool is split into rounds + 1 parts).
        ref_epochs: Epochs of the reference fine-tune.
        ref_steps: Steps of the reference fine-tune (none: from --ref-epochs).
        ref_lr: Learning rate of the reference fine-tune.
        ref_batch_size: Batch size of the reference fine-tune.
        store_scores: Also store every token's score (a token_scores column).

    >>> v = curate.select("pool", method="token-clean", reference_from="warmup", name="pool-clean")  # doctest: +SKIP
    """

    name = "token-clean"
    requires = ("messages",)
    uses = ("train_sft",)
    added_params = ("budget_tokens",)

    def __init__(
        self,
        *,
        keep: float = 0.6,
        budget_tokens: int | None = None,
        scope: str = "global",
        random: bool = False,
        seed: int = 0,
        base: str = "smollm2-135m",
        reference: str | None = None,
        reference_from: str | None = None,
        mode: str = "fixed",
        rounds: int = 4,
        ref_epochs: int = 1,
        ref_steps: int | None = None,
        ref_lr: float = 2e-5,
        ref_batch_size: int = 8,
        store_scores: bool = False,
        batch_tokens: int | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
    ):
        self.keep = keep
        self.budget_tokens = budget_tokens
        self.scope = scope
        self.random = random
        self.seed = seed
        self.base = base
        self.reference = reference
        self.reference_from = reference_from
        self.mode = mode
        self.rounds = rounds
        self.ref_epochs = ref_epochs
        self.ref_steps = ref_steps
        self.ref_lr = ref_lr
        self.ref_batch_size = ref_batch_size
        self.store_scores = store_scores
        self.batch_tokens = batch_tokens
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker

    # ------------------------------------------------------------------ checks and identity
    def _check(self) -> None:
        if not 0.0 <= float(self.keep) <= 1.0:
            raise CurateError(f"--keep must be in [0, 1], got {self.keep!r}")
        if self.scope not in SCOPES:
            raise CurateError(f"--scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.budget_tokens is not None:
            check_budget(None, None, self.budget_tokens, required=False)
            if self.scope != "global" or self.mode != "fixed":
                raise CurateError(
                    "--budget-tokens ranks all response tokens together: only with --scope global, --mode fixed"
                )
        if self.mode not in MODES:
            raise CurateError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for flag, value in (("--ref-epochs", self.ref_epochs), ("--ref-batch-size", self.ref_batch_size)):
            if value < 1:
                raise CurateError(f"{flag} must be >= 1, got {value!r}")
        if self.ref_steps is not None and self.ref_steps < 1:
            raise CurateError(f"--ref-steps must be >= 1 (or unset), got {self.ref_steps!r}")
        if not self.ref_lr > 0:
            raise CurateError(f"--ref-lr must be > 0, got {self.ref_lr!r}")
        if self.reference is not None and self.reference_from is not None:
            raise CurateError("give --reference MODEL or --reference-from WARMUP_REF, not both")
        if self.mode == "self-evolving":
            if self.reference is not None or self.reference_from is not None:
                raise CurateError(
                    "--mode self-evolving trains its own references from the pool; drop --reference/--reference-from"
                )
            if self.random:
                raise CurateError("--random is a baseline of --mode fixed, not of --mode self-evolving")
            if self.rounds < 1:
                raise CurateError(f"--rounds must be >= 1, got {self.rounds!r}")
        elif not self.random and self.reference is None and self.reference_from is None:
            raise CurateError(
                "--method token-clean needs a reference: --reference MODEL, --reference-from WARMUP_REF "
                "(fine-tunes --base on it), or --mode self-evolving"
            )

    def identity(self) -> dict[str, Any]:
        from curate.models import resolve

        out = {"base": resolve(self.base).identity}
        if self.reference is not None:
            out["reference"] = resolve(self.reference).identity
        return out

    def extra_parents(self) -> list[str]:
        # The warm-up version decides the reference model, so it is part of the lineage and the recipe id.
        return [self.reference_from] if self.reference_from is not None and self.mode == "fixed" else []

    def _sft_config(self) -> dict[str, Any]:
        return {
            "epochs": int(self.ref_epochs),
            "max_steps": None if self.ref_steps is None else int(self.ref_steps),
            "lr": float(self.ref_lr),
            "batch_size": int(self.ref_batch_size),
            "seed": int(self.seed),
        }

    # ------------------------------------------------------------------ fit
    def fit(self, version: Version) -> Self:
        from curate.chat import chat_template_hash
        from curate.models import load_tokenizer, resolve
        from curate.progress import progress
        from curate.scoring import _check_messages, _conversations, _max_length, _tokenizer_fingerprint, _trained_mask

        self._check()
        if (self.mode == "self-evolving" or self.reference_from is not None) and self.service("train_sft") is None:
            raise CurateError(
                "--method token-clean: training the reference model needs a trainer; run it through curate.select "
                "or `curate select`, or call bind(train_sft=curate.train.sft) first"
            )
        self.version_ = version
        store = version.store
        msgs, row_ids, src, _ = _conversations(version, None)
        self.convs_ = [_check_messages(m, src, i, rid) for i, (m, rid) in enumerate(zip(msgs, row_ids, strict=True))]
        self.row_ids_ = row_ids
        tokenizer = load_tokenizer(self.base)
        limit = _max_length(tokenizer)
        ids_list: list[np.ndarray] = []
        cands: list[np.ndarray] = []
        with progress(f"tokenising {src}", len(self.convs_)) as advance:
            for i, conv in enumerate(self.convs_):
                ids, mask = _trained_mask(tokenizer, conv, src, i, row_ids[i])
                if limit is not None:
                    ids, mask = ids[:limit], mask[:limit]
                mask = mask.copy()
                mask[:1] = False  # nothing precedes token 0, so it has no loss and SFT never trains it
                ids_list.append(np.asarray(ids, dtype=np.int64))
                cands.append(np.nonzero(mask)[0])
                advance(1)
        self.manifest_extra_ = {
            "tokenizer": {
                "model": self.base,
                "identity": resolve(self.base).identity,
                "class": type(tokenizer).__name__,
                "fingerprint": _tokenizer_fingerprint(tokenizer),
                "chat_template": chat_template_hash(tokenizer),
            }
        }
        self.loss_stats_: dict[str, dict[str, int]] = {}
        self.info_: dict[str, Any] = {"mode": self.mode, "scope": self.scope, "random": bool(self.random)}
        n = len(ids_list)
        token_scores: list[np.ndarray | None] = [None] * n
        keep_masks: list[np.ndarray] = [np.zeros(0, bool)] * n
        self.round_ = None
        if self.mode == "fixed":
            ref = self._fixed_reference(store)
            if ref is not None:
                scores = self._scores(store, list(range(n)), ref, ids_list, cands, keep_loaded=True)
                for i, s in zip(range(n), scores, strict=True):
                    token_scores[i] = s
            if self.random:
                counts = [len(c) for c in cands]
                masks = keep_random(counts, keep=self.keep, scope=self.scope, seed=self.seed, count=self.budget_tokens)
            else:
                row_scores = [token_scores[i][cands[i]] for i in range(n)]
                masks = keep_top(row_scores, keep=self.keep, scope=self.scope, count=self.budget_tokens)
            keep_masks = list(masks)
        else:
            self._self_evolving(store, ids_list, cands, token_scores, keep_masks)

        # -- labels, shares, per-row scores
        self.input_ids_, self.labels_, self.token_scores_ = [], [], []
        share = np.full(n, np.nan)
        row_score = np.full(n, np.nan)
        self.kept_tokens_ = self.response_tokens_ = 0
        for i in range(n):
            ids, cand, m = ids_list[i], cands[i], keep_masks[i]
            labels = np.full(len(ids), IGNORE, dtype=np.int64)
            labels[cand[m]] = ids[cand[m]]
            self.input_ids_.append(ids)
            self.labels_.append(labels)
            self.kept_tokens_ += int(m.sum())
            self.response_tokens_ += len(cand)
            if len(cand):
                share[i] = m.sum() / len(cand)
            full = np.full(len(ids), np.nan, dtype=np.float32)
            if token_scores[i] is not None and len(cand):
                full[cand] = token_scores[i][cand]
                row_score[i] = float(np.mean(token_scores[i][cand]))
            self.token_scores_.append(full)
        self.kept_share_ = share
        self.scores_ = row_score
        return self

    def _fixed_reference(self, store: Store) -> str | None:
        from curate.scoring import check_same_tokenizer

        if self.reference_from is not None:
            warmup = store.load(self.reference_from)
            path = train_reference(
                store,
                self.base,
                warmup,
                data_key=f"version:{warmup.id}",
                config=self._sft_config(),
                train_sft=self.service("train_sft"),
            )
            ref = str(path)
            self.info_["reference"] = {
                "model": ref,
                "trained_on": {"ref": warmup.ref, "id": warmup.id},
                "config": self._sft_config(),
            }
        elif self.reference is not None:
            ref = self.reference
            self.info_["reference"] = {"model": ref}
        else:
            return None
        check_same_tokenizer(self.base, ref)
        return ref

    def _scores(
        self,
        store: Store,
        rows: list[int],
        ref: str,
        ids_list: list[np.ndarray],
        cands: list[np.ndarray],
        *,
        keep_loaded: bool,
    ) -> list[np.ndarray]:
        """loss_base - loss_ref at every position of ``rows`` (float64), with the sequences cut to what both scored."""
        from curate.scoring import token_losses

        subset = [{"id": self.row_ids_[i], "messages": self.convs_[i]} for i in rows]
        common = {"store": store, "batch_tokens": self.batch_tokens, **self.engine_kwargs()}
        stats_b = self.loss_stats_.setdefault("base", {})
        stats_r = self.loss_stats_.setdefault("reference", {})
        lb = token_losses(subset, model=self.base, stats=stats_b, **common)
        lr = token_losses(subset, model=ref, stats=stats_r, keep_loaded=keep_loaded, **common)
        out = []
        for i, a, b in zip(rows, lb, lr, strict=True):
            # Both tokenizers match (checked), but their model_max_length may not: score what both saw.
            n = min(len(ids_list[i]), len(a), len(b))
            if n < len(ids_list[i]):
                ids_list[i] = ids_list[i][:n]
                cands[i] = cands[i][cands[i] < n]
            out.append(a[:n].astype(np.float64) - b[:n].astype(np.float64))
        return out

    def _self_evolving(
        self,
        store: Store,
        ids_list: list[np.ndarray],
        cands: list[np.ndarray],
        token_scores: list[np.ndarray | None],
        keep_masks: list[np.ndarray],
    ) -> None:
        n = len(ids_list)
        if n < self.rounds + 1:
            raise CurateError(
                f"{self.version_.ref}: --mode self-evolving needs at least --rounds + 1 = "
                f"{self.rounds + 1} rows to split, the version has {n}"
            )
        parts = np.array_split(np.arange(n), self.rounds + 1)
        self.round_ = np.zeros(n, dtype=np.int64)
        config = self._sft_config()
        train_sft = self.service("train_sft")

        def labelled(part: np.ndarray) -> list[dict]:
            rows = []
            for i in part:
                labels = np.full(len(ids_list[i]), IGNORE, dtype=np.int64)
                kept = cands[i][keep_masks[i]]
                labels[kept] = ids_list[i][kept]
                rows.append({"id": self.row_ids_[i], "input_ids": ids_list[i].tolist(), "labels": labels.tolist()})
            if not any((np.asarray(r["labels"][1:]) != IGNORE).any() for r in rows):
                raise CurateError(
                    f"{self.version_.ref}: rows {part[0]}..{part[-1]} keep no response token to fine-tune on "
                    f"(--keep {self.keep}); self-evolving needs some in every part"
                )
            return rows

        for i in parts[0]:  # the warm-up part: theta_0 trains on every response token
            keep_masks[i] = np.ones(len(cands[i]), dtype=bool)
        rows0 = labelled(parts[0])
        key = f"rows:{_rows_key(rows0)}"
        latest = str(train_reference(store, self.base, rows0, data_key=key, config=config, train_sft=train_sft))
        models = [latest]
        for t in range(1, self.rounds + 1):
            part = parts[t]
            self.round_[part] = t
            scores = self._scores(store, part.tolist(), latest, ids_list, cands, keep_loaded=False)
            for i, s in zip(part, scores, strict=True):
                token_scores[i] = s
            masks = keep_top([token_scores[i][cands[i]] for i in part], keep=self.keep, scope=self.scope)
            for i, m in zip(part, masks, strict=True):
                keep_masks[i] = m
            if t < self.rounds:  # theta_R would score nothing more: the output is the labels
                rows_t = labelled(part)
                key = f"rows:{_rows_key(rows_t)}"
                latest = str(train_reference(store, latest, rows_t, data_key=key, config=config, train_sft=train_sft))
                models.append(latest)
        self.info_["models"] = models
        self.info_["config"] = config
        self.info_["parts"] = [[int(p[0]), int(p[-1]) + 1] for p in parts]

    # ------------------------------------------------------------------ output
    def select(self) -> Selection:
        """Every row is kept, in input order: cleaning changes labels, not rows. With a token budget, a row left with
        no kept token is dropped (``no_kept_tokens``): training on it would cost compute and change nothing."""
        n = len(self.scores_)
        if self.budget_tokens is None:
            return Selection(order=np.arange(n, dtype=np.int64), reasons=[""] * n)
        kept = np.array([bool((lab != IGNORE).any()) for lab in self.labels_], dtype=bool)
        reasons = ["" if k else "no_kept_tokens" for k in kept]
        return Selection(order=np.nonzero(kept)[0].astype(np.int64), reasons=reasons)

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """The input rows with ``input_ids``, ``labels``, ``kept_token_share``, ``token_clean_score`` (+ options)."""
        out = table.take(pa.array(selection.order, type=pa.int64()))
        out = out.drop_columns([c for c in _OUT_COLUMNS if c in out.column_names])
        pick = selection.order.tolist()
        out = out.append_column("input_ids", _list_array([self.input_ids_[i] for i in pick], np.int32))
        out = out.append_column("labels", _list_array([self.labels_[i] for i in pick], np.int32))
        out = out.append_column("kept_token_share", pa.array(self.kept_share_[pick], type=pa.float64()))
        out = out.append_column("token_clean_score", pa.array(self.scores_[pick], type=pa.float64()))
        if self.store_scores:
            out = out.append_column("token_scores", _list_array([self.token_scores_[i] for i in pick], np.float32))
        if self.round_ is not None:
            out = out.append_column("token_clean_round", pa.array(self.round_[pick], type=pa.int64()))
        return out

    def stats(self, selection: Selection) -> dict[str, Any]:
        """Row counts, kept tokens overall and per row, loss-cache hits, and the reference model(s) used."""
        share = self.kept_share_[np.isfinite(self.kept_share_)]
        per_row: dict[str, Any] = {"rows": int(len(share))}
        if len(share):
            q = np.quantile(share, [0.0, 0.1, 0.5, 0.9, 1.0])
            per_row.update(
                mean=float(share.mean()),
                min=float(q[0]),
                p10=float(q[1]),
                median=float(q[2]),
                p90=float(q[3]),
                max=float(q[4]),
            )
        total = self.response_tokens_
        return {
            **super().stats(selection),
            "tokens": {
                "response": int(total),
                "kept": int(self.kept_tokens_),
                "dropped": int(total - self.kept_tokens_),
                "kept_share": float(self.kept_tokens_ / total) if total else None,
            },
            "kept_token_share": per_row,
            "losses": self.loss_stats_,
            **self.info_,
        }


def _list_array(arrays: Sequence[np.ndarray], dtype: Any) -> pa.Array:
    """A list<int32>/list<float32> Arrow column from ragged numpy arrays, without a Python list per token."""
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    # Built from int64 so that a dataset past 2**31 tokens fails loudly in the cast instead of wrapping around.
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), type=pa.int32())
    flat = np.concatenate([np.asarray(a, dtype=dtype) for a in arrays]) if arrays else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(offsets, pa.array(flat))
