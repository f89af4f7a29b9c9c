"""Supervised fine-tuning on a store version (or rows given directly): full fine-tuning with AdamW, top to bottom.

What it computes. For every optimizer step it takes ``batch_size x grad_accum`` rows and minimises the global
token-mean of the weighted next-token loss over the whole step:

    loss = sum_r w_r * sum_{t in T_r} -log p(y_rt | y_r<t)  /  sum_r |T_r|

where T_r are row r's trained tokens (``labels != -100`` when the version has ``input_ids`` + ``labels``, e.g.
from token cleaning; otherwise the assistant tokens of ``messages``) and w_r is the row's ``weight`` (1 when
absent). The denominator counts tokens, not weights, and spans all micro-batches of the step, so gradient
accumulation 1x8 and 8x1 give the same update and a weight of 2 counts a row's tokens twice in the numerator
(rows of weight 0 are dropped before batching, so they cost no compute). Evaluation loss (``--eval-ref``) is
the plain token-mean NLL over the eval version; weights do not enter it.

Schedule: linear warm-up over ``warmup_ratio`` of the steps, then cosine decay to ``min_lr_ratio x lr``. Gradients
are clipped to ``clip_grad`` (global norm). On a GPU the forward runs under bf16 autocast with fp32 weights; on a
CPU everything is fp32. Rows are batched by length so little compute goes to padding, and the LM head only runs
on trained positions, a few hundred at a time (``data.target_nll``): the [tokens, vocab] logits of a whole batch
are never held, so peak memory is the model, its gradients, AdamW's two moments and the activations.

Not a paper's method; it follows the usual SFT recipe (nanochat ``chat_sft.py``, TRL ``SFTTrainer``). Departures
from TRL: no packing (length-grouped batches instead); the loss is normalised per optimizer step, never per
micro-batch; no LoRA.

Output folder: the final model at ``DIR`` (``from_pretrained(DIR)``), ``DIR/checkpoint-N`` every ``save_every``
steps (model + tokenizer + optimizer, step and RNG for ``--resume``), ``curate_train.json`` (resolved config,
dataset version id, model identity, software versions) next to each, and ``DIR/metrics.jsonl``.

    curate train sft gsm8k@v1 --model smollm2-135m --out runs/sft --epochs 1 --batch-size 8 --grad-accum 2 \\
        --eval-ref gsm8k-test@v1 --eval-every 50 --save-every 100
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.train.data import (
    IGNORE,
    Example,
    MetricsLog,
    TrainData,
    TrainResult,
    autocast,
    check_resume,
    collate,
    examples_from_rows,
    latest_checkpoint,
    load_state,
    micro_batches,
    plan_epoch,
    prepare_out,
    restore_state,
    rng_state,
    run_info,
    save_model,
    seed_everything,
    target_nll,
    training_data,
)

PRECISIONS = ("auto", "fp32", "bf16")


# ============================================================================================== config
@dataclass
class SFTConfig:
    """Settings of one SFT run; every field is a CLI flag (``grad_accum`` -> ``--grad-accum``)."""

    model: str = "smollm2-135m"
    """Model to fine-tune: an alias, a local Hugging Face folder, or a hub id."""
    epochs: int = 1
    """Passes over the data (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Optimizer steps to run; overrides ``epochs`` (the data is cycled, reshuffled each pass)."""
    lr: float = 2e-5
    """Peak learning rate (AdamW)."""
    warmup_ratio: float = 0.03
    """Fraction of the steps spent warming the learning rate up linearly from lr / warmup steps."""
    min_lr_ratio: float = 0.1
    """The cosine decays towards ``min_lr_ratio * lr``, reached just after the last step (as in transformers)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    batch_size: int = 8
    """Rows per micro-batch (one forward/backward)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; a step sees ``batch_size * grad_accum`` rows."""
    max_len: int = 1024
    """Sequences are cut to this many tokens."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    group_by_length: bool = True
    """Batch rows of similar length together (less padding); off gives a plain shuffle."""
    eval_ref: str | None = None
    """A store ref whose token-mean loss is reported at the start, every ``eval_every`` steps and at the end."""
    eval_every: int | None = None
    """Evaluate every N steps (needs ``eval_ref``); None evaluates only at the start and the end."""
    save_every: int | None = None
    """Write a resumable ``checkpoint-N`` every N steps (and at the last step); None saves only the final model."""
    log_every: int = 10
    """Print a progress line every N steps (metrics.jsonl gets every step regardless)."""
    seed: int = 0
    """Seeds the data order and torch."""
    out: str = "runs/sft"
    """Run folder: final model, checkpoints, metrics.jsonl."""
    resume: bool = False
    """Continue from the last checkpoint in ``out`` (model, optimizer, step, RNG, data position)."""
    device: str | None = None
    """``cuda``, ``cpu`` ...; default: cuda when available."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, or ``bf16`` (autocast)."""

    def __post_init__(self) -> None:
        for flag, value, low in (
            ("--epochs", self.epochs, 1),
            ("--batch-size", self.batch_size, 1),
            ("--grad-accum", self.grad_accum, 1),
            ("--max-len", self.max_len, 2),
            ("--log-every", self.log_every, 1),
        ):
            if value < low:
                raise CurateError(f"{flag} must be >= {low}, got {value}")
        for flag, value in (
            ("--max-steps", self.max_steps),
            ("--eval-every", self.eval_every),
            ("--save-every", self.save_every),
        ):
            if value is not None and value < 1:
                raise CurateError(f"{flag} must be >= 1 (or unset), got {value}")
        if not self.lr > 0:
            raise CurateError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise CurateError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise CurateError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.clip_grad < 0:
            raise CurateError("--weight-decay and --clip-grad must be >= 0")
        if self.eval_every is not None and self.eval_ref is None:
            raise CurateError("--eval-every needs --eval-ref (the version to evaluate on)")
        if self.precision not in PRECISIONS:
            raise CurateError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


# ============================================================================================== data
def load_examples(
    data: TrainData, tokenizer: Any, config: SFTConfig, store: Any, vocab: int, use_weights: bool = True
):
    """The version behind ``data`` (or ``Rows``) and its token examples (every weight 1 when not ``use_weights``)."""
    version = training_data(data, store)
    columns = set(version.columns)
    if "input_ids" not in columns and "messages" not in columns:
        raise CurateError(
            f"{version.ref}: SFT needs a 'messages' column or 'input_ids' (+ 'labels'); "
            f"it has {', '.join(sorted(columns))}"
        )
    wanted = [c for c in ("id", "messages", "input_ids", "labels", "weight") if c in columns]
    rows = version.to_arrow(wanted).to_pylist()
    examples, stats = examples_from_rows(
        rows, tokenizer, ref=version.ref, max_len=config.max_len, vocab_size=vocab, use_weights=use_weights
    )
    if not examples:
        raise CurateError(f"{version.ref}: no row has a trained token within --max-len {config.max_len}")
    return version, examples, stats


# ============================================================================================== model
def load_model(name: str, config: SFTConfig, device: str):
    """A private fp32 copy of the model in train mode (the process-wide model cache must not see our updates)."""
    import torch

    from curate.models import load_causal_lm, resolve

    model, tokenizer = load_causal_lm(name, device=device, dtype=torch.float32, cache=False)
    if config.grad_checkpointing:
        # transformers 5 renamed the switch; the old name still works there, with a warning
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    return model, tokenizer, resolve(name).identity


# ============================================================================================== loss
def lr_multiplier(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr for update ``step`` (0-based): linear warm-up, then cosine to ``min_ratio``.

    >>> [round(lr_multiplier(s, 10, 2, 0.1), 3) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.134]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def loss_on(
    model: Any, examples: list[Example], *, n_target: int, pad_id: int, device: str = "cpu", precision: str = "auto"
):
    """The summed weighted NLL of ``examples`` divided by ``n_target`` (the trained-token count of the whole
    optimizer step); summing this over a step's micro-batches gives the step loss of the module docstring.

    >>> loss = loss_on(model, examples, n_target=sum(e.n_target for e in examples), pad_id=0)  # doctest: +SKIP
    """
    batch = collate(examples, pad_id, device, multiple=8 if device.startswith("cuda") else 1)
    with autocast(device, precision):
        return target_nll(model, batch) / n_target


# ============================================================================================== eval
def evaluate(
    model: Any, examples: list[Example], *, batch_size: int, pad_id: int, device: str, precision: str
) -> float:
    """Token-mean NLL over ``examples`` (weights ignored), in length-sorted batches."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    lengths = [len(e.input_ids) for e in examples]
    with torch.no_grad():
        for mb in micro_batches(range(len(examples)), lengths, batch_size):
            batch = collate([examples[i] for i in mb], pad_id, device)
            batch["weights"] = torch.ones_like(batch["weights"])
            with autocast(device, precision):
                total += float(target_nll(model, batch))
            count += int((batch["targets"] != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


# ============================================================================================== loop
def sft(data: TrainData, config: SFTConfig | None = None, *, store: Any = None, **overrides: Any) -> TrainResult:
    """Fine-tune ``config.model`` on ``data``; see the module docstring for the objective.

    ``data`` is a store ref, a ``Version``, or rows (a pyarrow Table or a list of row dicts). Rows have no store
    version: ``curate_train.json`` records them as ref ``rows`` with their content digest as the id.

    >>> import curate.train
    >>> r = curate.train.sft("gsm8k@v1", model="smollm2-135m", max_steps=20, out="runs/s")  # doctest: +SKIP
    >>> r.out, r.metrics["loss"]                                                           # doctest: +SKIP
    >>> curate.train.sft([{"id": "a", "messages": chat}], max_steps=1, out="runs/t")      # doctest: +SKIP
    """
    import torch

    from curate.models import default_device
    from curate.outputs import check_out
    from curate.progress import console, progress

    config = replace(config or SFTConfig(), **overrides) if overrides else (config or SFTConfig())
    out = check_out(config.out, store)  # before prepare_out makes the folder: never inside the store
    device = config.device or default_device()
    resume_from = prepare_out(out, config.resume)
    # Read (and refuse, if it is not ours) before any model loads: one line, nothing else done.
    state = load_state(resume_from) if resume_from is not None else None
    seed_everything(config.seed)

    # -- model and data
    model, tokenizer, identity = load_model(str(resume_from or config.model), config, device)
    vocab = model.get_input_embeddings().weight.shape[0]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    version, examples, data_stats = load_examples(data, tokenizer, config, store, vocab)
    eval_examples = None
    if config.eval_ref is not None:
        eval_version, eval_examples, _ = load_examples(config.eval_ref, tokenizer, config, store, vocab, False)
    lengths = [len(e.input_ids) for e in examples]
    rows_per_step = config.batch_size * config.grad_accum
    steps_per_epoch = math.ceil(len(examples) / rows_per_step)
    total = config.max_steps or config.epochs * steps_per_epoch
    warmup = math.ceil(config.warmup_ratio * total)
    info = run_info(
        config,
        version,
        identity if resume_from is None else _base_identity(resume_from),
        eval_dataset=None if eval_examples is None else {"ref": eval_version.ref, "id": eval_version.id},
        data=data_stats,
        total_steps=total,
    )

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        fused=True if device.startswith("cuda") else None,
    )
    # -- resume: the data plan is a pure function of (seed, epoch), so the step alone is the data position
    step = 0
    if resume_from is not None:
        check_resume(
            resume_from,
            info,
            ("model", "batch_size", "grad_accum", "max_len", "seed", "epochs", "max_steps", "group_by_length"),
        )
        step = restore_state(resume_from, state, opt)
        if _loud():
            console.print(f"resuming {out} from {resume_from.name} (step {step}/{total})")
    log = MetricsLog(out / "metrics.jsonl", step if resume_from is not None else None)

    def eval_now(at: int) -> float | None:
        if eval_examples is None:
            return None
        loss = evaluate(
            model,
            eval_examples,
            batch_size=config.batch_size,
            pad_id=pad_id,
            device=device,
            precision=config.precision,
        )
        log.write({"step": at, "eval_loss": loss, "eval_tokens": sum(e.n_target for e in eval_examples)})
        return loss

    def checkpoint(at: int) -> Path:
        state = {"step": at, "optimizer": opt.state_dict(), "rng": rng_state()}
        return save_model(out / f"checkpoint-{at:06d}", model, tokenizer, {**info, "step": at}, state)

    # -- loop
    metrics: dict[str, Any] = {"rows": len(examples), **data_stats}
    if step == 0 and (first := eval_now(0)) is not None:
        metrics["eval_loss_start"] = first
    plan_cache: dict[int, list[list[int]]] = {}
    train_s, seen_tokens, padded_tokens, last_ckpt = 0.0, 0, 0, latest_checkpoint(out)
    with progress(f"sft {version.ref}", total - step) as advance:
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            if epoch not in plan_cache:
                plan_cache = {
                    epoch: plan_epoch(
                        lengths, rows_per_step, seed=config.seed, epoch=epoch, group_by_length=config.group_by_length
                    )
                }
            rows = plan_cache[epoch][pos]
            n_target = sum(examples[i].n_target for i in rows)
            lr = config.lr * lr_multiplier(step, total, warmup, config.min_lr_ratio)
            for group in opt.param_groups:
                group["lr"] = lr

            t0 = time.perf_counter()
            step_loss, step_tokens, step_padded = 0.0, 0, 0
            for mb in micro_batches(rows, lengths, config.batch_size):
                loss = loss_on(
                    model,
                    [examples[i] for i in mb],
                    n_target=n_target,
                    pad_id=pad_id,
                    device=device,
                    precision=config.precision,
                )
                loss.backward()
                step_loss += float(loss.detach())
                step_tokens += sum(lengths[i] for i in mb)
                step_padded += len(mb) * max(lengths[i] for i in mb)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad or float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            train_s += dt
            seen_tokens += step_tokens
            padded_tokens += step_padded
            step += 1

            record = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "loss": step_loss,
                "lr": lr,
                "grad_norm": float(norm),
                "rows": len(rows),
                "target_tokens": n_target,
                "tokens": step_tokens,
                "pad_fraction": round(1 - step_tokens / step_padded, 4),
                "tokens_per_s": round(step_tokens / dt, 1),
                "step_s": round(dt, 4),
            }
            log.write(record)
            advance(1)
            if _loud() and (step % config.log_every == 0 or step == total):
                console.print(
                    f"step {step}/{total} loss {step_loss:.4f} lr {lr:.2e} {record['tokens_per_s']:.0f} tok/s"
                )
            if config.eval_every and step % config.eval_every == 0 and step < total:
                eval_now(step)
            if config.save_every and (step % config.save_every == 0 or step == total):
                last_ckpt = checkpoint(step)
            metrics["loss"] = step_loss

    # -- save
    if (final := eval_now(total)) is not None:
        metrics["eval_loss"] = final
    if seen_tokens:
        metrics.update(
            tokens_per_s=round(seen_tokens / train_s, 1),
            train_s=round(train_s, 3),
            pad_fraction=round(1 - seen_tokens / padded_tokens, 4),
        )
    save_model(out, model, tokenizer, {**info, "step": total, "metrics": metrics}, None)
    return TrainResult(out=out, steps=total, metrics=metrics, checkpoint=last_ckpt)


def _base_identity(checkpoint: Path) -> str:
    """The identity of the model a resumed run started from (a checkpoint's own files change every save)."""
    from curate.train.data import read_run_info

    return read_run_info(checkpoint)["model_identity"]


def _loud() -> bool:
    import os
    import sys

    return not os.environ.get("CURATE_QUIET") and sys.stderr.isatty()


__all__ = ["IGNORE", "SFTConfig", "evaluate", "loss_on", "lr_multiplier", "sft"]
