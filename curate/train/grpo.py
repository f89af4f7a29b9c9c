"""GRPO on a prompts version: group sampling, verifiable rewards, group-normalised advantages, a clipped policy
gradient; read top to bottom.

What it computes, per step:

1. Draw ``prompts_per_step`` prompts: a seeded sequential pass over the version (reshuffled every pass), or with
   ``--curriculum online`` the learnability sampler (``train/curriculum.py``), updated with every group's rewards.
2. Sample ``n`` completions per prompt from the policy being trained (``model.generate``, left-padded; the hf
   ``Generator`` returns text, and training needs the sampled token ids) and score them with ``--reward``
   (``curate.rewards``: ``fn(completion, answer, **row)``).
3. Select: with ``--drop-zero-variance`` (DAPO dynamic sampling) groups whose rollouts all agree are dropped:
   ``--metric acc`` (default, DAPO's ``metric=acc``: correctness, a reward > 0.5) or ``score`` (the reward), "agree"
   meaning a population std ``<= --tolerance`` (default 1e-6); with ``--downsample m`` (PODS) only the m rollouts of
   maximum reward variance are kept (``curate.groups.max_variance_subset``).
4. Advantages over each kept (sub)group: ``A = (r - mean) / (std + 1e-4)``, std with ``--ddof`` (default 1, the
   sample std, as TRL's ``GRPOTrainer`` and PODS compute it; 0 gives the population std), every token of a
   completion sharing its sequence's A. A group of one rollout gets A = 0.
5. ``ppo_epochs`` passes over the kept rollouts, each in ``minibatches`` optimizer steps, minimising the token-mean
   (over all completion tokens of the minibatch, DAPO's token-level normalisation) of

       -min(rho A, clip(rho, 1 - eps, 1 + eps) A) + beta * KL_k3(pi || pi_ref),
       rho = pi(o_t) / pi_old(o_t),  KL_k3 = exp(l_ref - l) - (l_ref - l) - 1

   where pi_old is the policy that sampled (its log-probs are computed once before the updates). With one update
   per batch rho = 1 and this is REINFORCE with a group baseline; more updates make the clipping matter. A frozen
   reference copy exists only when ``beta > 0``. Log-probs use logits / temperature, the distribution sampled from.

Papers: GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300); PPO clipping (Schulman et al., arXiv 1707.06347);
DAPO (Yu et al., arXiv 2503.14476: dynamic sampling, token-level loss); PODS (Xu et al., arXiv 2504.13818).

Departures from DeepSeekMath's GRPO (its eq. 3 and section 4):

- ``beta = 0`` by default (DeepSeekMath: 0.04), so no reference model is kept; ``--beta`` restores the k3 KL term,
  the same estimator the paper uses, to the initial policy (the paper's iterative GRPO also resets the reference
  to the current policy each iteration; there is no iteration here).
- Loss aggregation: the token-mean over all completion tokens of the minibatch (DAPO), where the paper averages
  each completion's tokens first and then the G completions (1/G sum_i 1/|o_i| sum_t); long completions weigh more
  here, as in DAPO.
- Advantages divide by ``std + 1e-4`` (TRL; the paper: std), with the sample std by default (``--ddof 1``; the paper
  does not say which), over the PODS subset when ``--downsample`` is given.
- Rewards come from a verifiable reward function (``--reward``), not a trained reward model; outcome supervision
  only (no process supervision), and no reward-model retraining between iterations.
- Optional group selection the paper does not have: ``--drop-zero-variance`` (DAPO), ``--downsample`` (PODS),
  ``--curriculum online``.
- Defaults sized for small runs: ``n = 8`` completions per prompt (the paper: 64), 4 prompts per step, 128 new
  tokens; the paper's single policy update per exploration stage is the default (``ppo_epochs = minibatches = 1``).

Departures from DAPO and the rest: DAPO refills the batch after dropping groups, here the step simply trains on
fewer groups (the kept fraction is logged), and DAPO keeps one-rollout groups and tests ``std > 0`` exactly; no
clip-higher or overlong shaping; the policy runs in eval mode (no dropout) so rho is exactly 1 at the first update;
sampling is plain ``generate`` on the training device: vLLM with weight syncing is not wired in (on a GPU generation
runs under bf16 autocast, and is the slow part for long completions).

Per step ``metrics.jsonl`` gets reward mean/std, kept fraction, a 5-bin histogram of per-prompt pass rates (mean
reward clipped to [0, 1]; bins [0, .2), [.2, .4), [.4, .6), [.6, .8), [.8, 1]), loss, kl, clip fraction, lr and
timings. Checkpoints and the final model are saved as in ``curate train sft``.

    curate train grpo gsm8k@v1 --model smollm2-135m --reward math --out runs/grpo --n 8 --prompts-per-step 4 \\
        --steps 200 --lr 1e-6 --max-new-tokens 256 --downsample 4 --drop-zero-variance --curriculum online
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.groups import (
    DDOFS,
    DEFAULT_DDOF,
    METRICS,
    ZERO_STD_TOL,
    group_advantages,
    max_variance_subset,
    metric_values,
    zero_variance,
)
from curate.rollouts import PASS_THRESHOLD
from curate.train.curriculum import OnlineDifficultySampler
from curate.train.data import (
    IGNORE,
    Example,
    MetricsLog,
    TrainData,
    TrainResult,
    autocast,
    check_resume,
    collate,
    latest_checkpoint,
    load_state,
    micro_batches,
    prepare_out,
    restore_state,
    rng_state,
    run_info,
    save_model,
    seed_everything,
    target_logprobs,
    token_weights,
    training_data,
)

CURRICULA = ("none", "online")
PRECISIONS = ("auto", "fp32", "bf16")
HIST_EDGES = (0.2, 0.4, 0.6, 0.8)


# ============================================================================================== config
@dataclass
class GRPOConfig:
    """Settings of one GRPO run; every field is a CLI flag (``prompts_per_step`` -> ``--prompts-per-step``)."""

    model: str = "smollm2-135m"
    """Policy to train: an alias, a local Hugging Face folder, or a hub id."""
    reward: str = "math"
    """Reward: a built-in name (math, exact, contains) or ``package.module:function`` (the Python API also takes a
    callable)."""
    n: int = 8
    """Completions sampled per prompt (the group)."""
    prompts_per_step: int = 4
    """Prompts per step; a step samples ``prompts_per_step * n`` completions."""
    steps: int = 100
    """Training steps (sample, score, update)."""
    lr: float = 1e-6
    """AdamW learning rate (constant after warm-up)."""
    warmup_steps: int = 0
    """Linear warm-up of the learning rate over this many steps."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    temperature: float = 1.0
    """Sampling temperature (also divides the logits of the training log-probs)."""
    top_p: float = 1.0
    """Nucleus sampling; below 1 the sampled distribution is truncated while the loss sees the full one."""
    max_new_tokens: int = 128
    """Most tokens per completion."""
    max_prompt_len: int = 512
    """Prompts longer than this many tokens are left out (counted in curate_train.json)."""
    clip_eps: float = 0.2
    """PPO ratio clip: rho is clipped to [1 - eps, 1 + eps]."""
    ppo_epochs: int = 1
    """Passes over each step's rollouts."""
    minibatches: int = 1
    """Optimizer steps per pass; with ``ppo_epochs * minibatches > 1`` the ratio departs from 1 and clipping acts."""
    micro_batch_size: int = 16
    """Sequences per forward/backward (gradient accumulation inside a minibatch; no effect on the update)."""
    beta: float = 0.0
    """Weight of the k3 KL penalty to the initial model; 0 keeps no reference copy."""
    downsample: int | None = None
    """PODS: keep the m of n rollouts per prompt with maximum reward variance (2 <= m <= n)."""
    drop_zero_variance: bool = False
    """DAPO: drop groups whose rollouts all agree (see ``metric``) before the update."""
    metric: str = "acc"
    """What ``--drop-zero-variance`` compares: ``acc`` (correctness, reward > 0.5; DAPO's choice) or ``score``
    (the reward)."""
    tolerance: float = ZERO_STD_TOL
    """A group agrees when the population std of its metric values is at most this."""
    ddof: int = DEFAULT_DDOF
    """Std of the advantages: 1 (sample std, TRL / PODS) or 0 (population std, sqrt(n / (n - 1)) larger)."""
    curriculum: str = "none"
    """``none`` (sequential pass) or ``online`` (learnability sampler, updated with each step's rewards)."""
    eval_ref: str | None = None
    """A prompts ref whose greedy mean reward is logged at the start, every ``eval_every`` steps and at the end."""
    eval_every: int | None = None
    """Evaluate every N steps (needs ``eval_ref``)."""
    save_every: int | None = None
    """Write a resumable ``checkpoint-N`` every N steps (and at the last step); None saves only the final model."""
    seed: int = 0
    """Seeds prompt order, sampling and the curriculum."""
    out: str = "runs/grpo"
    """Run folder: final model, checkpoints, metrics.jsonl."""
    resume: bool = False
    """Continue from the last checkpoint in ``out`` (model, optimizer, step, RNG, curriculum state)."""
    device: str | None = None
    """``cuda``, ``cpu`` ...; default: cuda when available."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, or ``bf16`` (autocast)."""

    def __post_init__(self) -> None:
        for flag, value, low in (
            ("--n", self.n, 2),
            ("--prompts-per-step", self.prompts_per_step, 1),
            ("--steps", self.steps, 1),
            ("--max-new-tokens", self.max_new_tokens, 1),
            ("--max-prompt-len", self.max_prompt_len, 1),
            ("--ppo-epochs", self.ppo_epochs, 1),
            ("--minibatches", self.minibatches, 1),
            ("--warmup-steps", self.warmup_steps, 0),
            ("--micro-batch-size", self.micro_batch_size, 1),
        ):
            if value < low:
                raise CurateError(f"{flag} must be >= {low}, got {value}")
        if self.downsample is not None and not 2 <= self.downsample <= self.n:
            raise CurateError(f"--downsample must be between 2 and --n ({self.n}), got {self.downsample}")
        if not self.lr > 0 or not self.temperature > 0:
            raise CurateError("--lr and --temperature must be > 0")
        if not 0 < self.top_p <= 1:
            raise CurateError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not self.clip_eps > 0 or self.beta < 0 or self.clip_grad < 0 or self.weight_decay < 0:
            raise CurateError("--clip-eps must be > 0; --beta, --clip-grad and --weight-decay must be >= 0")
        if self.curriculum not in CURRICULA:
            raise CurateError(f"--curriculum must be one of {', '.join(CURRICULA)}, got {self.curriculum!r}")
        if self.eval_every is not None and (self.eval_ref is None or self.eval_every < 1):
            raise CurateError("--eval-every needs --eval-ref and must be >= 1")
        if self.save_every is not None and self.save_every < 1:
            raise CurateError(f"--save-every must be >= 1, got {self.save_every}")
        if self.metric not in METRICS:
            raise CurateError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.tolerance >= 0:
            raise CurateError(f"--tolerance must be >= 0, got {self.tolerance}")
        if isinstance(self.ddof, bool) or self.ddof not in DDOFS:
            raise CurateError(f"--ddof must be 0 or 1, got {self.ddof!r}")
        if self.precision not in PRECISIONS:
            raise CurateError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


