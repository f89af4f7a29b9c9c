"""Batched forward passes over rows, cached per row and resumable: last-layer token features, token counts.

``cached_map`` is the engine: it reads what a ``RowCache`` already holds, runs a per-batch function over the
rest in length-sorted batches (few pad tokens), and publishes a cache shard every ``shard_rows`` rows or 30 s,
so a killed run resumes where it stopped and a second run over the same rows does no forward pass at all.
Values are float32 arrays of any shape (features: tokens x d; per-token losses: tokens).

``extract_features`` uses it for FisherSFT: one forward pass (no backward) of a causal LM over each example's
chat-templated ``messages``, keeping the LM head's input (the last hidden state, after the final norm) at the
positions SFT trains on.

    >>> feats = extract_features("sample-sft", model="smollm2-135m")   # doctest: +SKIP
    >>> feats[0].shape                                                  # doctest: +SKIP
    (212, 576)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.cache import RowCache, content_key, settings_key
from curate.engine import Engine, TaskSpec, Worker, run_batches
from curate.errors import CurateError, InputError
from curate.store import Store, Version, canonical_json, check_flat

__all__ = [
    "FlatFeatures",
    "cached_foreach",
    "cached_map",
    "check_same_tokenizer",
    "extract_features",
    "feature_matrix",
    "flat_features",
    "projection_matrix",
    "response_token_counts",
    "split_head_ok",
    "sufficient_rows",
    "token_losses",
]

# Bump when the meaning or layout of cached features changes, so old caches are not read as new.
FEATURES_FORMAT = 1
_ARRAY_SCHEMA = pa.schema([("key", pa.string()), ("shape", pa.list_(pa.int64())), ("values", pa.list_(pa.float32()))])
_FLUSH_SECONDS = 30.0
# Padded tokens per forward batch when the caller does not say. On CPU, SmolLM2-135M peaks at 512-1024 (734
# tok/s here vs 638 one row at a time) and drops at 2048+ (445 tok/s: activations fall out of cache); a GPU
# wants large batches.
CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 4096


def _default_batch_tokens(batch_tokens: int | None, on_gpu: bool) -> int:
    return (GPU_BATCH_TOKENS if on_gpu else CPU_BATCH_TOKENS) if batch_tokens is None else batch_tokens


# ---------------------------------------------------------------------------------------------- the engine


def _iter_arrays(cache: RowCache, keys: set[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(key, array) for every row of ``keys`` in the cache, one shard in memory at a time."""
    # Not RowCache.load: a list of Python floats per row is ~50x slower than one flat numpy view per shard.
    if not keys:
        return
    for table in cache.tables():  # only shards that pass their hash check
        names = table.column("key").to_pylist()
        take = [r for r, k in enumerate(names) if k in keys]
        if not take:
            continue
        sub = table.take(take)
        values = sub.column("values").combine_chunks()
        flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        ends = np.cumsum(pc.list_value_length(values).to_numpy(zero_copy_only=False))
        starts = ends - pc.list_value_length(values).to_numpy(zero_copy_only=False)
        for key, shape, a, b in zip(
            sub.column("key").to_pylist(), sub.column("shape").to_pylist(), starts, ends, strict=True
        ):
            yield key, flat[a:b].reshape(shape)


def cached_map(
    rows: Sequence[Any],
    keys: Sequence[str],
    fn_batch: Callable[[list[Any]], Sequence[np.ndarray]],
    cache: RowCache | None,
    *,
    prepare: Callable[[Any], Any] | None = None,
    length: Callable[[Any], int] = len,
    batch_tokens: int = 4096,
    shard_rows: int = 256,
    stats: dict[str, int] | None = None,
    desc: str = "scoring",
    spec: TaskSpec | None = None,
    engine: Engine | None = None,
) -> list[np.ndarray]:
    """``fn_batch`` over ``rows`` (one float32 array per row, in row order), reading and filling ``cache``.

    Rows with equal ``keys`` are computed once. Rows not in the cache go through ``prepare`` (e.g. tokenise),
    are sorted by ``length`` (longest first, then row order) and packed so that ``len(batch) * longest``
    stays within ``batch_tokens``; a longer row runs alone. A shard is published every ``shard_rows`` rows,
    every 30 s and when the run stops, even by an exception. ``stats`` gets ``computed`` and ``cached`` counts.
    With ``engine`` ray, the batches run as ``spec`` on Ray workers (``fn_batch`` unused) and shards are written
    here as results arrive; the cache is the same either way. ``cached_foreach`` is the same engine without
    holding the results.

    >>> out = cached_map([[1.0, 2.0], [3.0]], ["a", "b"], lambda b: [np.asarray(x) * 2 for x in b], None)
    >>> [o.tolist() for o in out]
    [[2.0, 4.0], [6.0]]
    """
    done: dict[str, np.ndarray] = {}
    cached_foreach(
        rows,
        keys,
        fn_batch,
        cache,
        done.__setitem__,
        prepare=prepare,
        length=length,
        batch_tokens=batch_tokens,
        shard_rows=shard_rows,
        stats=stats,
        desc=desc,
        spec=spec,
        engine=engine,
    )
    return [done[k] for k in keys]


