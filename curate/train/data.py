"""Pieces both compact trainers share: rows -> token examples, length-grouped batches, padding, the forward pass
that returns log-probs of trained tokens only, and the run folder (checkpoints, ``metrics.jsonl``, resume).

Label convention (Hugging Face): ``labels[t]`` is the token at position t and -100 means "no loss"; position t's
loss predicts ``labels[t]`` from the tokens before it, so ``labels[0]`` is never trained.

torch is imported inside the functions that need it: the CLI imports the trainer modules at startup to turn their
config dataclasses into flags, and ``curate --help`` should not pay a second for torch.

    curate train sft gsm8k --model smollm2-135m --out runs/sft     # uses these helpers
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curate.errors import CurateError, InputError
from curate.records import to_table
from curate.scoring import split_head_ok
from curate.store import Version, environment, get_store, sha256_file, table_digest

if TYPE_CHECKING:
    import torch

#: what a trainer takes: a store ref, a ``Version``, or rows (a pyarrow Table or a list of row dicts)
TrainData = str | Version | pa.Table | Sequence[dict[str, Any]]

IGNORE = -100
CHECKPOINT_PREFIX = "checkpoint-"
# Trainer state is JSON plus safetensors: nothing in a checkpoint is unpickled, so a planted file cannot run code.
STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_state.safetensors"
LEGACY_STATE_FILE = "trainer_state.pt"
STATE_FORMAT = 1
CONFIG_FILE = "curate_train.json"


# ---------------------------------------------------------------------------------------------- what to train on
class Rows:
    """Rows handed to a trainer directly, standing in for a store version (same ``ref``, ``name``, ``id``,
    ``columns``, ``to_arrow``, ``to_pylist``).

    They have no store name and no version, so ``ref`` is ``"rows"``, ``name`` is None and ``id`` is the first 16
    hex digits of the table's content digest (``curate.store.table_digest``): the run info says what was trained on,
    and ``--resume`` still refuses a checkpoint trained on other rows.

    >>> r = Rows(pa.table({"id": ["a"]}))
    >>> r.ref, r.name, len(r.id)
    ('rows', None, 16)
    """

    ref = "rows"
    name = None

    def __init__(self, table: pa.Table):
        self.table = table
        self.id = table_digest(table)[:16]

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        return self.table if columns is None else self.table.select(list(columns))

    def to_pylist(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()


def training_data(data: TrainData, store: Any = None) -> Version | Rows:
    """What a trainer reads: the version behind a ref (or the ``Version`` given), or ``Rows`` for a table or a list
    of row dicts (typed as ``curate.save`` would store them).

    >>> training_data([{"id": "a", "input_ids": [1, 2]}]).ref
    'rows'
    """
    if isinstance(data, str | Version):
        return get_store(store).load(data)
    if isinstance(data, pa.Table):
        return Rows(data)
    if isinstance(data, Sequence) and all(isinstance(r, dict) for r in data):
        return Rows(to_table(list(data)))
    raise CurateError(
        f"cannot train on a {type(data).__name__}: pass a store ref, a Version, a pyarrow Table or a list of row dicts"
    )


# ---------------------------------------------------------------------------------------------- rows -> examples
@dataclass
class Example:
    """One training sequence: token ids, labels (-100 = no loss) and a loss weight for each of its tokens."""

    input_ids: list[int]
    labels: list[int]
    weight: float = 1.0
    row: int = -1
    """Row index in the source version (for messages and provenance)."""

    @property
    def n_target(self) -> int:
        """Tokens that carry loss (``labels[0]`` never does: nothing precedes it)."""
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def _row_name(ref: str, i: int, row: dict[str, Any]) -> str:
    return f"{ref}: row {i}" + (f" (id {row['id']!r})" if row.get("id") is not None else "")


def row_weight(ref: str, i: int, row: dict[str, Any]) -> float:
    """The row's ``weight`` (1.0 when the column is absent or null); negative or non-finite weights are errors."""
    w = row.get("weight")
    if w is None:
        return 1.0
    w = float(w)
    if not math.isfinite(w) or w < 0:
        raise InputError(f"{_row_name(ref, i, row)}: field 'weight' must be a finite number >= 0, got {w}")
    return w