# ============================================================================================== data
@dataclass
class Prompt:
    id: str
    ids: list[int]
    """Chat-templated prompt tokens, generation header included."""
    answer: str | None
    row: dict[str, Any]
    """The row's other columns, passed to the reward as keyword arguments."""


def load_prompts(data: TrainData, tokenizer: Any, config: GRPOConfig, store: Any, reward_fn: Any):
    """The version behind ``data`` (or ``Rows``) and its prompts (``prompt``, else the turns before the last
    assistant turn)."""
    from curate.chat import prompt_ids
    from curate.records import prompt_of
    from curate.rewards import needs_answer

    version = training_data(data, store)
    if not {"prompt", "messages"} & set(version.columns):
        raise CurateError(f"{version.ref}: GRPO needs a 'prompt' (or 'messages') column")
    prompts, too_long = [], 0
    for i, row in enumerate(version.to_pylist()):
        messages = row.get("prompt") or prompt_of(row.get("messages") or [])
        if not messages:
            raise CurateError(f"{version.ref}: row {i}: field 'prompt' is empty")
        answer = row.get("answer")
        if answer is None and needs_answer(reward_fn):
            raise CurateError(f"{version.ref}: row {i}: field 'answer' is missing and --reward needs it")
        ids = prompt_ids(tokenizer, messages)
        if len(ids) > config.max_prompt_len:
            too_long += 1
            continue
        extras = {k: v for k, v in row.items() if k not in ("answer", "completion")}
        prompts.append(Prompt(str(row.get("id", i)), ids, None if answer is None else str(answer), extras))
    if not prompts:
        raise CurateError(f"{version.ref}: no prompt fits --max-prompt-len {config.max_prompt_len}")
    return version, prompts, {"prompts": len(prompts), "too_long": too_long}


