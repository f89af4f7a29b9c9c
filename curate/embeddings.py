"""One vector per row, cached per row: pooled last-layer features of a causal LM, or a sentence embedder's output.

``row_embeddings`` is the one function the diversity selectors (``kcenter``, ``facility``, ``rds``) read rows
through, and semantic dedup's ``embed_texts`` lives here too. Two kinds:

- ``features`` (default model ``smollm2-135m``): the LM head's input at the positions SFT trains on, exactly what
  ``curate.scoring.extract_features`` computes for FisherSFT (same model, same ``dim`` / ``max_tokens_per_example``
  / ``seed``), pooled to one vector. The per-token features come from, and go to, the same ``features`` cache
  FisherSFT fills, so a row fisher has seen costs no forward pass here. ``pooling`` is ``mean`` (every trained
  position alike) or ``weighted`` (position j of the M trained positions weighs j, 1-based: SGPT's
  position-weighted mean, which RDS+ uses; later states have read more of the row). A row with no trained token
  pools to a zero vector.
  The pooled vectors are cached again, per row, under ``pooled-features`` (one d-vector per row instead of M x d),
  keyed by the features' own settings plus the pooling: a second run reads no per-token features at all.
- ``embedder`` (default model ``minilm``): the L2-normalised sentence embedding of the row's text (``fields``,
  default the whole conversation), from the ``embeddings`` cache semantic dedup fills.

    >>> x = row_embeddings("sample-sft")                                  # doctest: +SKIP
    >>> x.shape, x.dtype                                                  # doctest: +SKIP
    ((500, 576), dtype('float32'))
    >>> row_embeddings("sample-sft", kind="embedder").shape               # doctest: +SKIP
    (500, 384)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from curate.cache import RowCache, content_key, settings_key
from curate.engine import Engine, TaskSpec, Worker
from curate.errors import CurateError, InputError
from curate.store import Store, Version
from curate.text import FIELDS, iter_batches, row_texts

__all__ = ["KINDS", "POOLINGS", "embed_texts", "pool_features", "row_embeddings", "unit_rows"]

KINDS = ("features", "embedder")
POOLINGS = ("mean", "weighted")
# Bump when the meaning of cached sentence embeddings changes.
EMBEDDINGS_FORMAT = 1
# Bump when the meaning or layout of cached pooled features changes.
POOLED_FORMAT = 1
_POOLED_SCHEMA = pa.schema([("key", pa.string()), ("values", pa.list_(pa.float32()))])
# Rows per record batch when reading texts for the embedder.
_BATCH_ROWS = 1024


# ---------------------------------------------------------------------------------------------- sentence embedder


def embed_texts(
    texts: Sequence[str],
    *,
    model: str = "minilm",
    store: Store | None = None,
    stats: dict[str, int] | None = None,
    batch_tokens: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
) -> np.ndarray:
    """(len(texts), d) float32 L2-normalised sentence embeddings, cached per text in ``store`` (when given).

    Batches hold about ``batch_tokens`` tokens (default 8192; 4 characters count as one). ``engine="ray"``
    encodes the batches on Ray actors; the values and the cache are the same.

    >>> embed_texts(["hello", "hello"]).shape   # doctest: +SKIP
    (2, 384)
    """
    from curate.models import resolve
    from curate.scoring import cached_map

    runner = Engine(engine, ray_address, num_workers, gpus_per_worker)
    settings = {
        "what": "sentence-transformers embedding of the text, L2-normalised",
        "format": EMBEDDINGS_FORMAT,
        "model": resolve(model).identity,
    }
    cache = RowCache(store, "embeddings", settings_key(settings), settings) if store is not None else None
    spec = TaskSpec(_embed_batch, model, {})
    keys = [content_key({"text": t}) for t in texts]
    out = cached_map(
        list(texts),
        keys,
        Worker(spec).run,
        cache,
        # Approximate tokens (4 characters each, capped at the encoder's 256-token window) for batch packing.
        length=lambda t: min(len(t) // 4 + 2, 256),
        batch_tokens=8192 if batch_tokens is None else batch_tokens,
        stats=stats,
        desc=f"embeddings ({model})",
        spec=spec,
        engine=runner,
    )
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def _embed_batch(state: dict[str, Any], spec: Any, batch: list[str]) -> list[np.ndarray]:
    """``embed_texts``' encoder over one packed batch of texts; runs on any engine."""
    from curate.models import load_embedder

    if "model" not in state:
        state["model"] = load_embedder(spec.model)
    emb = state["model"].encode(
        list(batch), batch_size=len(batch), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return [np.asarray(e, dtype=np.float32) for e in emb]


# ---------------------------------------------------------------------------------------------- pooling


def pool_features(x: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """One row's (M x d) per-token features pooled to a d-vector (float64); M = 0 gives zeros.

    ``weighted``: position j (1-based) of the M weighs j / (1 + ... + M).

    >>> pool_features(np.array([[1.0, 0.0], [0.0, 3.0]]), "weighted").tolist()
    [0.3333333333333333, 2.0]
    """
    x = np.asarray(x, dtype=np.float64)
    if pooling not in POOLINGS:
        raise CurateError(f"--pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    if x.ndim != 2:
        raise CurateError(f"pool_features: expected a 2-D (tokens x d) array, got shape {x.shape}")
    if len(x) == 0:
        return np.zeros(x.shape[1], dtype=np.float64)
    if pooling == "mean":
        return x.mean(axis=0)
    w = np.arange(1, len(x) + 1, dtype=np.float64)
    return (w / w.sum()) @ x


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows scaled to unit L2 norm as float64, mask of the rows that are not zero); zero rows stay zero.

    >>> u, ok = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> u.tolist(), ok.tolist()
    ([[0.6, 0.8], [0.0, 0.0]], [True, False])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise CurateError(f"embeddings: expected a 2-D (rows x d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise CurateError(f"embeddings: row {int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])} has NaN or inf")
    norms = np.linalg.norm(x, axis=1)
    ok = norms > 0
    out = np.zeros_like(x)
    out[ok] = x[ok] / norms[ok, None]
    return out, ok


# ---------------------------------------------------------------------------------------------- row embeddings


def _features_settings(model: str, dim: int | None, max_tokens: int | None, seed: int, runner: Engine) -> dict:
    """The settings ``extract_features`` keys its cache by (tests/test_diversity.py pins the two against each other).

    Mirrored here so that a pooled vector is addressed by exactly what determined the features it pools."""
    import torch

    from curate.models import default_device, load_tokenizer, resolve
    from curate.scoring import FEATURES_FORMAT, _max_length, _tokenizer_fingerprint

    tokenizer = load_tokenizer(model)
    on_gpu = default_device().startswith("cuda") or runner.uses_gpu
    sampled = dim is not None or max_tokens is not None
    return {
        "what": "lm-head-input at positions whose next token is trained",
        "format": FEATURES_FORMAT,
        "model": resolve(model).identity,
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "max_length": _max_length(tokenizer),
        "dtype": str(torch.bfloat16 if on_gpu else torch.float32),
        "dim": dim,
        "max_tokens_per_example": max_tokens,
        "seed": int(seed) if sampled else None,
    }


def _read_pooled(cache: RowCache, keys: set[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if not keys:
        return out
    for table in cache.tables():
        names = table.column("key").to_pylist()
        take = [r for r, k in enumerate(names) if k in keys]
        if not take:
            continue
        values = table.column("values").take(take).combine_chunks()
        flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        ends = np.cumsum(values.value_lengths().to_numpy(zero_copy_only=False))
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        for r, a, b in zip(take, starts.tolist(), ends.tolist(), strict=True):
            out[names[r]] = flat[a:b]
    return out


def _pooled_features(
    version_or_rows: Any,
    *,
    model: str,
    store: Store | str | None,
    pooling: str,
    dim: int | None,
    max_tokens_per_example: int | None,
    seed: int,
    batch_tokens: int | None,
    stats: dict[str, Any],
    engine_kwargs: dict[str, Any],
) -> np.ndarray:
    from curate.scoring import _check_messages, _conversations, extract_features

    if not isinstance(version_or_rows, str | Version):
        version_or_rows = list(version_or_rows)  # read twice below: an iterator would be empty the second time
    msgs, row_ids, src, cache_store = _conversations(version_or_rows, store)
    convs = [_check_messages(m, src, i, rid) for i, (m, rid) in enumerate(zip(msgs, row_ids, strict=True))]
    keys = [content_key(c) for c in convs]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    cache = None
    if cache_store is not None and keys:
        settings = {
            "what": "pooled lm-head-input features of the trained positions",
            "format": POOLED_FORMAT,
            "pooling": pooling,
            "features": _features_settings(model, dim, max_tokens_per_example, seed, Engine(**engine_kwargs)),
        }
        cache = RowCache(cache_store, "pooled-features", settings_key(settings), settings)
    done = _read_pooled(cache, set(first)) if cache is not None else {}
    missing = [k for k in first if k not in done]
    stats["computed"] = stats.get("computed", 0) + len(missing)
    stats["cached"] = stats.get("cached", 0) + len(first) - len(missing)
    if missing:
        feature_stats: dict[str, int] = {}
        # Nothing pooled yet (a first run): the input itself, so that an error names the row where it is.
        whole = len(missing) == len(first)
        todo = version_or_rows if whole else [{"id": row_ids[first[k]], "messages": convs[first[k]]} for k in missing]
        try:
            feats = extract_features(
                todo,
                model=model,
                dim=dim,
                max_tokens_per_example=max_tokens_per_example,
                seed=seed,
                batch_tokens=batch_tokens,
                store=cache_store,
                stats=feature_stats,
                **engine_kwargs,
            )
        except InputError:
            if whole:
                raise
            # The error named the row's place among the missing rows ("rows: row 0"): name it in the input instead.
            _name_bad_row(model, [first[k] for k in missing], convs, row_ids, src)
            raise
        by_key = dict(zip(keys if whole else missing, feats, strict=True))
        pooled = [pool_features(by_key[k], pooling).astype(np.float32) for k in missing]
        totals = stats.setdefault("features", {})
        for k, v in feature_stats.items():
            totals[k] = totals.get(k, 0) + v
        if cache is not None:
            cache.write([{"key": k, "values": p} for k, p in zip(missing, pooled, strict=True)], schema=_POOLED_SCHEMA)
        done.update(zip(missing, pooled, strict=True))
    if not keys:
        return np.zeros((0, 0), np.float32)
    return np.stack([done[k] for k in keys]).astype(np.float32, copy=False)


def _name_bad_row(model: str, rows: Sequence[int], convs: list[list[dict]], row_ids: list[str], src: str) -> None:
    """Raise the chat-template error of the first of ``rows`` whose conversation the template refuses, if any."""
    from curate.models import load_tokenizer
    from curate.scoring import _trained_mask

    tokenizer = load_tokenizer(model)
    for i in rows:
        _trained_mask(tokenizer, convs[i], src, i, row_ids[i])


def _texts(version_or_rows: Any, store: Store | str | None, fields: Sequence[str]) -> tuple[list[str], Store | None]:
    from curate.store import get_store

    if isinstance(version_or_rows, str):
        version_or_rows = get_store(store).load(version_or_rows)
    if isinstance(version_or_rows, Version):
        v = version_or_rows
        cols = [c for c in ("messages", "prompt", "completion") if c in v.columns]
        if not cols:
            raise CurateError(
                f"{v.ref}: needs a messages, prompt or completion column (the version has {', '.join(v.columns)})"
            )
        texts: list[str] = []
        for batch in iter_batches(v, cols, _BATCH_ROWS) if len(v) else ():
            texts.extend(row_texts(batch, fields))
        return texts, v.store if store is None else get_store(store)
    rows = list(version_or_rows)
    cols = [c for c in ("messages", "prompt", "completion") if rows and all(c in r for r in rows)]
    if rows and not cols:
        raise CurateError("rows: each row needs a messages, prompt or completion field")
    texts = row_texts(pa.Table.from_pylist([{c: r[c] for c in cols} for r in rows]), fields) if rows else []
    return texts, get_store(store) if store is not None else None


def row_embeddings(
    version_or_rows: Version | str | Sequence[dict],
    *,
    model: str | None = None,
    kind: str = "features",
    store: Store | str | None = None,
    pooling: str = "mean",
    dim: int | None = None,
    max_tokens_per_example: int | None = None,
    seed: int = 0,
    fields: Sequence[str] = FIELDS,
    batch_tokens: int | None = None,
    stats: dict[str, Any] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
) -> np.ndarray:
    """One float32 vector per row (rows x d), in row order; an empty input gives a (0, 0) array.

    ``kind="features"``: ``model`` (default ``smollm2-135m``) is a causal LM; the vector pools (``pooling``:
    ``mean`` or ``weighted``) the per-token features ``extract_features`` gives with the same ``model``, ``dim``,
    ``max_tokens_per_example`` and ``seed`` (FisherSFT's cache). A row with no trained token gets zeros.
    ``kind="embedder"``: ``model`` (default ``minilm``) is a sentence embedder; the vector is the unit-norm
    embedding of the text of ``fields`` (``pooling``, ``dim``, ``max_tokens_per_example`` and ``seed`` unused).

    Cached per row in the store (the version's, or ``store``; plain rows without ``store`` are not cached).
    ``stats`` gets ``computed`` and ``cached`` row counts (pooled vectors or sentence embeddings) and, for
    features that had to be pooled, ``features``: extract_features' own counts. ``batch_tokens`` and the engine
    options are passed on to the forward passes and never change the values.

    >>> row_embeddings("sample-sft", pooling="weighted").shape   # doctest: +SKIP
    (500, 576)
    """
    from curate.models import DEFAULT_EMBEDDER, DEFAULT_LM

    if kind not in KINDS:
        raise CurateError(f"--embedding {kind!r}: expected one of {', '.join(KINDS)}")
    if pooling not in POOLINGS:
        raise CurateError(f"--pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    stats = stats if stats is not None else {}
    engine_kwargs = {
        "engine": engine,
        "ray_address": ray_address,
        "num_workers": num_workers,
        "gpus_per_worker": gpus_per_worker,
    }
    if kind == "features":
        return _pooled_features(
            version_or_rows,
            model=model or DEFAULT_LM,
            store=store,
            pooling=pooling,
            dim=dim,
            max_tokens_per_example=max_tokens_per_example,
            seed=seed,
            batch_tokens=batch_tokens,
            stats=stats,
            engine_kwargs=engine_kwargs,
        )
    texts, cache_store = _texts(version_or_rows, store, fields)
    counts: dict[str, int] = {}
    out = embed_texts(
        texts,
        model=model or DEFAULT_EMBEDDER,
        store=cache_store,
        stats=counts,
        batch_tokens=batch_tokens,
        **engine_kwargs,
    )
    for k, v in counts.items():
        stats[k] = stats.get(k, 0) + v
    return out