def examples_from_rows(
    rows: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    ref: str,
    max_len: int,
    vocab_size: int,
    use_weights: bool = True,
) -> tuple[list[Example], dict[str, int]]:
    """Tokenise SFT rows; return the examples that carry loss and counts of what was truncated or dropped.

    A row with ``input_ids`` is used as is (its ``labels`` too; without labels every token trains). Otherwise its
    ``messages`` go through the chat template and only assistant tokens train (``chat.assistant_token_mask``).
    Sequences are cut to ``max_len`` tokens; a row left with no trained token, or with weight 0, is dropped.
    ``use_weights=False`` (evaluation) gives every row weight 1.

    >>> from curate.testing import tiny_causal_lm
    >>> _, tok = tiny_causal_lm()
    >>> rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    >>> ex, stats = examples_from_rows(rows, tok, ref="toy", max_len=64, vocab_size=len(tok))
    >>> ex[0].n_target, stats["dropped_no_target"]
    (3, 0)
    """
    from curate.chat import assistant_token_mask
    from curate.progress import progress

    out: list[Example] = []
    stats = {"rows": len(rows), "truncated": 0, "dropped_no_target": 0, "dropped_zero_weight": 0}
    with progress(f"tokenising {ref}", len(rows)) as advance:
        for i, row in enumerate(rows):
            if i % 256 == 0:
                advance(min(256, len(rows) - i))
            where = _row_name(ref, i, row)
            if row.get("input_ids") is not None:
                ids = [int(t) for t in row["input_ids"]]
                labels = [int(t) for t in row["labels"]] if row.get("labels") is not None else list(ids)
                if len(labels) != len(ids):
                    raise InputError(f"{where}: field 'labels' has {len(labels)} tokens, 'input_ids' has {len(ids)}")
                if any(t != IGNORE and not 0 <= t < vocab_size for t in labels):
                    raise InputError(f"{where}: field 'labels' holds a token outside the vocab (0..{vocab_size})")
            elif row.get("messages"):
                ids, mask = assistant_token_mask(tokenizer, row["messages"])
                labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]
            else:
                raise InputError(f"{where}: needs 'messages' or 'input_ids' to train on")
            if any(not 0 <= t < vocab_size for t in ids):
                raise InputError(
                    f"{where}: field 'input_ids' holds a token outside the vocab (0..{vocab_size}); "
                    "was it tokenised for another model?"
                )
            if len(ids) > max_len:
                stats["truncated"] += 1
                ids, labels = ids[:max_len], labels[:max_len]
            ex = Example(ids, labels, row_weight(ref, i, row) if use_weights else 1.0, i)
            if ex.n_target == 0 or ex.weight == 0:
                stats["dropped_no_target" if ex.n_target == 0 else "dropped_zero_weight"] += 1
                continue
            out.append(ex)
    return out, stats