def sequential_prompts(step: int, k: int, n_prompts: int, seed: int) -> list[int]:
    """Prompt indices of ``step`` in a seeded pass over the data, reshuffled every pass (a pure function of step).

    >>> sequential_prompts(0, 2, 3, seed=0) + sequential_prompts(1, 2, 3, seed=0)  # doctest: +SKIP
    """
    out = []
    for g in range(step * k, (step + 1) * k):
        epoch, i = divmod(g, n_prompts)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n_prompts)[i]))
    return out


# ============================================================================================== model
def load_policy(name: str, device: str):
    import torch

    from curate.models import load_causal_lm

    model, tokenizer = load_causal_lm(name, device=device, dtype=torch.float32, cache=False)
    # Eval mode throughout: no dropout, so the sampling-time log-probs equal the first update's exactly.
    model.eval()
    return model, tokenizer


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = set()
    for v in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        ids.update([v] if isinstance(v, int) else (v or []))
    return sorted(ids)


def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    config: GRPOConfig,
    *,
    n: int,
    temperature: float,
    seed: int,
    device: str,
) -> list[list[int]]:
    """``n`` completions per prompt (prompt-major), as token ids cut after the first end-of-turn token.

    ``temperature == 0`` decodes greedily; ``top_p``, ``max_new_tokens`` and ``precision`` come from ``config``.
    Seeded: the same (weights, prompts, seed) give the same tokens.
    """
    import torch
    from transformers import GenerationConfig

    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    rows = [p for p in prompts for _ in range(n)]
    width = max(len(p) for p in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, p in enumerate(rows):
        ids[r, width - len(p) :] = torch.tensor(p)
        attn[r, width - len(p) :] = 1
    # A fresh config: the checkpoint's own (top_k=50, repetition penalty ...) would make the sampled distribution
    # differ from the one the loss differentiates.
    sampling = {"do_sample": True, "temperature": temperature, "top_p": config.top_p, "top_k": 0}
    gen = GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos,
        num_beams=1,
        **(sampling if temperature else {"do_sample": False}),
    )
    with torch.random.fork_rng(devices=[device] if device.startswith("cuda") else []):
        torch.manual_seed(seed)
        with torch.inference_mode(), autocast(device, config.precision):
            new = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), generation_config=gen)
    new = new[:, width:].tolist()
    eos_set, out = set(eos), []
    for row in new:
        end = next((j for j, t in enumerate(row) if t in eos_set), None)
        out.append(row[: end + 1] if end is not None else row)
    return out