def cached_foreach(
    rows: Sequence[Any],
    keys: Sequence[str],
    fn_batch: Callable[[list[Any]], Sequence[np.ndarray]],
    cache: RowCache | None,
    on_row: Callable[[str, np.ndarray], None],
    *,
    prepare: Callable[[Any], Any] | None = None,
    length: Callable[[Any], int] = len,
    batch_tokens: int = 4096,
    shard_rows: int = 256,
    stats: dict[str, int] | None = None,
    desc: str = "scoring",
    spec: TaskSpec | None = None,
    engine: Engine | None = None,
) -> None:
    """``cached_map`` that hands each distinct key's array to ``on_row(key, array)`` once and keeps none of them.

    Cached rows come first, one cache shard in memory at a time, then computed rows as their batches finish (in
    no stated order): memory stays at a shard and a batch, whatever the number of rows. Same cache, same stats.

    >>> seen = {}
    >>> cached_foreach([[1.0], [2.0]], ["a", "b"], lambda b: [np.asarray(x) for x in b], None, seen.__setitem__)
    >>> sorted(seen)
    ['a', 'b']
    """
    from curate.progress import progress

    if len(keys) != len(rows):
        raise CurateError(f"cached_map: {len(rows)} rows but {len(keys)} keys")
    if batch_tokens < 1:
        raise CurateError(f"--batch-tokens must be >= 1, got {batch_tokens!r}")
    stats = stats if stats is not None else {}
    stats.setdefault("computed", 0)
    stats.setdefault("cached", 0)
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    seen: set[str] = set()
    for key, arr in _iter_arrays(cache, set(first)) if cache is not None else ():
        if key not in seen:  # a row in two shards (two runs raced): values are equal, hand it over once
            seen.add(key)
            on_row(key, arr)
    missing = [k for k in first if k not in seen]
    stats["cached"] += len(first) - len(missing)

    if missing:
        items = [prepare(rows[first[k]]) if prepare is not None else rows[first[k]] for k in missing]
        lens = [int(length(it)) for it in items]
        order = sorted(range(len(items)), key=lambda j: (-lens[j], j))
        batches: list[list[int]] = []
        for j in order:
            # Sorted longest first, so a batch's first row sets its padded width.
            if batches and (len(batches[-1]) + 1) * lens[batches[-1][0]] <= batch_tokens:
                batches[-1].append(j)
            else:
                batches.append([j])
        pending: list[dict[str, Any]] = []
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal last_flush
            if cache is not None and pending:
                cache.write(pending, schema=_ARRAY_SCHEMA)
            pending.clear()
            last_flush = time.monotonic()

        try:
            with progress(desc, len(missing)) as advance:
                packed = [([missing[j] for j in batch], [items[j] for j in batch]) for batch in batches]
                use_fn = engine is None or not engine.is_ray
                for key, out in run_batches(packed, spec=spec, engine=engine, fn=fn_batch if use_fn else None):
                    arr = np.ascontiguousarray(out, dtype=np.float32)
                    pending.append({"key": key, "shape": list(arr.shape), "values": arr.ravel()})
                    on_row(key, arr)
                    stats["computed"] += 1
                    advance(1)
                    if len(pending) >= shard_rows or time.monotonic() - last_flush > _FLUSH_SECONDS:
                        flush()
        finally:
            # Publish whatever finished, also when interrupted: the next run starts from there.
            flush()


# ---------------------------------------------------------------------------------------------- inputs


def _conversations(version_or_rows: Any, store: Any) -> tuple[list[list[dict]], list[str], str, Store | None]:
    """(messages per row, row ids for messages, source label, store for the cache)."""
    from curate.store import get_store

    if isinstance(version_or_rows, str):
        version_or_rows = get_store(store).load(version_or_rows)
    if isinstance(version_or_rows, Version):
        v = version_or_rows
        if "messages" not in v.columns:
            raise InputError(f"{v.ref}: needs a 'messages' column (the version has {', '.join(v.columns)})")
        table = v.to_arrow(columns=["messages", *(["id"] if "id" in v.columns else [])])
        msgs = table.column("messages").to_pylist()
        ids = table.column("id").to_pylist() if "id" in table.column_names else [str(i) for i in range(len(msgs))]
        return msgs, [str(i) for i in ids], v.ref, v.store if store is None else get_store(store)
    rows = list(version_or_rows)
    msgs, ids = [], []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "messages" not in r:
            raise InputError(f"rows: row {i}: expected a dict with a 'messages' field")
        msgs.append(r["messages"])
        ids.append(str(r.get("id", i)))
    return msgs, ids, "rows", get_store(store) if store is not None else None