# ---------------------------------------------------------------------------------------------- batching
def plan_epoch(
    lengths: Sequence[int], rows_per_step: int, *, seed: int, epoch: int, group_by_length: bool = True
) -> list[list[int]]:
    """Row indices for every optimizer step of one epoch, a pure function of (seed, epoch).

    With ``group_by_length`` rows are shuffled, sorted by length inside windows of 64 steps, cut into steps, and
    the steps shuffled again: each step holds rows of similar length (little padding) while the order stays
    random. A step's rows depend only on ``rows_per_step`` = batch size x accumulation, so 1x8 and 8x1 see the
    same rows. The last step of an epoch may be short.

    >>> plan_epoch([5, 1, 9, 3], 2, seed=0, epoch=0)
    [[3, 1], [2, 0]]
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if not group_by_length:
        return [order[i : i + rows_per_step] for i in range(0, len(order), rows_per_step)]
    window = rows_per_step * 64
    order = [j for w in range(0, len(order), window) for j in sorted(order[w : w + window], key=lambda j: -lengths[j])]
    steps = [order[i : i + rows_per_step] for i in range(0, len(order), rows_per_step)]
    return [steps[i] for i in rng.permutation(len(steps))]


def micro_batches(rows: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Split one step's rows into micro-batches of ``batch_size``, longest first, so each pads to a similar length.

    >>> micro_batches([0, 1, 2], [3, 9, 5], 2)
    [[1, 2], [0]]
    """
    ordered = sorted(rows, key=lambda j: -lengths[j])
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def collate(examples: Sequence[Example], pad_id: int, device: Any = "cpu", multiple: int = 1) -> dict[str, Any]:
    """Right-pad a batch. ``targets[b, t]`` is the label position t predicts (``labels[b, t + 1]``), -100 if none.

    >>> b = collate([Example([5, 6, 7], [-100, 6, 7], 2.0), Example([5, 8], [-100, 8])], pad_id=0)
    >>> b["targets"].tolist(), b["weights"].tolist()
    ([[6, 7, -100], [8, -100, -100]], [2.0, 1.0])
    """
    import torch

    width = max(len(e.input_ids) for e in examples)
    width = -(-width // multiple) * multiple
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        attn[b, :n] = 1
        targets[b, : n - 1] = torch.tensor(e.labels[1:])
    weights = torch.tensor([float(e.weight) for e in examples], dtype=torch.float32)
    return {
        "input_ids": ids.to(device),
        "attention_mask": attn.to(device),
        "targets": targets.to(device),
        "weights": weights.to(device),
    }


# ---------------------------------------------------------------------------------------------- forward
def target_logprobs(model: Any, batch: dict[str, Any], temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of every target token (``targets != -100``), flattened row by row, as a float32 vector.

    The LM head runs only on target positions: on a small model it is the largest matmul, and prompt and pad
    positions (often half the tokens) need none of it. Models whose logits are not ``head(hidden)`` fall back to
    the full forward.
    """
    import torch.nn.functional as F

    select = batch["targets"] != IGNORE
    if split_head_ok(model):
        hidden = model.base_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        logits = model.get_output_embeddings()(hidden[select])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[
            select
        ]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits, batch["targets"][select], reduction="none")


#: bytes of fp32 logits one chunk of ``target_nll`` holds: 64 MiB is 341 rows of a 49k vocab, where the
#: unchunked head (logits, log-softmax, their gradients) held four [targets, vocab] fp32 tensors at once
LOSS_CHUNK_BYTES = 64 * 2**20


def target_nll(model: Any, batch: dict[str, Any], *, chunk_rows: int | None = None) -> torch.Tensor:
    """``sum_t w_t * -log p(target_t)`` over the batch's target tokens (w_t: the row weight), a float32 scalar.

    Same value and gradient as ``-(target_logprobs(model, batch) * token_weights(batch)).sum()`` up to float
    rounding, without ever holding the [targets, vocab] logits: the LM head runs on ``chunk_rows`` targets at a
    time (default: ``LOSS_CHUNK_BYTES`` of fp32 logits) and, when a gradient is wanted, each chunk's gradient is
    taken at once (softmax minus one-hot, in place), so nothing vocab-sized waits for the backward pass. Models
    whose head is not a plain bias-free linear layer fall back to ``target_logprobs``.

    >>> loss = target_nll(model, collate(examples, pad_id=0)) / n_target  # doctest: +SKIP
    """
    import torch

    select = batch["targets"] != IGNORE
    weights = token_weights(batch)
    head = model.get_output_embeddings() if split_head_ok(model) else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return -(target_logprobs(model, batch) * weights).sum()
    hidden = model.base_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state[select]
    targets = batch["targets"][select]
    rows = chunk_rows or max(1, LOSS_CHUNK_BYTES // (4 * head.weight.shape[0]))
    if torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad):
        return _chunked_nll_function().apply(hidden, head.weight, targets, weights, rows)
    return _chunked_nll(hidden, head.weight, targets, weights, rows, grads=False)[0]


def _chunked_nll(hidden, weight, targets, weights, rows: int, *, grads: bool):
    """The weighted NLL sum and, with ``grads``, its gradients for ``hidden`` and ``weight``, chunk by chunk."""
    import torch

    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if grads else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grads else None
    for start in range(0, hidden.shape[0], rows):
        h, t, w = hidden[start : start + rows], targets[start : start + rows], weights[start : start + rows]
        logits = (h @ weight.t()).float()  # under bf16 autocast the matmul runs in bf16, as the Linear would
        lse = torch.logsumexp(logits, -1)
        total += ((lse - logits.gather(1, t[:, None]).squeeze(1)) * w).sum()
        if grads:
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place: the chunk is the only vocab-sized buffer
            g[torch.arange(len(t), device=g.device), t] -= 1
            g.mul_(w[:, None])
            grad_hidden[start : start + rows] = (g @ weight).to(hidden.dtype)
            grad_weight += (g.t() @ h).float()
    return total, grad_hidden, grad_weight


_CHUNKED_NLL = None


def _chunked_nll_function():
    """The autograd Function behind ``target_nll`` (built on first use: torch is imported lazily here)."""
    global _CHUNKED_NLL
    if _CHUNKED_NLL is None:
        import torch

        class ChunkedNLL(torch.autograd.Function):
            @staticmethod
            def forward(ctx, hidden, weight, targets, weights, rows):
                total, grad_hidden, grad_weight = _chunked_nll(hidden, weight, targets, weights, rows, grads=True)
                ctx.save_for_backward(grad_hidden, grad_weight)
                ctx.weight_dtype = weight.dtype
                return total

            @staticmethod
            def backward(ctx, grad_out):
                grad_hidden, grad_weight = ctx.saved_tensors
                return grad_hidden * grad_out, (grad_weight * grad_out).to(ctx.weight_dtype), None, None, None

        _CHUNKED_NLL = ChunkedNLL
    return _CHUNKED_NLL


def token_weights(batch: dict[str, Any]) -> torch.Tensor:
    """Each target token's row weight, in the order of ``target_logprobs``."""
    select = batch["targets"] != IGNORE
    return batch["weights"].unsqueeze(1).expand_as(select)[select]


def autocast(device: str, precision: str):
    """bf16 autocast on CUDA (weights stay fp32), nothing on CPU: emulated bf16 is ~300x slower there."""
    import contextlib

    import torch

    if precision == "bf16" or (precision == "auto" and device.startswith("cuda")):
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- run folder
@dataclass
class TrainResult:
    """What a training run left behind: the folder (final model loads with ``from_pretrained(out)``) and metrics."""

    out: Path
    steps: int
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    """The last resumable checkpoint folder, if any was saved."""

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())
        return f"{self.out} after {self.steps} steps ({shown})"


def prepare_out(out: Path, resume: bool) -> Path | None:
    """Create the run folder; return the checkpoint to resume from. A finished or started run is never clobbered."""
    out.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(out)
    if not resume and (last is not None or (out / "metrics.jsonl").exists()):
        raise CurateError(f"--out {out}: already holds a run; pass --resume to continue it or choose another --out")
    return last if resume else None


def latest_checkpoint(out: Path) -> Path | None:
    """The highest-numbered ``checkpoint-N`` folder holding trainer state (a legacy pickled one too, so that
    resuming it is refused by ``load_state`` rather than silently starting over)."""
    found = [
        p
        for p in out.glob(f"{CHECKPOINT_PREFIX}*")
        if re.fullmatch(r"\d+", p.name[len(CHECKPOINT_PREFIX) :])
        and ((p / STATE_FILE).exists() or (p / LEGACY_STATE_FILE).exists())
    ]
    return max(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


def config_dict(config: Any) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, str | int | float | bool | list | dict | type(None)) else repr(v))
        for k, v in asdict(config).items()
    }