def score(reward_fn: Any, prompt: Prompt, text: str, ref: str) -> float:
    from curate.rewards import call_reward, reward_name

    return call_reward(
        reward_fn, reward_name(reward_fn), text, prompt.answer, prompt.row, f"{ref}: prompt {prompt.id!r}"
    )


# ============================================================================================== advantages
def select_rollouts(
    rewards: np.ndarray,
    *,
    downsample: int | None,
    drop_zero_variance: bool,
    metric: str = "acc",
    tolerance: float = ZERO_STD_TOL,
    ddof: int = DEFAULT_DDOF,
):
    """For one group's rewards: the kept indices and their advantages ((r - mean) / (std + 1e-4) over the kept, std
    with ``ddof``), or ``None`` when the group is dropped (its ``metric`` values agree within ``tolerance``).

    >>> idx, adv = select_rollouts(np.array([0.0, 1.0, 1.0, 1.0]), downsample=2, drop_zero_variance=True)
    >>> idx.tolist(), adv.round(3).tolist()
    ([0, 1], [-0.707, 0.707])
    """
    if drop_zero_variance and zero_variance(metric_values(rewards, metric, PASS_THRESHOLD), tolerance=tolerance):
        return None
    keep = max_variance_subset(rewards, downsample) if downsample else np.arange(len(rewards))
    return keep, group_advantages(rewards[keep], ddof)