def _check_messages(msgs: Any, src: str, i: int, row_id: str) -> list[dict]:
    if not isinstance(msgs, list) or not msgs:
        raise InputError(f"{src}: row {i} (id {row_id}): field 'messages' is empty or not a list")
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{src}: row {i} (id {row_id}): field 'messages' needs {{role, content}} strings")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _trained_mask(tokenizer: Any, msgs: list[dict], src: str, i: int, row_id: str) -> tuple[list[int], np.ndarray]:
    from curate.chat import assistant_token_mask

    try:
        ids, mask = assistant_token_mask(tokenizer, msgs)
    except CurateError as err:
        raise InputError(f"{src}: row {i} (id {row_id}): field 'messages': {err}") from err
    return ids, np.asarray(mask, dtype=bool)


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    from curate.chat import chat_template_hash

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    blob = canonical_json({"cls": type(tokenizer).__name__, "vocab": vocab, "template": chat_template_hash(tokenizer)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _max_length(tokenizer: Any) -> int | None:
    n = getattr(tokenizer, "model_max_length", None)
    # transformers reports "no limit" as a huge sentinel (1e30).
    return int(n) if isinstance(n, int) and 0 < n < 1_000_000 else None


# ---------------------------------------------------------------------------------------------- features


def projection_matrix(d: int, dim: int, seed: int = 0) -> np.ndarray:
    """The fixed random projection for (seed, d, dim): Gaussian entries / sqrt(dim), float32, shape (d, dim).

    >>> projection_matrix(4, 2, seed=0).shape
    (4, 2)
    """
    rng = np.random.default_rng([int(seed), int(d), int(dim)])
    return (rng.standard_normal((d, dim)) / np.sqrt(dim)).astype(np.float32)


def _lm_head_input(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The LM head's input at every position: (batch, time, d)."""
    # The base model's last_hidden_state is what the head multiplies (Llama, Qwen, Mistral, GPT-2 apply the
    # final norm inside the base model); calling it skips the vocab-sized head, a fifth of SmolLM2's FLOPs.
    # tests/test_scoring.py checks it against a forward hook on the head itself.
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is not None and base is not model:
        return base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1]  # transformers ties hidden_states[-1] to the normed last state


def extract_features(
    version_or_rows: Version | str | Sequence[dict],
    *,
    model: str = "smollm2-135m",
    dim: int | None = None,
    max_tokens_per_example: int | None = None,
    seed: int = 0,
    batch_tokens: int | None = None,
    store: Store | str | None = None,
    stats: dict[str, int] | None = None,
    shard_rows: int = 256,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
) -> list[np.ndarray]:
    """Last-layer features of the trained tokens: one (M_i x d') float32 array per row, in row order.

    Row i's array holds the LM head's input at each position t whose next token t+1 is trained (mask 1 in
    ``chat.assistant_token_mask``): that hidden state is the one whose prediction SFT's loss scores.
    Rows with no trained token give a (0 x d') array. ``dim`` projects to ``dim`` columns with
    ``projection_matrix(d, dim, seed)``; ``max_tokens_per_example`` keeps that many positions, sampled
    uniformly per row with a seed derived from ``seed`` and the row's content (independent of batching).
    Conversations longer than the tokenizer's ``model_max_length`` are cut there. ``batch_tokens`` bounds the
    padded tokens per forward pass (default 1024 on CPU, 4096 on GPU); it never changes the values.

    Results are cached in the store (the version's, or ``store``; plain rows without ``store`` are not
    cached) per model identity, tokenizer and settings, keyed by a hash of each row's messages.
    ``stats`` receives ``computed`` (rows run through the model) and ``cached`` (rows read back).
    ``engine="ray"`` runs the forward passes on ``num_workers`` Ray actors (``ray_address``, ``gpus_per_worker``;
    see ``curate.engine``) with the same values and the same cache. Every row's array is held in memory:
    ``feature_matrix`` is the same features on disk, for pools larger than RAM.

    >>> feats = extract_features("sample-sft", dim=64, max_tokens_per_example=32)   # doctest: +SKIP
    >>> feats[0].shape                                                               # doctest: +SKIP
    (32, 64)
    """
    job = _features_job(
        version_or_rows,
        model,
        dim,
        max_tokens_per_example,
        seed,
        batch_tokens,
        store,
        stats,
        shard_rows,
        Engine(engine, ray_address, num_workers, gpus_per_worker),
    )
    return cached_map(**job.map_kwargs)


@dataclass
class _FeaturesJob:
    keys: list[str]
    settings: dict[str, Any]
    cache_store: Store | None
    map_kwargs: dict[str, Any]


def _features_job(
    version_or_rows: Any,
    model: str,
    dim: int | None,
    max_tokens_per_example: int | None,
    seed: int,
    batch_tokens: int | None,
    store: Any,
    stats: dict[str, int] | None,
    shard_rows: int,
    runner: Engine,
) -> _FeaturesJob:
    """Everything ``extract_features`` and ``feature_matrix`` share: checked rows, their keys, the cache, the batch
    function and ``cached_map``'s arguments."""
    import torch

    from curate.models import default_device, load_tokenizer, resolve

    if dim is not None and (not isinstance(dim, int | np.integer) or dim < 1):
        raise CurateError(f"--dim must be a positive integer, got {dim!r}")
    if max_tokens_per_example is not None and (
        not isinstance(max_tokens_per_example, int | np.integer) or max_tokens_per_example < 1
    ):
        raise CurateError(f"--max-tokens-per-example must be a positive integer, got {max_tokens_per_example!r}")
    msgs, row_ids, src, cache_store = _conversations(version_or_rows, store)
    convs = [_check_messages(m, src, i, rid) for i, (m, rid) in enumerate(zip(msgs, row_ids, strict=True))]
    del msgs
    keys = [content_key(c) for c in convs]

    resolved = resolve(model)
    tokenizer = load_tokenizer(model)
    # The compute dtype follows where the forward passes run (GPU workers: bf16); it is in the cache key.
    on_gpu = default_device().startswith("cuda") or runner.uses_gpu
    dtype = torch.bfloat16 if on_gpu else torch.float32
    limit = _max_length(tokenizer)
    sampled = dim is not None or max_tokens_per_example is not None
    settings = {
        "what": "lm-head-input at positions whose next token is trained",
        "format": FEATURES_FORMAT,
        "model": resolved.identity,
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "max_length": limit,
        "dtype": str(dtype),
        "dim": dim,
        "max_tokens_per_example": max_tokens_per_example,
        "seed": int(seed) if sampled else None,  # the seed only matters when it samples something
    }
    cache = RowCache(cache_store, "features", settings_key(settings), settings) if cache_store is not None else None
    spec = TaskSpec(
        _features_batch, model, {"dtype": str(dtype).removeprefix("torch."), "dim": dim, "seed": int(seed)}
    )

    def prepare(row: tuple[int, str]) -> tuple[np.ndarray, np.ndarray]:
        i, key = row
        ids, mask = _trained_mask(tokenizer, convs[i], src, i, row_ids[i])
        if limit is not None:
            ids, mask = ids[:limit], mask[:limit]
        positions = np.nonzero(mask[1:])[0]  # hidden state t predicts token t+1
        if max_tokens_per_example is not None and len(positions) > max_tokens_per_example:
            rng = np.random.default_rng([int(seed), int(key, 16)])
            positions = np.sort(rng.choice(positions, max_tokens_per_example, replace=False))
        if len(positions) == 0:
            return np.zeros(0, np.int64), positions
        # An array, not a list of Python ints: the rows waiting for a forward pass are all held at once.
        return np.asarray(ids[: int(positions[-1]) + 1], dtype=np.int64), positions

    map_kwargs = {
        "rows": list(enumerate(keys)),
        "keys": keys,
        "fn_batch": Worker(spec).run,
        "cache": cache,
        "prepare": prepare,
        "length": lambda item: len(item[0]),
        "batch_tokens": _default_batch_tokens(batch_tokens, on_gpu),
        "shard_rows": shard_rows,
        "stats": stats,
        "desc": "features",
        "spec": spec,
        "engine": runner,
    }
    return _FeaturesJob(keys, settings, cache_store, map_kwargs)


def _features_batch(state: dict[str, Any], spec: TaskSpec, batch: list[tuple[list[int], np.ndarray]]) -> list:
    """``extract_features``' forward pass over one packed batch of (token ids, positions); runs on any engine."""
    import torch

    from curate.models import default_device, load_causal_lm

    dim, seed = spec.options["dim"], spec.options["seed"]
    if "model" not in state:
        state["device"] = default_device()
        lm, tokenizer = load_causal_lm(spec.model, device=state["device"], dtype=getattr(torch, spec.options["dtype"]))
        state["model"], state["tokenizer"] = lm, tokenizer
        d = int(lm.config.hidden_size)
        state["proj"] = projection_matrix(d, dim, seed) if dim is not None else None
        state["width"] = dim if dim is not None else d
    lm, proj, tokenizer, device = state["model"], state["proj"], state["tokenizer"], state["device"]
    outs = [np.zeros((0, state["width"]), np.float32) for _ in batch]
    live = [b for b, (ids, _) in enumerate(batch) if len(ids)]
    if not live:
        return outs
    width = max(len(batch[b][0]) for b in live)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(live), width), pad, dtype=torch.long)
    attention = torch.zeros((len(live), width), dtype=torch.long)
    for r, b in enumerate(live):  # right padding: real tokens keep positions 0..n-1
        ids = batch[b][0]
        input_ids[r, : len(ids)] = torch.as_tensor(ids)
        attention[r, : len(ids)] = 1
    with torch.inference_mode():
        hidden = _lm_head_input(lm, input_ids.to(device), attention.to(device))
        for r, b in enumerate(live):
            x = hidden[r, torch.as_tensor(batch[b][1], device=hidden.device)].float().cpu().numpy()
            outs[b] = x @ proj if proj is not None else x
    return outs


# ---------------------------------------------------------------------------------------------- features on disk

# Bump when the layout of a flat feature file changes, so old files are not read as new.
FLAT_FORMAT = 1
# Largest absolute value stored as float16 (its maximum is 65504); a row beyond it makes the file float32.
_FP16_LIMIT = 60000.0
_FLAT_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class FlatFeatures:
    """Every row's sufficient statistic for the log-det, stacked: ``flat`` (sum lengths x d), row i's block at
    ``offsets[i]``, ``lengths[i]`` rows long; ``tokens[i]`` is M_i, its trained positions before any reduction.

    Row i's block is X_i itself when M_i <= d, else the d x d R of X_i = QR (R^T R = X_i^T X_i, so every gain
    log det(I + X_i V^-1 X_i^T) = log det(I + R V^-1 R^T) is unchanged). ``flat`` is float16 or float32, usually a
    read-only ``np.memmap``: a pool costs 2 (or 4) x min(M_i, d) x d bytes per row on disk, and only what a
    reader touches in memory. ``path`` is its file (None when the file is already unlinked or empty). ``tokens``
    defaults to ``lengths`` (rows given as they are).

    >>> ff = flat_features([np.ones((3, 2)), np.zeros((0, 2))])
    >>> ff.lengths.tolist(), ff.tokens.tolist(), ff.flat.dtype.name
    ([2, 0], [3, 0], 'float16')
    """

    flat: np.ndarray
    lengths: np.ndarray
    tokens: np.ndarray | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.tokens is None:  # nothing was reduced: each row's block is all its tokens
            object.__setattr__(self, "tokens", np.asarray(self.lengths, dtype=np.int64))

    @property
    def d(self) -> int:
        return int(self.flat.shape[1])

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64) if len(self) else self.lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> np.ndarray:
        """Row i's block as a float32 array (a copy)."""
        a = int(self.offsets[i])
        return np.asarray(self.flat[a : a + int(self.lengths[i])], dtype=np.float32)

    def nbytes(self) -> int:
        """Bytes of ``flat`` (on disk when it is a memmap)."""
        return int(self.flat.size) * self.flat.dtype.itemsize