def run_info(config: Any, version: Any, model_identity: str, **extra: Any) -> dict[str, Any]:
    """The provenance written next to every checkpoint as ``curate_train.json``; ``version`` is a store version or
    ``Rows`` (ref ``rows`` and a content digest as the id)."""
    return {
        "config": config_dict(config),
        "dataset": {"ref": version.ref, "name": version.name, "id": version.id},
        "model_identity": model_identity,
        "environment": environment(),
        **extra,
    }


def save_model(path: Path, model: Any, tokenizer: Any, info: dict[str, Any], state: dict[str, Any] | None) -> Path:
    """Write a Hugging Face folder (safetensors + tokenizer + ``curate_train.json``), atomically when ``state`` is
    given (a resumable checkpoint: optimizer, step, RNG in ``trainer_state.json`` + ``.safetensors``)."""
    target = path
    if state is not None:
        path = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / CONFIG_FILE).write_text(json.dumps(info, indent=1, default=str))
    if state is not None:
        save_state(path, state)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(path, target)
    return target


# A trainer state is a tree of dicts, lists, tuples, scalars, tensors and numpy arrays (optimizer state_dict,
# RNG states). It is written as JSON with every tensor replaced by {"$tensor": name} (stored in safetensors),
# every array by {"$ndarray": name, ...} (its bytes as a uint8 tensor), tuples as {"$tuple": [...]} and dicts
# with non-string keys (optimizer state is keyed by int) as {"$items": [[k, v], ...]}. Reading it back builds
# only those types: there is no class name to import and nothing to call.
def _encode(x: Any, tensors: dict[str, Any]) -> Any:
    import torch

    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = x.detach().to("cpu").contiguous().clone()
        return {"$tensor": name}
    if isinstance(x, np.ndarray):
        name = f"t{len(tensors)}"
        raw = np.ascontiguousarray(x)
        tensors[name] = torch.from_numpy(raw.reshape(-1).view(np.uint8).copy())
        return {"$ndarray": name, "dtype": raw.dtype.str, "shape": list(raw.shape)}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple):
        return {"$tuple": [_encode(v, tensors) for v in x]}
    if isinstance(x, list):
        return [_encode(v, tensors) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in x):
            return {k: _encode(v, tensors) for k, v in x.items()}
        return {"$items": [[_encode(k, tensors), _encode(v, tensors)] for k, v in x.items()]}
    raise CurateError(f"trainer state: cannot save a {type(x).__name__} without pickle")