def pass_rate_histogram(rewards: np.ndarray) -> list[int]:
    """Counts of per-prompt pass rates (mean reward clipped to [0, 1]) in 5 bins; rows of ``rewards`` are groups.

    >>> pass_rate_histogram(np.array([[0, 0], [1, 0], [1, 1]]))
    [1, 0, 1, 0, 1]
    """
    rates = np.clip(rewards, 0, 1).mean(axis=1)
    return np.bincount(np.searchsorted(HIST_EDGES, rates, side="right"), minlength=5).tolist()


# ============================================================================================== loss
def sequence_logprobs(model: Any, examples: list[Example], config: GRPOConfig, pad_id: int, device: str) -> list:
    """Per example, the log-probs of its completion tokens (no gradient)."""
    import torch

    out: list[Any] = [None] * len(examples)
    lengths = [len(e.input_ids) for e in examples]
    with torch.no_grad():
        for mb in micro_batches(range(len(examples)), lengths, config.micro_batch_size):
            with autocast(device, config.precision):
                batch = collate([examples[i] for i in mb], pad_id, device)
                lp = target_logprobs(model, batch, config.temperature)
            for i, part in zip(mb, lp.split([examples[i].n_target for i in mb]), strict=True):
                out[i] = part
    return out


def policy_loss(logp, old_logp, adv, *, clip_eps: float, ref_logp=None, beta: float = 0.0):
    """Per-token clipped surrogate (+ beta * k3 KL): returns (loss per token, kl per token or None, clipped mask).

    >>> import torch
    >>> lp = torch.zeros(2)
    >>> policy_loss(lp, lp, torch.tensor([1.0, -1.0]), clip_eps=0.2)[0].tolist()
    [-1.0, 1.0]
    """
    import torch

    ratio = torch.exp(logp - old_logp)
    loss = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    clipped = (ratio - 1).abs() > clip_eps
    kl = None
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        loss = loss + beta * kl
    return loss, kl, clipped


def policy_update(
    model: Any,
    ref_model: Any,
    opt: Any,
    examples: list[Example],
    config: GRPOConfig,
    *,
    pad_id: int,
    device: str,
    rng: np.random.Generator,
) -> dict[str, float]:
    """``ppo_epochs`` x ``minibatches`` optimizer steps on one step's rollouts; the advantage rides in ``weight``."""
    import torch

    multi = config.ppo_epochs * config.minibatches > 1
    old = sequence_logprobs(model, examples, config, pad_id, device) if multi else None
    ref = sequence_logprobs(ref_model, examples, config, pad_id, device) if ref_model is not None else None
    lengths = [len(e.input_ids) for e in examples]
    losses, kls, clipped, tokens = [], 0.0, 0, 0
    for _ in range(config.ppo_epochs):
        for mb in np.array_split(rng.permutation(len(examples)), min(config.minibatches, len(examples))):
            denom = sum(examples[i].n_target for i in mb)
            step_loss = 0.0
            for micro in micro_batches(mb.tolist(), lengths, config.micro_batch_size):
                batch = collate([examples[i] for i in micro], pad_id, device)
                with autocast(device, config.precision):
                    logp = target_logprobs(model, batch, config.temperature)
                old_lp = torch.cat([old[i] for i in micro]) if old else logp.detach()
                ref_lp = torch.cat([ref[i] for i in micro]) if ref else None
                per_token, kl, clip = policy_loss(
                    logp, old_lp, token_weights(batch), clip_eps=config.clip_eps, ref_logp=ref_lp, beta=config.beta
                )
                loss = per_token.sum() / denom
                loss.backward()
                step_loss += float(loss.detach())
                kls += float(kl.detach().sum()) if kl is not None else 0.0
                clipped += int(clip.sum())
                tokens += logp.numel()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad or float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(step_loss)
    return {
        "loss": float(np.mean(losses)),
        "kl": kls / tokens if ref is not None else None,
        "clip_frac": clipped / tokens,
        "updates": len(losses),
    }


# ============================================================================================== eval
def evaluate(
    model: Any, tokenizer: Any, prompts: list[Prompt], reward_fn: Any, config: GRPOConfig, device: str, ref: str
) -> float:
    """Mean reward of greedy completions over ``prompts``."""
    total = 0.0
    for s in range(0, len(prompts), 32):
        chunk = prompts[s : s + 32]
        comps = sample_completions(
            model, tokenizer, [p.ids for p in chunk], config, n=1, temperature=0.0, seed=0, device=device
        )
        for p, c in zip(chunk, comps, strict=True):
            total += score(reward_fn, p, tokenizer.decode(c, skip_special_tokens=True), ref)
    return total / len(prompts)


# ============================================================================================== loop
def grpo(data: TrainData, config: GRPOConfig | None = None, *, store: Any = None, **overrides: Any) -> TrainResult:
    """Train ``config.model`` with GRPO on the prompts of ``data``; see the module docstring for the objective.

    ``data`` is a store ref, a ``Version``, or rows (a pyarrow Table or a list of row dicts); rows are recorded in
    ``curate_train.json`` as ref ``rows`` with their content digest as the id.

    >>> import curate.train
    >>> r = curate.train.grpo("gsm8k@v1", model="smollm2-135m", steps=10, out="runs/g")  # doctest: +SKIP
    >>> r.metrics["reward_mean"]                                                       # doctest: +SKIP
    """
    import torch

    from curate.models import default_device, resolve
    from curate.outputs import check_out
    from curate.progress import progress
    from curate.rewards import get_reward, reward_name

    config = replace(config or GRPOConfig(), **overrides) if overrides else (config or GRPOConfig())
    out = check_out(config.out, store)  # before prepare_out makes the folder: never inside the store
    reward_fn = get_reward(config.reward)  # a bad --reward fails before any folder is made
    device = config.device or default_device()
    resume_from = prepare_out(out, config.resume)
    # Read (and refuse, if it is not ours) before any model loads: one line, nothing else done.
    state = load_state(resume_from) if resume_from is not None else None
    seed_everything(config.seed)

    # -- model and data
    model, tokenizer = load_policy(str(resume_from or config.model), device)
    identity = resolve(config.model).identity
    ref_model = None
    if config.beta > 0:
        ref_model = load_policy(config.model, device)[0] if resume_from else copy.deepcopy(model)
        ref_model.requires_grad_(False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids(model, tokenizer)[0]
    version, prompts, data_stats = load_prompts(data, tokenizer, config, store, reward_fn)
    eval_prompts = None
    if config.eval_ref is not None:
        eval_version, eval_prompts, _ = load_prompts(config.eval_ref, tokenizer, config, store, reward_fn)
    sampler = None
    if config.curriculum == "online":
        sampler = OnlineDifficultySampler(
            [p.id for p in prompts], n_per_step=config.prompts_per_step, seed=config.seed
        )
        index = {p.id: i for i, p in enumerate(prompts)}
        if len(index) != len(prompts):
            raise CurateError(f"{version.ref}: --curriculum online needs unique row ids")
    eval_ds = None if eval_prompts is None else {"ref": eval_version.ref, "id": eval_version.id}
    info = run_info(
        replace(config, reward=reward_name(config.reward)), version, identity, data=data_stats, eval_dataset=eval_ds
    )

    trained = [p for p in model.parameters() if p.requires_grad]
    fused = True if device.startswith("cuda") else None
    opt = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    step = 0
    if resume_from is not None:
        check_resume(resume_from, info, ("model", "n", "prompts_per_step", "seed", "curriculum"))
        step = restore_state(resume_from, state, opt)
        if sampler is not None:
            if not isinstance(state.get("sampler"), dict):
                raise CurateError(f"{resume_from}: trainer state has no curriculum sampler state")
            sampler.load_state_dict(state["sampler"])
    log = MetricsLog(out / "metrics.jsonl", step if resume_from is not None else None)

    def eval_now(at: int) -> float | None:
        if eval_prompts is None:
            return None
        value = evaluate(model, tokenizer, eval_prompts, reward_fn, config, device, eval_version.ref)
        log.write({"step": at, "eval_reward": value})
        return value

    def checkpoint(at: int) -> Path:
        state = {
            "step": at,
            "optimizer": opt.state_dict(),
            "rng": rng_state(),
            "sampler": sampler.state_dict() if sampler is not None else None,
        }
        return save_model(out / f"checkpoint-{at:06d}", model, tokenizer, {**info, "step": at}, state)

    # -- loop
    metrics: dict[str, Any] = {"prompts": len(prompts)}
    if step == 0 and (first := eval_now(0)) is not None:
        metrics["eval_reward_start"] = first
    last_ckpt = latest_checkpoint(out)
    with progress(f"grpo {version.ref}", config.steps - step) as advance:
        while step < config.steps:
            t0 = time.perf_counter()
            if sampler is not None:
                picked = [index[pid] for pid in sampler.sample(config.prompts_per_step)]
            else:
                picked = sequential_prompts(step, config.prompts_per_step, len(prompts), config.seed)
            batch = [prompts[i] for i in picked]

            # -- rollouts and rewards
            seed = config.seed * 1_000_003 + step
            comps = sample_completions(
                model,
                tokenizer,
                [p.ids for p in batch],
                config,
                n=config.n,
                temperature=config.temperature,
                seed=seed,
                device=device,
            )
            texts = tokenizer.batch_decode(comps, skip_special_tokens=True)
            scores = [score(reward_fn, batch[i // config.n], text, version.ref) for i, text in enumerate(texts)]
            rewards = np.array(scores).reshape(len(batch), config.n)
            t_gen = time.perf_counter() - t0
            if sampler is not None:
                for p, r in zip(batch, rewards, strict=True):
                    sampler.update(p.id, r.tolist())

            # -- selection and advantages
            examples = []
            for g, p in enumerate(batch):
                chosen = select_rollouts(
                    rewards[g],
                    downsample=config.downsample,
                    drop_zero_variance=config.drop_zero_variance,
                    metric=config.metric,
                    tolerance=config.tolerance,
                    ddof=config.ddof,
                )
                if chosen is None:
                    continue
                for j, adv in zip(*chosen, strict=True):
                    c = comps[g * config.n + int(j)]
                    examples.append(Example(p.ids + c, [IGNORE] * len(p.ids) + c, float(adv)))

            # -- update
            lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
            for group in opt.param_groups:
                group["lr"] = lr
            stats: dict[str, Any] = {"loss": None, "kl": None, "clip_frac": None, "updates": 0}
            if examples:
                rng = np.random.default_rng([config.seed, step])
                stats = policy_update(model, ref_model, opt, examples, config, pad_id=pad_id, device=device, rng=rng)
            step += 1
            record = {
                "step": step,
                "reward_mean": float(rewards.mean()),
                "reward_std": float(rewards.std()),
                "kept_fraction": len(examples) / rewards.size,
                "kept_rollouts": len(examples),
                "pass_rate_hist": pass_rate_histogram(rewards),
                **stats,
                "lr": lr,
                "completion_tokens": float(np.mean([len(c) for c in comps])),
                "gen_s": round(t_gen, 4),
                "step_s": round(time.perf_counter() - t0, 4),
            }
            log.write(record)
            advance(1)
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                eval_now(step)
            if config.save_every and (step % config.save_every == 0 or step == config.steps):
                last_ckpt = checkpoint(step)
            metrics.update(reward_mean=record["reward_mean"], kept_fraction=record["kept_fraction"])

    # -- save
    if (final := eval_now(config.steps)) is not None:
        metrics["eval_reward"] = final
    save_model(out, model, tokenizer, {**info, "step": config.steps, "metrics": metrics}, None)
    return TrainResult(out=out, steps=config.steps, metrics=metrics, checkpoint=last_ckpt)


__all__ = ["GRPOConfig", "grpo", "pass_rate_histogram", "policy_loss", "sample_completions", "select_rollouts"]
