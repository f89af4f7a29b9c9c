"""RL rollouts: sample ``n`` completions per prompt with a generator, score each with a reward function.

What it computes: for a prompts version (rows with a chat ``prompt`` and, for the built-in rewards, an
``answer``), a long-format rollouts version with one row per completion (``prompt_id``, ``sample`` 0..n-1,
``completion``, ``reward`` ...) plus each prompt's ``pass_rate``, ``reward_mean`` and ``reward_std`` over its ``n``
completions. This is the input of the rollout selectors (``--method variance``: DAPO dynamic sampling and PODS
max-variance down-sampling; ``--method difficulty``: SPEED-RL / online difficulty filtering / LILO), which all
estimate a prompt's pass rate p from ``n`` samples of the current policy (algorithms.md sections 3-4).

Departures from the papers: they roll out on-policy at every training step inside the trainer; here rollouts are
produced once, offline, and versioned, so selection is a staged curriculum from a fixed policy snapshot.

A prompt *passes* a sample when its reward is > 0.5: for binary rewards that is "correct", and for graded
rewards in the PODS style (1.0 correctness + small format bonuses) it still means "correct".

Resumable: every completion is cached (``RowCache`` kind ``rollouts``, keyed by the generator identity, the
sampling settings and ``n``; each row by prompt content and sample index) as soon as its batch is produced, so a
killed run resumes where it stopped. Rows with the same prompt share its completions. Rewards are recomputed
from the cached completions (cheap), so changing ``--reward`` regenerates nothing.

    curate rollout sample-math --n 8 --name math-rollouts --max-tokens 256 --reward math
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curate import options
from curate.engine import Engine, run_batches
from curate.errors import CurateError
from curate.generation import (
    AUTO,
    GENERATORS,
    Generator,
    Sampling,
    check_ray_generator,
    engine_options,
    generation_task,
    make_generator,
    resolve_backend,
)
from curate.models import DEFAULT_LM
from curate.rewards import call_reward, get_reward, needs_answer, reward_name, reward_source
from curate.store import Store, Version

#: a sample passes when its reward exceeds this (binary rewards: correct; graded PODS-style rewards: correct)
PASS_THRESHOLD = 0.5
#: settings that change how fast rollouts run, never what they contain; kept out of version ids
EXECUTION_ONLY = ("concurrency", "batch_size", "run")
#: the long-format columns, in order, one row per completion
_ROLLOUT_COLUMNS = (
    "id",
    "prompt_id",
    "sample",
    "prompt",
    "answer",
    "data_source",
    "completion",
    "reward",
    "completion_tokens",
    "prompt_tokens",
    "finish_reason",
)
_OWN_COLUMNS = (
    *_ROLLOUT_COLUMNS,
    "pass_rate",
    "reward_mean",
    "reward_std",
    "n_rollouts",
    "messages",
)


@dataclass
class RolloutConfig:
    """Settings of ``curate rollout``; each field is the flag of the same name (``max_tokens`` -> ``--max-tokens``)."""

    n: int = 8
    """Completions sampled per prompt."""
    model: str = DEFAULT_LM
    """Policy model: an alias, a local folder or a hub id (for ``--backend openai``: the server's model name)."""
    backend: str = AUTO
    """Generation backend: ``auto`` (``llamacpp`` on a CPU when llama-cpp-python is installed and the model is a
    GGUF file, as the embedded default is; else ``hf``), ``hf`` (in-process transformers), ``llamacpp``, ``vllm``
    or ``openai``. The version records the backend that ran."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy (then all n completions of a prompt are equal)."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]."""
    max_tokens: int = 256
    """Most new tokens per completion."""
    reward: str = "math"
    """Reward: a built-in (``math``, ``exact``, ``contains``) or a dotted path ``package.module:function``."""
    seed: int = 0
    """Sampling seed; each (prompt, sample index) derives its own seed from it."""
    base_url: str | None = None
    """OpenAI-compatible server URL, e.g. ``http://localhost:8000/v1`` (``--backend openai`` only)."""
    concurrency: int = 8
    """Requests in flight at most (``--backend openai``); does not change the version id."""
    batch_size: int = 16
    """Prompts per generation call and per cache shard; does not change the version id."""
    run: Engine = dataclasses.field(default_factory=Engine)
    """Where the work runs (``curate.engine.Engine``: ``--engine``, ``--ray-address``, ``--num-workers``,
    ``--gpus-per-worker``); never part of the version id."""

    def __post_init__(self) -> None:
        for flag, value, low in (
            ("--n", self.n, 1),
            ("--max-tokens", self.max_tokens, 1),
            ("--concurrency", self.concurrency, 1),
            ("--batch-size", self.batch_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise CurateError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.backend != AUTO and self.backend not in GENERATORS:
            raise CurateError(f"--backend {self.backend!r}: unknown backend (available: {', '.join(GENERATORS)})")
        if not (isinstance(self.temperature, int | float) and self.temperature >= 0):
            raise CurateError(f"--temperature must be >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise CurateError(f"--top-p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise CurateError(f"--seed must be an integer, got {self.seed!r}")
        if self.base_url is not None and self.backend != "openai":
            raise CurateError(f"--base-url applies to --backend openai only (got --backend {self.backend})")
        get_reward(self.reward)  # fails here, naming --reward, before any model loads
        self.runner()
        # Not a field: the recipe records the concrete backend, so `auto` on a machine without llama.cpp keeps
        # the version ids that `hf` had.
        self._backend = resolve_backend(self.backend, self.model, self.runner())

    def backend_name(self) -> str:
        """The backend that runs (``auto`` resolved, see ``curate.generation.resolve_backend``)."""
        return self._backend

    def runner(self) -> Engine:
        """Where generation runs (``curate.engine``)."""
        return self.run

    def generator_options(self) -> dict[str, Any]:
        backend = self.backend_name()
        opts: dict[str, Any] = {"batch_size": self.batch_size, **engine_options(backend, self.runner())}
        if backend == "openai":
            opts.update(base_url=self.base_url, concurrency=self.concurrency)
        return opts

    def sampling(self) -> Sampling:
        return Sampling(
            temperature=float(self.temperature),
            top_p=float(self.top_p),
            max_tokens=int(self.max_tokens),
            seed=int(self.seed),
        )

    def make_generator(self) -> Generator:
        """The generator these settings describe."""
        return make_generator(self.backend_name(), self.model, **self.generator_options())


def _check_prompts(version: Version, rows: list[dict[str, Any]], reward: str, wants_answer: bool) -> None:
    if not rows:
        raise CurateError(f"{version.ref}: no rows to roll out")
    cols = set(rows[0])
    if "prompt" not in cols:
        raise CurateError(
            f"{version.ref}: field 'prompt': missing (rollouts need chat prompts; this version has "
            f"{', '.join(sorted(cols))})"
        )
    if "id" not in cols:
        raise CurateError(f"{version.ref}: field 'id': missing")
    if {"prompt_id", "completion"} <= cols:
        raise CurateError(f"{version.ref}: is already a rollouts version (it has prompt_id and completion)")
    for row in rows:
        p = row.get("prompt")
        if not p or not all(isinstance(m, dict) and m.get("role") and m.get("content") is not None for m in p):
            raise CurateError(
                f"{version.ref}: row {row.get('id')!r}: field 'prompt': expected a non-empty list "
                "of {role, content} messages"
            )
        if wants_answer and (row.get("answer") is None or not str(row["answer"]).strip()):
            raise CurateError(
                f"{version.ref}: row {row.get('id')!r}: field 'answer': missing, and reward {reward!r} needs one"
            )


def _prompt_key(prompt: list[dict[str, Any]]) -> str:
    from curate.cache import content_key

    return content_key([{"role": m["role"], "content": m["content"]} for m in prompt])


def _passthrough(table: pa.Table) -> list[str]:
    """The prompt row's other scalar columns (``level``, ``category`` ...), carried onto every rollout row."""
    out = []
    for field in table.schema:
        t = field.type
        nested = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t) or pa.types.is_map(t)
        if field.name not in _OWN_COLUMNS and not nested:
            out.append(field.name)
    return out


def _completion_row(key: str, c: Any) -> dict[str, Any]:
    return {
        "key": key,
        "completion": c.text,
        "completion_tokens": int(c.tokens),
        "prompt_tokens": int(c.prompt_tokens),
        "finish_reason": c.finish_reason,
    }


def generate_rollouts(
    version: Version, config: RolloutConfig, *, store: Store, generator: Generator | None = None
) -> pa.Table:
    """One row per completion: ``n`` samples for every prompt row of ``version``, each with its reward.

    Completions come from the rollout cache where present; only missing ones are generated (and cached batch by
    batch). ``generator`` overrides the one ``config`` describes (tests inject counting or failing ones); with
    ``config.engine == "ray"`` each worker builds its own from ``config`` (an injected one must be that plain class).

    >>> v = curate.sample("sample-math", n=4)                                                   # doctest: +SKIP
    >>> t = generate_rollouts(v, RolloutConfig(n=2, max_tokens=64), store=v.store)              # doctest: +SKIP
    >>> t.num_rows, t.column_names[:4]                                                          # doctest: +SKIP
    (8, ['id', 'prompt_id', 'sample', 'prompt'])
    """
    from curate.cache import RowCache, settings_key
    from curate.progress import progress

    table = version.to_arrow()
    rows = table.to_pylist()
    fn = get_reward(config.reward)
    rname = reward_name(config.reward)
    _check_prompts(version, rows, rname, needs_answer(fn))

    n, sampling = int(config.n), config.sampling()
    injected = generator is not None
    generator = generator or config.make_generator()
    settings = {"generator": generator.identity(), "sampling": sampling.as_dict(), "n": n}
    cache = RowCache(store, "rollouts", settings_key(settings), settings)

    pkeys = [_prompt_key(r["prompt"]) for r in rows]
    unique: dict[str, list[dict[str, str]]] = {}
    for k, r in zip(pkeys, rows, strict=True):
        unique.setdefault(k, [{"role": m["role"], "content": m["content"]} for m in r["prompt"]])
    wanted = [f"{k}-{j}" for k in unique for j in range(n)]
    cached = cache.load(wanted)
    pending = [k for k in unique if any(f"{k}-{j}" not in cached for j in range(n))]
    # Similar lengths share a batch (less padding); content breaks ties so the batches are reproducible.
    pending.sort(key=lambda k: (-len(json.dumps(unique[k])), k))

    bs = int(config.batch_size)
    runner = config.runner()
    if injected:
        check_ray_generator(runner, generator, config.backend_name(), config.model, config.generator_options())
    spec = generation_task(config.backend_name(), config.model, config.generator_options(), n=n, sampling=sampling)
    chunks = [pending[start : start + bs] for start in range(0, len(pending), bs)]
    packed = [(chunk, [unique[k] for k in chunk]) for chunk in chunks]
    shard: list[dict[str, Any]] = []

    def flush() -> None:
        rows = shard[:]
        shard.clear()  # first: a write that fails is not retried by the flush in ``finally``
        if rows:
            cache.write(rows)
            cached.update({r["key"]: r for r in rows})

    def generate(prompts: list[list[dict[str, str]]]) -> list[Any]:
        outs = generator.generate(prompts, n=n, sampling=sampling)
        if len(outs) != len(prompts) or any(len(o) != n for o in outs):
            raise CurateError(f"backend {generator.backend}: returned the wrong number of completions")
        return outs

    with progress(f"rollouts ({generator.backend})", len(pending) * n) as advance:
        try:
            # Ray returns prompts in any order; a shard holds a batch's worth of completions either way.
            for k, completions in run_batches(
                packed, spec=spec, engine=runner, fn=None if runner.is_ray else generate
            ):
                if len(completions) != n:
                    raise CurateError(f"backend {generator.backend}: returned the wrong number of completions")
                shard.extend(_completion_row(f"{k}-{j}", c) for j, c in enumerate(completions))
                advance(n)
                if len(shard) >= bs * n:
                    flush()
        finally:
            flush()  # whatever finished survives an interrupted run

    extra = _passthrough(table)
    out: dict[str, list[Any]] = {c: [] for c in (*_ROLLOUT_COLUMNS, *extra)}
    for row, k in zip(rows, pkeys, strict=True):
        pid = str(row["id"])
        kwargs = {c: v for c, v in row.items() if c not in ("answer", "completion")}
        for j in range(n):
            c = cached[f"{k}-{j}"]
            where = f"{version.ref}: prompt id {pid!r} sample {j}"
            reward = call_reward(fn, rname, c["completion"], row.get("answer"), kwargs, where)
            out["id"].append(f"{pid}-{j}")
            out["prompt_id"].append(pid)
            out["sample"].append(j)
            out["prompt"].append(row["prompt"])
            out["answer"].append(None if row.get("answer") is None else str(row["answer"]))
            out["data_source"].append(row.get("data_source"))
            out["completion"].append(c["completion"])
            out["reward"].append(reward)
            out["completion_tokens"].append(c["completion_tokens"])
            out["prompt_tokens"].append(c["prompt_tokens"])
            out["finish_reason"].append(c["finish_reason"])
            for col in extra:
                out[col].append(row.get(col))
    types = {
        "id": pa.string(),
        "prompt_id": pa.string(),
        "sample": pa.int64(),
        "prompt": table.schema.field("prompt").type,
        "answer": pa.string(),
        "data_source": pa.string(),
        "completion": pa.string(),
        "reward": pa.float64(),
        "completion_tokens": pa.int64(),
        "prompt_tokens": pa.int64(),
        "finish_reason": pa.string(),
    }
    types.update({col: table.schema.field(col).type for col in extra})
    return pa.table({c: pa.array(v, type=types[c]) for c, v in out.items()})


def prompt_stats(rollouts: pa.Table) -> pa.Table:
    """Per prompt (in order of first appearance): ``n_rollouts``, ``pass_rate`` (share of rewards > 0.5),
    ``reward_mean`` and ``reward_std`` (population std, ddof=0).

    >>> t = pa.table({"prompt_id": ["a", "a", "b"], "reward": [1.0, 0.0, 1.0]})
    >>> prompt_stats(t).to_pylist()[0]
    {'prompt_id': 'a', 'n_rollouts': 2, 'pass_rate': 0.5, 'reward_mean': 0.5, 'reward_std': 0.5}
    """
    pids = [str(p) for p in rollouts.column("prompt_id").to_pylist()]
    rewards = np.asarray(rollouts.column("reward").to_pylist(), dtype=np.float64)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pids):
        groups.setdefault(p, []).append(i)
    cols: dict[str, list[Any]] = {
        "prompt_id": [],
        "n_rollouts": [],
        "pass_rate": [],
        "reward_mean": [],
        "reward_std": [],
    }
    for p, idx in groups.items():
        r = rewards[idx]
        cols["prompt_id"].append(p)
        cols["n_rollouts"].append(len(idx))
        cols["pass_rate"].append(float(np.mean(r > PASS_THRESHOLD)))
        cols["reward_mean"].append(float(np.mean(r)))
        cols["reward_std"].append(float(np.std(r)))
    return pa.table(
        {
            "prompt_id": pa.array(cols["prompt_id"], pa.string()),
            "n_rollouts": pa.array(cols["n_rollouts"], pa.int64()),
            **{c: pa.array(cols[c], pa.float64()) for c in ("pass_rate", "reward_mean", "reward_std")},
        }
    )


def _summary(table: pa.Table, stats: pa.Table, n: int) -> dict[str, Any]:
    rates = np.asarray(stats.column("pass_rate").to_pylist(), dtype=np.float64)
    edges = np.linspace(0.0, 1.0, 11)
    counts, _ = np.histogram(rates, bins=edges)
    reasons: dict[str, int] = {}
    for r in table.column("finish_reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "rows": table.num_rows,
        "prompts": stats.num_rows,
        "n": n,
        "mean_pass_rate": round(float(rates.mean()), 6) if len(rates) else None,
        "mean_reward": round(float(np.mean(table.column("reward").to_pylist())), 6) if table.num_rows else None,
        "pass_rate_histogram": {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()},
        "all_pass": int((rates == 1.0).sum()),
        "all_fail": int((rates == 0.0).sum()),
        "finish_reasons": reasons,
        "completion_tokens_mean": round(float(np.mean(table.column("completion_tokens").to_pylist())), 2)
        if table.num_rows
        else None,
    }


def rollout(
    ref: str | Version,
    config: RolloutConfig | None = None,
    *,
    name: str | None = None,
    store: Store | str | None = None,
    generator: Generator | None = None,
    **overrides: Any,
) -> Version:
    """Roll out ``config.n`` completions per prompt of ``ref``, score them, commit a long-format version.

    Each row also carries its prompt's ``pass_rate``, ``reward_mean`` and ``reward_std``; the manifest ``stats``
    hold the mean pass rate and a 10-bin histogram of pass rates. A re-run of the same recipe is free.

    >>> v = curate.rollout("sample-math", n=8, max_tokens=128, name="math-rollouts")        # doctest: +SKIP
    >>> v.to_polars().group_by("prompt_id").agg(pl.col("reward").mean())                   # doctest: +SKIP
    """
    from curate.store import get_store

    s = get_store(store)
    parent = s.load(ref)
    config = config or RolloutConfig()
    if overrides:
        known = {p.name for p in options.params_of(RolloutConfig)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise CurateError(f"rollout: unknown option {bad[0]!r} (options: {', '.join(sorted(known))})")
        config = options.build(RolloutConfig, overrides, base=config)
    name = name or f"{parent.name}-rollouts"
    generator = generator or config.make_generator()
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k not in EXECUTION_ONLY}
    recipe["backend"] = config.backend_name()
    op = {
        "name": "rollout",
        "config": recipe,
        "generator": generator.identity(),
        "reward_source": reward_source(config.reward),
    }

    def compute() -> dict[str, Any]:
        t0 = time.perf_counter()
        table = generate_rollouts(parent, config, store=s, generator=generator)
        gen_s = time.perf_counter() - t0
        stats = prompt_stats(table)
        by_pid = {p: i for i, p in enumerate(stats.column("prompt_id").to_pylist())}
        idx = pa.array([by_pid[p] for p in table.column("prompt_id").to_pylist()], pa.int64())
        for col in ("pass_rate", "reward_mean", "reward_std"):
            table = table.append_column(col, stats.column(col).take(idx))
        return {"table": table, "stats": _summary(table, stats, config.n), "timings": {"rollout_s": round(gen_s, 4)}}

    return s.materialise(name, [parent], op, compute)