def _decode(x: Any, tensors: dict[str, Any]) -> Any:
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        raise ValueError(f"unexpected {type(x).__name__}")
    if "$tensor" in x:
        return tensors[x["$tensor"]]
    if "$ndarray" in x:
        dtype = np.dtype(x["dtype"])
        if dtype.hasobject:  # an object array would need pickle to mean anything
            raise ValueError(f"array dtype {x['dtype']!r}")
        raw = tensors[x["$ndarray"]].numpy().tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape([int(n) for n in x["shape"]]).copy()
    if "$tuple" in x:
        return tuple(_decode(v, tensors) for v in x["$tuple"])
    if "$items" in x:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in x["$items"]}
    if any(k.startswith("$") for k in x):
        raise ValueError(f"unknown marker {sorted(x)}")
    return {k: _decode(v, tensors) for k, v in x.items()}


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (step, optimizer ``state_dict``, RNG states, ...) as ``trainer_state.json`` and
    ``trainer_state.safetensors``, no pickle; ``load_state`` reads it back exactly.

    >>> save_state(Path("ckpt"), {"step": 3, "rng": rng_state()})  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    body = _encode(dict(state), tensors)
    save_file(tensors, str(folder / TENSORS_FILE))
    doc = {
        "format": STATE_FORMAT,
        "step": state.get("step"),
        "tensors": {"file": TENSORS_FILE, "sha256": sha256_file(folder / TENSORS_FILE)},
        "state": body,
    }
    (folder / STATE_FILE).write_text(json.dumps(doc))