def sufficient_rows(x: np.ndarray) -> np.ndarray:
    """What row X (M x d) contributes to every log-det gain, in min(M, d) rows: X itself, or the R of X = QR.

    >>> x = np.arange(12.0).reshape(4, 3)
    >>> r = sufficient_rows(x)
    >>> r.shape, bool(np.allclose(r.T @ r, x.T @ x, atol=1e-3))
    ((3, 3), True)
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise CurateError(f"features: expected a 2-D (tokens x d) array, got shape {x.shape}")
    if len(x) <= x.shape[1]:
        return x
    # QR in float64: R then carries X^T X to float32 precision, whatever the row's length.
    return np.linalg.qr(x.astype(np.float64), mode="r").astype(np.float32)


class _Staging:
    """Reduced rows appended to a float32 scratch file as they arrive (any order), then laid out in row order.

    The scratch file is named like a cache shard's temp file (``.shard-*.tmp``), so ``curate gc`` takes the
    leftover of a killed run."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".shard-flat-", suffix=".tmp", dir=folder)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.where: dict[str, tuple[int, int, int]] = {}  # key -> (first scratch row, rows, tokens)
        self.rows = 0
        self.d: int | None = None
        self.absmax = 0.0

    def add(self, key: str, x: np.ndarray) -> None:
        r = sufficient_rows(x)
        if self.d is None:
            self.d = int(r.shape[1])
        elif r.shape[1] != self.d:
            raise CurateError(f"features have different widths {sorted({self.d, r.shape[1]})}: every row needs one d")
        if len(r):
            if not np.isfinite(r).all():
                raise CurateError(f"features of row {key} have NaN or infinite values")
            self.absmax = max(self.absmax, float(np.abs(r).max()))
        self.file.write(np.ascontiguousarray(r).tobytes())
        self.where[key] = (self.rows, len(r), len(x))
        self.rows += len(r)

    def finish(self, keys: Sequence[str], dest: Path | None, dtype: str, d: int | None) -> FlatFeatures:
        """The rows of ``keys`` in order, written to ``dest`` (temp file + atomic rename, with a ``.json`` record of
        its hash) or, without ``dest``, to an unlinked temp file that lives as long as the returned memmap."""
        self.file.close()
        d = self.d if self.d is not None else int(d or 0)
        out = np.dtype(np.float16 if dtype == "float16" and self.absmax <= _FP16_LIMIT else np.float32)
        lengths = np.array([self.where[k][1] for k in keys], dtype=np.int64)
        tokens = np.array([self.where[k][2] for k in keys], dtype=np.int64)
        total = int(lengths.sum())
        scratch = np.memmap(self.path, np.float32, "r", shape=(self.rows, d)) if self.rows else None
        fd, name = tempfile.mkstemp(
            prefix=".shard-flat-", suffix=".tmp", dir=dest.parent if dest else self.path.parent
        )
        tmp = Path(name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as f:
                for k in keys:
                    first, n, _ = self.where[k]
                    if n:
                        block = np.ascontiguousarray(scratch[first : first + n], dtype=out).tobytes()
                        digest.update(block)
                        f.write(block)
            del scratch
            if dest is None:
                flat = _map(tmp, out, total, d)
                tmp.unlink()  # the mapping keeps the data readable until the memmap is freed
                return FlatFeatures(flat, lengths, tokens, None)
            meta = {
                "format": FLAT_FORMAT,
                "dtype": out.name,
                "d": d,
                "bytes": total * d * out.itemsize,
                "sha256": digest.hexdigest(),
                "lengths": lengths.tolist(),
                "tokens": tokens.tolist(),
            }
            os.replace(tmp, dest)
            meta_tmp = dest.with_name(f".shard-flat-{uuid.uuid4().hex}.tmp")
            meta_tmp.write_text(canonical_json(meta))
            os.replace(meta_tmp, dest.with_suffix(".json"))
            return FlatFeatures(_map(dest, out, total, d), lengths, tokens, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _map(path: Path, dtype: np.dtype, rows: int, d: int) -> np.ndarray:
    if rows == 0 or d == 0:  # mmap cannot map an empty file
        return np.zeros((rows, d), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, d))


def _check_flat_dtype(dtype: str) -> None:
    if dtype not in _FLAT_DTYPES:
        raise CurateError(f"flat features dtype must be one of {', '.join(_FLAT_DTYPES)}, got {dtype!r}")


def flat_features(
    arrays: Iterable[np.ndarray], *, dtype: str = "float16", path: str | Path | None = None, d: int | None = None
) -> FlatFeatures:
    """``FlatFeatures`` of in-memory (M_i x d) arrays, one at a time: each is reduced as it comes, then dropped.

    ``dtype`` float16 (float32 instead when a value exceeds float16's range) or float32; ``path`` keeps the file
    there (with its ``.json`` record), else it lives in an unlinked temp file. ``d`` is the width when there are
    no rows at all.

    >>> flat_features([np.eye(2)], dtype="float32").flat.tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    _check_flat_dtype(dtype)
    dest = Path(path) if path is not None else None
    staging = _Staging(dest.parent if dest is not None else Path(tempfile.gettempdir()))
    try:
        keys = []
        for i, x in enumerate(arrays):
            keys.append(str(i))
            staging.add(str(i), x)
        return staging.finish(keys, dest, dtype, d)
    finally:
        staging.close()


def _read_flat(path: Path, n_rows: int) -> FlatFeatures | None:
    """The flat file at ``path`` if its ``.json`` record and its bytes agree (size and sha256), else None after one
    warning line: disk data is not trusted, and a damaged file is simply rebuilt from the row cache."""
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        return None
    # Size and sha256 against the record, as `curate verify` checks them (a linked record is never read).
    problem = check_flat(path)
    if problem is None:
        try:
            meta = json.loads(meta_path.read_text())
            d, lengths, tokens = (
                int(meta["d"]),
                np.asarray(meta["lengths"], np.int64),
                np.asarray(meta["tokens"], np.int64),
            )
            dtype = np.dtype(meta["dtype"])
            rows = int(lengths.sum())
            if (
                meta.get("format") != FLAT_FORMAT
                or dtype.name not in _FLAT_DTYPES
                or lengths.shape != (n_rows,)
                or tokens.shape != (n_rows,)
                or (lengths < 0).any()
                or (lengths > np.minimum(tokens, d)).any()
                or int(meta["bytes"]) != rows * d * dtype.itemsize
            ):
                problem = "has a record that does not match the pool"
        except (OSError, ValueError, KeyError, TypeError) as e:
            problem = f"has an unreadable record ({type(e).__name__})"
    if problem is not None:
        from curate.progress import console

        console.print(
            f"warning: flat feature file {path} {problem}; rebuilding it from the feature cache",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return None
    return FlatFeatures(_map(path, dtype, rows, d), lengths, tokens, path)


def feature_matrix(
    version_or_rows: Version | str | Sequence[dict],
    *,
    model: str = "smollm2-135m",
    dim: int | None = None,
    max_tokens_per_example: int | None = None,
    seed: int = 0,
    batch_tokens: int | None = None,
    store: Store | str | None = None,
    stats: dict[str, int] | None = None,
    shard_rows: int = 256,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    dtype: str = "float16",
) -> FlatFeatures:
    """``extract_features``' features as one ``FlatFeatures`` file on disk, never all in memory at once.

    Same arguments, same row cache (rows missing from it are computed and cached as in ``extract_features``).
    Rows stream from the cache shard by shard and from the forward passes batch by batch; each is reduced to
    min(M_i, d') rows (``sufficient_rows``) and stored as ``dtype`` (float16: SmolLM2's hidden states stay
    below 60 in absolute value, so R's entries stay far below float16's 65504; a value beyond falls back to
    float32 for the whole file). With a local store the file is kept under ``cache/features-flat/<features key>/``,
    named by the rows' keys and the layout, with a ``.json`` record of its sha256 that is checked on every
    reuse; a second call on the same pool reads no cache shard at all. Other stores and plain rows get an
    unlinked temp file.

    >>> ff = feature_matrix("sample-sft", dim=128)   # doctest: +SKIP
    >>> ff.flat.shape, ff.flat.dtype                  # doctest: +SKIP
    ((23104, 128), dtype('float16'))
    """
    _check_flat_dtype(dtype)
    job = _features_job(
        version_or_rows,
        model,
        dim,
        max_tokens_per_example,
        seed,
        batch_tokens,
        store,
        stats,
        shard_rows,
        Engine(engine, ray_address, num_workers, gpus_per_worker),
    )
    dest = None
    if job.cache_store is not None and isinstance(job.cache_store.root, Path):
        name = hashlib.sha256(canonical_json({"format": FLAT_FORMAT, "dtype": dtype, "keys": job.keys}).encode())
        folder = job.cache_store.cache_dir("features-flat", settings_key(job.settings))
        dest = Path(folder) / f"flat-{name.hexdigest()[:24]}.bin"
        found = _read_flat(dest, len(job.keys))
        if found is not None:
            if stats is not None:
                stats["computed"] = stats.get("computed", 0)
                stats["cached"] = stats.get("cached", 0) + len(set(job.keys))
            return found
    staging = _Staging(dest.parent if dest is not None else Path(tempfile.gettempdir()))
    try:
        cached_foreach(**job.map_kwargs, on_row=staging.add)
        return staging.finish(job.keys, dest, dtype, dim)
    finally:
        staging.close()


# ---------------------------------------------------------------------------------------------- token counts


def response_token_counts(
    version_or_rows: Version | str | Sequence[dict], model: str = "smollm2-135m", *, store: Store | str | None = None
) -> np.ndarray:
    """Number of trained tokens (SFT label positions) per row, int64; cached per tokenizer like the features.

    >>> response_token_counts("sample-sft")[:3]   # doctest: +SKIP
    array([ 41, 187,  12])
    """
    from curate.models import load_tokenizer

    msgs, row_ids, src, cache_store = _conversations(version_or_rows, store)
    convs = [_check_messages(m, src, i, rid) for i, (m, rid) in enumerate(zip(msgs, row_ids, strict=True))]
    keys = [content_key(c) for c in convs]
    tokenizer = load_tokenizer(model)
    limit = _max_length(tokenizer)
    settings = {"what": "trained-token counts", "tokenizer": _tokenizer_fingerprint(tokenizer), "max_length": limit}
    cache = RowCache(cache_store, "token-counts", settings_key(settings), settings) if cache_store else None
    known = {k: int(r["count"]) for k, r in (cache.load(set(keys)) if cache else {}).items()}
    new: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in known or k in new:
            continue
        _, mask = _trained_mask(tokenizer, convs[i], src, i, row_ids[i])
        new[k] = int(mask[1:limit].sum()) if limit is not None else int(mask[1:].sum())
    if cache is not None and new:
        cache.write(
            [{"key": k, "count": c} for k, c in new.items()],
            schema=pa.schema([("key", pa.string()), ("count", pa.int64())]),
        )
    known.update(new)
    return np.array([known[k] for k in keys], dtype=np.int64)


# ---------------------------------------------------------------------------------------------- token losses

# Bump when the meaning or layout of cached token losses changes, so old caches are not read as new.
TOKEN_LOSSES_FORMAT = 1
# Float32 logits per LM-head chunk (64 MB, ~340 positions of a 49k vocab): the whole batch at once would be GBs.
_LOGIT_CHUNK_ELEMS = 1 << 24


def check_same_tokenizer(model_a: str, model_b: str) -> str:
    """The tokenizer fingerprint (class, vocab, chat template) two models share; CurateError if they differ.

    >>> check_same_tokenizer("smollm2-135m", "smollm2-135m") == check_same_tokenizer("smollm2-135m", "smollm2-135m")
    True
    """
    from curate.models import load_tokenizer

    fa, fb = (_tokenizer_fingerprint(load_tokenizer(m)) for m in (model_a, model_b))
    if fa != fb:
        raise CurateError(
            f"models {model_a!r} and {model_b!r} have different tokenizers or chat templates "
            f"(fingerprints {fa} and {fb}): a per-token loss difference needs both to score the same tokens"
        )
    return fa


def split_head_ok(model: Any) -> bool:
    """Whether ``head(body(x))`` reproduces the model's logits (false for soft-capped or rescaled logits): then the
    LM head may run on the positions that need logits only. Checked once per model object, on four tokens.

    >>> split_head_ok(load_causal_lm("smollm2-135m")[0])   # doctest: +SKIP
    True
    """
    import torch

    cached = getattr(model, "_curate_split_head", None)
    if cached is not None:
        return cached
    ok = False
    was_training = model.training
    model.eval()
    try:
        # fp32 even when called under bf16 autocast: rounding there would fail the comparison for no reason
        with torch.no_grad(), torch.autocast(model.device.type, enabled=False):
            x = torch.arange(1, 5, device=model.device).unsqueeze(0) % model.config.vocab_size
            full = model(input_ids=x, use_cache=False).logits
            body = model.base_model(input_ids=x, use_cache=False).last_hidden_state
            ok = body is not None and torch.allclose(model.get_output_embeddings()(body), full, atol=1e-4, rtol=1e-3)
    except Exception:  # an architecture without the usual body/head split: use the full forward
        ok = False
    finally:
        model.train(was_training)
    model._curate_split_head = ok
    return ok


def _next_token_nll(lm: Any, input_ids: Any, attention: Any, lengths: Sequence[int]) -> list[np.ndarray]:
    """-log p(token t+1 | tokens <= t) for t = 0..n-2 of each right-padded row (natural log, float32)."""
    import torch
    import torch.nn.functional as F

    b_idx = torch.cat([torch.full((max(n - 1, 0),), b, dtype=torch.long) for b, n in enumerate(lengths)])
    t_idx = torch.cat([torch.arange(max(n - 1, 0)) for n in lengths])
    b_idx, t_idx = b_idx.to(input_ids.device), t_idx.to(input_ids.device)
    targets = input_ids[b_idx, t_idx + 1]
    if split_head_ok(lm):
        # The head only runs where a target exists, chunk by chunk; only the target's log-prob leaves a chunk.
        hidden = _lm_head_input(lm, input_ids, attention)[b_idx, t_idx]
        head = lm.get_output_embeddings()
        vocab = int(head.weight.shape[0])

        def logits(a: int, b: int) -> Any:
            return head(hidden[a:b])
    else:  # soft-capped or rescaled logits: the model's own full forward
        full = lm(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[b_idx, t_idx]
        vocab = int(full.shape[-1])

        def logits(a: int, b: int) -> Any:
            return full[a:b]

    step = max(1, _LOGIT_CHUNK_ELEMS // vocab)
    n = int(targets.shape[0])
    nll = [
        F.cross_entropy(logits(a, a + step).float(), targets[a : a + step], reduction="none")
        for a in range(0, n, step)
    ]
    flat = torch.cat(nll).cpu().numpy() if nll else np.zeros(0, np.float32)
    return np.split(flat, np.cumsum([max(k - 1, 0) for k in lengths])[:-1])


def token_losses(
    version_or_rows: Version | str | Sequence[dict],
    *,
    model: str,
    store: Store | str | None = None,
    batch_tokens: int | None = None,
    stats: dict[str, int] | None = None,
    shard_rows: int = 256,
    keep_loaded: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
) -> list[np.ndarray]:
    """Per-token losses of each row's chat-templated ``messages`` under ``model``: one float32 array per row.

    Row i's array has one entry per token of the ids ``chat.assistant_token_mask`` gives (prompt and response,
    cut to the tokenizer's ``model_max_length``); index j holds -log p(token j | tokens < j) (natural log), and
    index 0, which nothing precedes, holds 0.0, as in the Token Cleaning code's realignment ``[0] + loss[:-1]``.
    One forward pass per row and no backward, in length-sorted batches of ``batch_tokens`` (default: 1024 padded
    tokens on a CPU, 4096 on a GPU, as for ``extract_features``); the LM head runs in
    chunks and keeps only the target token's log-prob, so memory stays far below tokens x vocab. Arrays are
    stored ragged and cached like ``extract_features`` (per model identity, tokenizer, row content), so a second
    run, or the finished rows of a killed one, cost no forward pass; ``stats`` gets ``computed`` and ``cached``.
    ``keep_loaded=False`` frees the model afterwards instead of keeping it in the process-wide model cache.
    ``engine="ray"`` (with ``ray_address``, ``num_workers``, ``gpus_per_worker``) runs the batches on Ray actors,
    same values, same cache (``curate.engine``).

    >>> losses = token_losses("sample-sft", model="smollm2-135m")   # doctest: +SKIP
    >>> losses[0].shape, float(losses[0][0])                         # doctest: +SKIP
    ((69,), 0.0)
    """
    import torch

    from curate.models import default_device, load_tokenizer, resolve

    msgs, row_ids, src, cache_store = _conversations(version_or_rows, store)
    convs = [_check_messages(m, src, i, rid) for i, (m, rid) in enumerate(zip(msgs, row_ids, strict=True))]
    keys = [content_key(c) for c in convs]
    runner = Engine(engine, ray_address, num_workers, gpus_per_worker)
    tokenizer = load_tokenizer(model)
    # The compute dtype follows where the forward passes run (GPU workers: bf16); it is in the cache key.
    on_gpu = default_device().startswith("cuda") or runner.uses_gpu
    dtype = torch.bfloat16 if on_gpu else torch.float32
    limit = _max_length(tokenizer)
    settings = {
        "what": "next-token loss of every token, index j = -log p(token j | tokens < j), index 0 = 0",
        "format": TOKEN_LOSSES_FORMAT,
        "model": resolve(model).identity,
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "max_length": limit,
        "dtype": str(dtype),
    }
    cache = RowCache(cache_store, "token-losses", settings_key(settings), settings) if cache_store else None
    spec = TaskSpec(
        _token_losses_batch, model, {"dtype": str(dtype).removeprefix("torch."), "keep_loaded": keep_loaded}
    )

    def prepare(row: tuple[int, str]) -> list[int]:
        i, _ = row
        ids, _ = _trained_mask(tokenizer, convs[i], src, i, row_ids[i])
        return ids[:limit] if limit is not None else ids

    return cached_map(
        list(enumerate(keys)),
        keys,
        Worker(spec).run,
        cache,
        prepare=prepare,
        length=len,
        batch_tokens=_default_batch_tokens(batch_tokens, on_gpu),
        shard_rows=shard_rows,
        stats=stats,
        desc=f"token losses ({model})",
        spec=spec,
        engine=runner,
    )


def _token_losses_batch(state: dict[str, Any], spec: TaskSpec, batch: list[list[int]]) -> list[np.ndarray]:
    """``token_losses``' forward pass over one packed batch of token ids; runs on any engine."""
    import torch

    from curate.models import default_device, load_causal_lm

    if "model" not in state:
        state["device"] = default_device()
        dtype = getattr(torch, spec.options["dtype"])
        lm, tokenizer = load_causal_lm(
            spec.model, device=state["device"], dtype=dtype, cache=spec.options["keep_loaded"]
        )
        state["model"], state["tokenizer"] = lm, tokenizer
    tokenizer, device = state["tokenizer"], state["device"]
    width = max(len(ids) for ids in batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for r, ids in enumerate(batch):  # right padding: a row's losses never see the pad tokens after it
        input_ids[r, : len(ids)] = torch.as_tensor(ids)
        attention[r, : len(ids)] = 1
    with torch.inference_mode():
        nll = _next_token_nll(state["model"], input_ids.to(device), attention.to(device), [len(b) for b in batch])
    return [np.concatenate([np.zeros(min(len(ids), 1), np.float32), x]) for ids, x in zip(batch, nll, strict=True)]