def load_state(checkpoint: Path) -> dict[str, Any]:
    """Read a checkpoint's trainer state written by ``save_state``; anything else is refused with one line.

    A ``trainer_state.pt`` (older curate, or planted) is never unpickled: unpickling can run any code.

    >>> load_state(Path("runs/sft/checkpoint-000030"))["step"]  # doctest: +SKIP
    30
    """
    from safetensors.torch import load_file

    legacy = checkpoint / LEGACY_STATE_FILE
    if legacy.exists():
        raise CurateError(
            f"{legacy}: pickled trainer state is not loaded (it can run code); "
            "resume from a checkpoint written by this curate version"
        )
    where = checkpoint / STATE_FILE
    try:
        doc = json.loads(where.read_text())
    except FileNotFoundError:
        raise CurateError(f"{where}: missing; this checkpoint cannot be resumed") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CurateError(f"{where}: not valid JSON ({type(e).__name__}); this checkpoint cannot be resumed") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CurateError(f"{where}: unknown trainer state format {found!r} (this curate reads {STATE_FORMAT})")
    tensors_path = checkpoint / TENSORS_FILE
    recorded = doc.get("tensors", {}).get("sha256") if isinstance(doc.get("tensors"), dict) else None
    if not tensors_path.exists():
        raise CurateError(f"{tensors_path}: missing; this checkpoint cannot be resumed")
    if recorded != sha256_file(tensors_path):
        raise CurateError(f"{tensors_path}: sha256 does not match {STATE_FILE}; the checkpoint is corrupt or edited")
    try:
        state = _decode(doc["state"], load_file(str(tensors_path)))
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no integer 'step'")
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        why = " ".join(str(e).split())[:200]
        raise CurateError(f"{where}: malformed trainer state ({type(e).__name__}: {why})") from None
    return state


def read_run_info(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``curate_train.json``; unreadable or missing the fields resume needs is one line."""
    where = checkpoint / CONFIG_FILE
    try:
        info = json.loads(where.read_text())
        if not (isinstance(info["dataset"]["id"], str) and isinstance(info["dataset"]["ref"], str)):
            raise TypeError("dataset id and ref must be strings")
        if not isinstance(info["config"], dict) or not isinstance(info["model_identity"], str):
            raise TypeError("config must be an object and model_identity a string")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as e:
        raise CurateError(f"{where}: unreadable ({type(e).__name__}); this checkpoint cannot be resumed") from None
    return info


def check_resume(checkpoint: Path, info: dict[str, Any], keys: Sequence[str]) -> None:
    """Refuse to resume a checkpoint trained on other data or with settings that change what a step means."""
    saved = read_run_info(checkpoint)
    saved_id, saved_ref, saved_config = saved["dataset"]["id"], saved["dataset"]["ref"], saved["config"]
    if saved_id != info["dataset"]["id"]:
        raise CurateError(
            f"--resume: {checkpoint} was trained on {saved_ref} "
            f"(id {saved_id}), not {info['dataset']['ref']} (id {info['dataset']['id']})"
        )
    for k in keys:
        if saved_config.get(k) != info["config"].get(k):
            raise CurateError(
                f"--resume: {checkpoint} used --{k.replace('_', '-')} {saved_config.get(k)!r}, "
                f"this run {info['config'].get(k)!r}; they must match"
            )


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_state(checkpoint: Path, state: dict[str, Any], optimizer: Any) -> int:
    """Put a ``load_state`` result back into the optimizer and the RNGs; return its step. A state that does not fit
    (edited JSON, another optimizer) is one line naming the file."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        why = " ".join(str(e).split())[:200]
        raise CurateError(f"{checkpoint / STATE_FILE}: does not fit this run ({type(e).__name__}: {why})") from None
    return int(state["step"])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, records after the checkpoint's step (a lost tail) are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``, in order.

    >>> [r["loss"] for r in read_metrics("runs/sft") if "loss" in r][:3]   # doctest: +SKIP
    """
    path = Path(out) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []
