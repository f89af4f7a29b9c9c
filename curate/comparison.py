"""``curate compare``: did a selection help? Each arm is selected from one pool at one budget, fine-tuned with
identical settings once per seed, and scored on held-out rows; controls make the answer mean something.

What it computes. For every arm and seed: the arm's selection of POOL, an SFT run on it (``curate.train.sft``, the
seed sets data order and initialisation of anything random), and the held-out token-mean NLL of the assistant
tokens of HELDOUT under the trained model (summed NLL over all held-out assistant tokens / their number). Arms:

- a selector method (``fisher``, ``token-clean``, ``dedup`` ...): selected once (deterministic), trained per seed;
- ``random``: a uniform random selection of the same budget, drawn anew per seed (row-matched control);
- ``random-tokens``: per selector arm A, random rows whose trained tokens match A's (token-matched control; the arm
  is reported as ``random-tokens:A``);
- ``longest``: the rows with the most trained tokens (``--method length``);
- ``full``: the whole pool; ``base``: no training (the model as it is).

Per arm, the summary holds the mean over seeds and a 95% percentile-bootstrap interval over held-out rows and
seeds, and the paired difference to ``random`` with its interval (``curate.stats``): lower NLL is better, so an
arm beats random when the difference interval lies below 0. Every run is cached in the store (selection versions,
per-run metrics keyed by selection id, training settings, seed and held-out version), so a re-run trains
nothing, a killed compare resumes at the run it was in, and adding a seed or an arm computes only that. Trained
models go to ``<store>/cache/compare-runs/`` and are removed after scoring unless ``--keep-models``.

With ``--reward R`` (rows with an ``answer``), accuracy is scored too: one greedy completion per held-out prompt
(``--max-new-tokens``), correct when the reward is >= 0.5; it gets its own intervals and paired difference (higher
is better), and is cached apart from the NLL, so asking for it later trains only runs whose model was removed.

RL: ``--trainer grpo --reward R`` compares prompt selections (e.g. ``difficulty`` against ``random`` prompts): every
run is the same number of GRPO steps (``--steps``, ``--group`` completions per prompt), and the metric is the mean
reward of one greedy completion per held-out prompt (``heldout_reward``, higher is better).

Each run's wall times are kept (``select_s`` from its selection's manifest, ``train_s``, ``score_s``), and
``curate report`` on a compare version draws each arm's metric with its interval and the metric against trained
tokens. ``--engine ray --num-workers N`` trains and scores the runs on N Ray workers at once (one run per worker;
the selections are made on the driver first); the numbers, the version id and the cache are the local engine's.
The version's parents are the pool and the held-out set; each row names its selection by ref.

    curate compare gsm8k-pool --arms fisher,random,random-tokens,longest --budget 32 --seeds 3 \\
        --eval gsm8k-heldout --model smollm2-135m --name cmp-gsm8k
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa

from curate import options
from curate.cache import RowCache, settings_key
from curate.engine import Engine, TaskSpec, run_batches
from curate.errors import CurateError
from curate.progress import progress
from curate.stats import bootstrap_interval, paired_difference
from curate.store import Store, Version, get_store, validate_name

#: arms that are controls, not selector methods
CONTROLS = ("random", "random-tokens", "longest", "full", "base")
#: the selector each control runs (the others train on the pool or not at all)
_CONTROL_METHOD = {"random": "random", "random-tokens": "random", "longest": "length"}
METRICS_FORMAT = 1
#: trainer config fields that decide where and how often a run writes, not what it learns
_NOT_RESULTS = ("out", "resume", "device", "save_every", "eval_every", "eval_ref")


@dataclass
class CompareConfig:
    """Settings of ``curate compare``; each field is the flag of the same name (``eval_ref`` is ``--eval``)."""

    eval_ref: str = ""
    """Held-out version (a ref) scored after each run: token-mean NLL of its assistant tokens."""
    arms: tuple[str, ...] = ("random",)
    """Arms: selector methods and controls (random, random-tokens, longest, full, base), comma-separated."""
    budget: int | None = None
    """Rows each arm selects (selectors that take a row budget); 32 unless --budget-tokens is given."""
    budget_tokens: int | None = None
    """Trained tokens each arm selects instead of rows (selectors that take a token budget)."""
    seeds: int = 3
    """Training runs per arm (seeds 0..seeds-1); random draws a new selection per seed."""
    model: str = "smollm2-135m"
    """The model every arm fine-tunes (and that counts tokens and scores features)."""
    epochs: int = 2
    """SFT epochs of every run."""
    max_steps: int | None = None
    """Cap on optimizer steps of every run (none: the epochs decide)."""
    lr: float = 5e-5
    """Learning rate of every run."""
    batch_size: int = 4
    """Rows per optimizer step of every run."""
    max_len: int = 512
    """Tokens per training row at most."""
    reward: str | None = None
    """Score greedy completions of the held-out prompts: accuracy (a reward >= 0.5 is correct) after SFT, the mean
    reward after GRPO (and GRPO's training reward)."""
    max_new_tokens: int = 256
    """Most new tokens per greedy held-out completion (with --reward), and per GRPO completion."""
    trainer: str = "sft"
    """Trainer of every run: sft (held-out NLL, accuracy with --reward) or grpo (held-out mean reward; --reward)."""
    steps: int = 20
    """GRPO steps of every run (--trainer grpo; SFT runs use --epochs / --max-steps)."""
    group: int = 4
    """Completions per prompt in a GRPO group (--trainer grpo)."""
    arm_options: tuple[str, ...] = ()
    """Selector options per arm as ARM.KEY=VALUE (e.g. fisher.lam=2), repeatable: ``--set fisher.lam=2``."""
    keep_models: bool = False
    """Keep each run's trained model under <store>/cache/compare-runs (default: removed after scoring)."""
    run: Engine = dataclasses.field(default_factory=Engine)
    """Where the runs train and score (``curate.engine.Engine``: ``--engine ray --num-workers N`` runs N (arm,
    seed) runs at once, one per worker); the selections are made here first. Does not change any result or id."""

    def __post_init__(self) -> None:
        if not self.eval_ref:
            raise CurateError("compare: --eval HELDOUT is required (the version each run is scored on)")
        if not self.arms:
            raise CurateError("compare: --arms needs at least one arm")
        if len(set(self.arms)) != len(self.arms):
            raise CurateError(f"compare: --arms lists an arm twice: {', '.join(self.arms)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise CurateError(f"compare: --seeds must be an integer >= 1, got {self.seeds!r}")
        if self.reward is not None:
            from curate.rewards import get_reward

            get_reward(self.reward)  # an unknown reward fails here, before any selection or training
        if self.rl and self.reward is None:
            raise CurateError(f"compare: --trainer {self.trainer} scores held-out reward: give --reward")
        if self.budget is not None and self.budget_tokens is not None:
            raise CurateError("compare: give one of --budget and --budget-tokens, not both")
        if self.budget is None and self.budget_tokens is None:
            self.budget = 32
        self.arm_params()

    def arm_params(self) -> dict[str, dict[str, Any]]:
        """``--set ARM.KEY=VALUE`` items as ``{arm: {key: value}}``, typed as the arm's selector takes them (the key
        spelled as the option or its flag: ``ref_lr`` or ``ref-lr``); an arm not in --arms, or one that selects
        nothing (``full``, ``base``), is refused, and so is an option its selector does not have."""
        from curate.selectors import get_selector

        argv: dict[str, list[str]] = {}
        for item in self.arm_options:
            key, sep, raw = item.partition("=")
            arm, dot, field = key.partition(".")
            if not sep or not dot or not field:
                raise CurateError(f"compare: --set {item!r}: expected ARM.KEY=VALUE (e.g. fisher.lam=2)")
            if arm not in self.arms:
                raise CurateError(f"compare: --set {item!r}: {arm!r} is not one of --arms ({', '.join(self.arms)})")
            if arm in ("full", "base"):
                raise CurateError(f"compare: --set {item!r}: the {arm} arm selects nothing, so it has no options")
            argv.setdefault(arm, []).append(f"--{field.replace('_', '-')}={raw}")
        return {
            arm: options.parse_flags(flags, get_selector(_CONTROL_METHOD.get(arm, arm)), what=f"compare --set {arm}")
            for arm, flags in argv.items()
        }

    @property
    def trainer_entry(self) -> Any:
        from curate.train import TRAINERS

        if self.trainer not in TRAINERS:
            raise CurateError(f"compare: unknown --trainer {self.trainer!r} (available: {', '.join(TRAINERS)})")
        return TRAINERS[self.trainer]

    @property
    def rl(self) -> bool:
        """Whether the runs are RL (scored by held-out reward, not NLL)."""
        return self.trainer_entry.rl

    def train_settings(self, seed: int) -> dict[str, Any]:
        """The trainer config of one run (``out`` aside): the same for every arm."""
        if self.rl:
            keys = {"model": "model", "reward": "reward", "n": "group", "steps": "steps", "lr": "lr"}
            rl = {k: getattr(self, v) for k, v in keys.items()}
            return {**rl, "prompts_per_step": self.batch_size, "max_new_tokens": self.max_new_tokens, "seed": seed}
        keys = ("model", "epochs", "max_steps", "lr", "batch_size", "max_len")
        return {**{k: getattr(self, k) for k in keys}, "seed": seed}


@dataclass
class Run:
    """One (arm, seed): what it trained on and its per-held-out-row NLL sums and token counts."""

    arm: str
    seed: int
    selection: Version | None
    trained_tokens: int
    sums: np.ndarray | None  # per held-out row: summed NLL of its assistant tokens (SFT runs)
    counts: np.ndarray | None  # ... and their number
    rewards: np.ndarray | None = None  # per held-out row: the reward of its greedy completion (with --reward)
    select_s: float | None = None  # wall seconds: making the selection (from its manifest), training, scoring;
    train_s: float | None = None  # None where not recorded (a cached metric from before times were kept, a run
    score_s: float | None = None  # whose training a killed compare finished)

    @property
    def heldout_loss(self) -> float | None:
        return None if self.sums is None else float(self.sums.sum() / self.counts.sum())

    @property
    def correct(self) -> np.ndarray | None:
        return None if self.rewards is None else (self.rewards >= 0.5).astype(float)

    @property
    def accuracy(self) -> float | None:
        return None if self.rewards is None else float(self.correct.mean())

    @property
    def heldout_reward(self) -> float | None:
        return None if self.rewards is None else float(self.rewards.mean())


def _budget(cls: type, config: CompareConfig, pool: Version) -> dict[str, Any]:
    """The budget keywords a selector takes: a row or a token budget, whichever it accepts. A selector that takes
    only a token budget (``token-clean``) gets, under a row budget B, the tokens B rows of the pool hold on average:
    round(B * pool trained tokens / pool rows)."""
    names = {p.name for p in options.params_of(cls)}
    if config.budget_tokens is not None:
        if "budget_tokens" not in names:
            raise CurateError(f"compare: --method {cls.name} takes no --budget-tokens (options: {', '.join(names)})")
        return {"budget_tokens": config.budget_tokens}
    if "budget" in names:
        return {"budget": config.budget}
    if "budget_tokens" in names and len(pool):
        return {"budget_tokens": round(config.budget * _trained_tokens(pool, config.model) / len(pool))}
    return {}


def _trained_tokens(version: Version, model: str) -> int:
    """Tokens SFT trains on: the labels that are not -100 when the version carries ``labels`` (a token selection),
    else the assistant tokens of ``messages`` under ``model``'s chat template."""
    if "labels" in version.columns:
        labels = version.to_arrow().column("labels").combine_chunks()
        flat = labels.flatten().to_numpy(zero_copy_only=False)
        return int((flat != -100).sum())
    from curate.scoring import response_token_counts

    return int(response_token_counts(version, model).sum())


def _heldout_masks(heldout: Version, model: str) -> list[np.ndarray]:
    """Per held-out row, the mask of its assistant tokens in the ids ``token_losses`` scores."""
    from curate.chat import assistant_token_mask
    from curate.models import load_tokenizer

    tok = load_tokenizer(model)
    return [np.asarray(assistant_token_mask(tok, r["messages"])[1], bool) for r in heldout.to_pylist()]


def _score(heldout: Version, model: str, masks: list[np.ndarray], store: Store) -> tuple[np.ndarray, np.ndarray]:
    from curate.scoring import token_losses

    losses = token_losses(heldout, model=model, store=store, keep_loaded=False)
    sums = np.array([float(loss[m[: len(loss)]].sum()) for loss, m in zip(losses, masks, strict=True)])
    counts = np.array([int(m[: len(loss)].sum()) for loss, m in zip(losses, masks, strict=True)])
    return sums, counts


def compare(
    ref: str | Version,
    config: CompareConfig | None = None,
    *,
    name: str,
    store: Store | str | None = None,
    services: dict[str, Any] | None = None,
    **kw: Any,
) -> Version:
    """Run every arm of ``config`` on pool ``ref`` and commit one row per (arm, seed) as version ``name``.

    >>> v = curate.ops.run("compare", "pool", eval_ref="heldout", arms=("fisher", "random"), budget=16, seeds=3,
    ...                    name="cmp")                                                      # doctest: +SKIP
    >>> v.manifest["stats"]["summary"]                                                      # doctest: +SKIP
    """
    config = options.build(CompareConfig, kw, base=config) if kw else config
    if config is None:
        raise CurateError("compare: --eval HELDOUT is required (the version each run is scored on)")
    s = get_store(store)
    validate_name(name)
    pool, heldout = s.load(ref), s.load(config.eval_ref)
    if not config.rl and "messages" not in heldout.columns:
        raise CurateError(f"{heldout.ref}: compare scores assistant tokens of 'messages'; the version has none")
    if config.reward is not None and "answer" not in heldout.columns:
        raise CurateError(f"{heldout.ref}: --reward scores completions against 'answer'; the version has none")
    services = services or {}  # what a selector may need from the operations layer (token-clean: a trainer)
    per_arm = config.arm_params()
    selectors = [a for a in config.arms if a not in CONTROLS]
    plan: list[tuple[str, int, str | None, dict[str, Any]]] = []  # (arm, seed, method or None, params)
    for arm in config.arms:
        for seed in range(config.seeds):
            if arm == "random-tokens":
                plan += [(f"random-tokens:{a}", seed, "random", {"seed": seed}) for a in selectors]
            elif arm in _CONTROL_METHOD:
                extra = {"seed": seed} if arm == "random" else {}
                plan.append((arm, seed, _CONTROL_METHOD[arm], {**extra, **per_arm.get(arm, {})}))
            elif arm in ("full", "base"):
                plan.append((arm, seed, None, {}))
            else:
                plan.append((arm, seed, arm, dict(per_arm.get(arm, {}))))
    # A token-matched control needs its arm's selection first.
    plan.sort(key=lambda step: step[0].startswith("random-tokens:"))
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("keep_models", "run")}
    op = {"name": "compare", "config": recipe}

    def compute() -> dict[str, Any]:
        from curate.models import resolve
        from curate.selectors import get_selector, run_selector

        base_identity = resolve(config.model).identity
        masks = [] if config.rl else _heldout_masks(heldout, config.model)
        metrics = RowCache(s, "compare-metrics", settings_key({"format": METRICS_FORMAT, "heldout": heldout.id}))
        t0 = time.perf_counter()
        # 1. the selections, here and in order (a token-matched control needs its arm's selection first)
        selected: dict[str, Version] = {}
        steps: list[tuple[str, int, Version | None]] = []
        for arm, seed, method, params in plan:
            selection: Version | None
            if method is None:
                selection = pool if arm == "full" else None
            else:
                if arm.startswith("random-tokens:"):
                    target = selected[arm.split(":", 1)[1]]
                    params = {**params, "budget_tokens": _trained_tokens(target, config.model)}
                else:
                    params = {**_budget(get_selector(method), config, pool), **params}
                # a selector that reads a model (token-clean: the base it scores and fine-tunes a reference
                # from) reads the compared one unless told otherwise
                cls = get_selector(method)
                defaults = {p.name: p.default for p in options.params_of(cls)}
                for key in ("model", "base"):
                    gate = cls.only_with.get(key)  # an option the selector reads only in some configurations
                    if key in defaults and (gate is None or gate[1](SimpleNamespace(**{**defaults, **params}))):
                        params.setdefault(key, config.model)
                label = arm.replace(":", "-")
                suffix = f"-s{seed}" if "seed" in params else ""
                selection = run_selector(
                    pool, method=method, name=f"{name}-{label}{suffix}", store=s, services=services, **params
                )
                selected.setdefault(arm, selection)
            steps.append((arm, seed, selection))
        # 2. the runs whose metrics are not cached: trained and scored, each metric cached as it arrives
        keys = [_run_keys(config, sel, seed, base_identity) for _, seed, sel in steps]
        cached = metrics.load({k for pair in keys for k in pair})
        jobs: dict[str, dict[str, Any]] = {}
        for (_, seed, sel), (key, reward_key) in zip(steps, keys, strict=True):
            need_nll = not config.rl and key not in cached
            need_reward = config.reward is not None and reward_key not in cached
            if (need_nll or need_reward) and key not in jobs:
                jobs[key] = {
                    "store": str(s.root),
                    "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "run"},
                    "selection": None if sel is None else sel.ref,
                    "heldout": heldout.ref,
                    "seed": seed,
                    "masks": masks,
                    "key": key,
                    "reward_key": reward_key,
                    "nll": need_nll,
                    "reward": need_reward,
                }
        if jobs:
            spec = TaskSpec(_runs_batch, config.model)
            with progress(f"compare: {len(jobs)} of {len(steps)} runs to train and score", len(jobs)) as advance:
                batches = [([k], [job]) for k, job in jobs.items()]  # one run per batch: a worker each
                for _, (nll, scored) in run_batches(batches, spec=spec, engine=config.run):
                    for row in (nll, scored):  # one shard each: the two rows have different columns
                        if row is not None:
                            metrics.write([row])
                            cached[row["key"]] = row
                    advance()
        runs = [
            _make_run(arm, seed, sel, cached, pair, config) for (arm, seed, sel), pair in zip(steps, keys, strict=True)
        ]
        # The selections are named by ref in each row; the version's parents are the pool and the held-out set,
        # which (with the config) determine every selection, so they are what the id hashes.
        table, summary = _tables(runs, config)
        timings = {"compare_s": round(time.perf_counter() - t0, 3)}
        return {"table": table, "stats": {"summary": summary}, "timings": timings}

    return s.materialise(name, [pool, heldout], op, compute)


def _run_keys(config: CompareConfig, selection: Version | None, seed: int, base_identity: str) -> tuple[str, str]:
    """The cache keys of one run's NLL and of its reward: the selection, the training settings with the seed (the
    base model's identity for ``base``), the trainer for RL runs; the reward key adds the reward settings."""
    settings = config.train_settings(seed) if selection is not None else {"base": base_identity}
    what: dict[str, Any] = {"selection": selection.id if selection is not None else None, "train": settings}
    if config.rl and selection is not None:
        # the trainer's whole config, defaults included: a changed default (GRPO's ddof) retrains, not reuses
        full = dataclasses.asdict(config.trainer_entry.config(**settings, out=""))
        what["trainer"] = config.trainer
        what["train"] = {k: v for k, v in full.items() if k not in _NOT_RESULTS}
    elif config.rl:
        what["trainer"] = config.trainer  # SFT keys stay as they were
    key = settings_key(what)
    return key, settings_key({"run": key, "reward": config.reward, "max_new_tokens": config.max_new_tokens})


def _runs_batch(state: dict[str, Any], spec: TaskSpec, jobs: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """The engine's batch function: each job (one run) trained and scored; returns its (NLL row, reward row), None
    for a metric that was cached. Runs in this process or on a Ray worker alike."""
    return [_train_and_score(get_store(job["store"]), CompareConfig(**job["config"]), job) for job in jobs]


def _train_and_score(s: Store, config: CompareConfig, job: dict[str, Any]) -> tuple[Any, Any]:
    """One run: the model trained on the selection (or the base model), its held-out metrics with their wall
    times; the model is removed afterwards unless --keep-models."""
    from curate.outputs import writing_store_cache
    from curate.train.data import CONFIG_FILE

    selection = s.load(job["selection"]) if job["selection"] is not None else None
    heldout = s.load(job["heldout"])
    out = Path(str(s.root)) / "cache" / "compare-runs" / job["key"]
    train_s: float | None = 0.0
    if selection is None:
        model = config.model
    else:
        model = str(out)
        if (out / CONFIG_FILE).exists():  # written last: a run killed after training is not trained again
            train_s = None  # its time was spent by the killed run
        else:
            entry = config.trainer_entry
            settings = config.train_settings(job["seed"])
            t = time.perf_counter()
            with writing_store_cache():  # a killed run resumes from its last checkpoint
                entry.run(selection, entry.config(**settings, out=model, resume=out.exists()), store=s)
            train_s = round(time.perf_counter() - t, 3)
    nll = scored = None
    if job["nll"]:
        t = time.perf_counter()
        masks = [np.asarray(m, bool) for m in job["masks"]]
        sums, counts = _score(heldout, model, masks, s)
        trained = _trained_tokens(selection, config.model) if selection is not None else 0
        nll = {"key": job["key"], "sums": sums.tolist(), "counts": counts.tolist(), "trained_tokens": trained}
        nll.update(train_s=train_s, score_s=round(time.perf_counter() - t, 3))
    if job["reward"]:
        t = time.perf_counter()
        scored = {"key": job["reward_key"], "rewards": _rewards(heldout, model, config).tolist()}
        scored.update(train_s=None if nll is not None else train_s, reward_s=round(time.perf_counter() - t, 3))
    if selection is not None and not config.keep_models:
        shutil.rmtree(out, ignore_errors=True)
    return nll, scored


def _make_run(
    arm: str,
    seed: int,
    selection: Version | None,
    cached: dict[str, Any],
    keys: tuple[str, str],
    config: CompareConfig,
) -> Run:
    """A run from its cached metrics, with its wall times (selection: from the selection's own manifest)."""
    nll = {} if config.rl else cached[keys[0]]
    scored = cached[keys[1]] if config.reward is not None else {}
    made = selection is not None and arm != "full"  # the full pool was not selected by the compare
    times = (selection.manifest.get("timings") or {}) if made else {}
    select_s = round(sum(float(v) for v in times.values()), 3) if times else None
    train_s = nll.get("train_s", scored.get("train_s"))
    parts = [nll.get("score_s"), scored.get("reward_s")]
    score_s = round(sum(p for p in parts if p is not None), 3) if any(p is not None for p in parts) else None
    rewards = np.asarray(scored["rewards"], float) if config.reward is not None else None
    if config.rl:
        return Run(arm, seed, selection, 0, None, None, rewards, select_s, train_s, score_s)
    sums, counts = np.asarray(nll["sums"], float), np.asarray(nll["counts"], np.int64)
    return Run(arm, seed, selection, int(nll["trained_tokens"]), sums, counts, rewards, select_s, train_s, score_s)


def _rewards(heldout: Version, model: str, config: CompareConfig) -> np.ndarray:
    """The reward of one greedy completion per held-out prompt, against its answer."""
    from curate.generation import Sampling, make_generator
    from curate.records import prompt_of
    from curate.rewards import call_reward, get_reward

    rows = heldout.to_pylist()
    if any(r.get("answer") is None for r in rows):
        raise CurateError(f"{heldout.ref}: --reward needs an 'answer' in every held-out row")
    fn = get_reward(config.reward)
    prompts = [r.get("prompt") or prompt_of(r["messages"]) for r in rows]
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=config.max_new_tokens, seed=0)
    outs = make_generator("hf", model).generate(prompts, n=1, sampling=sampling)
    rewards = [
        call_reward(fn, config.reward, o[0].text, r["answer"], {}, f"{heldout.ref}: row {r['id']}")
        for o, r in zip(outs, rows, strict=True)
    ]
    return np.asarray(rewards, float)


def _tables(runs: list[Run], config: CompareConfig) -> tuple[pa.Table, list[dict[str, Any]]]:
    table = pa.table(
        {
            "id": [f"{r.arm}/{r.seed}" for r in runs],
            "arm": [r.arm for r in runs],
            "seed": pa.array([r.seed for r in runs], pa.int64()),
            "selection": [r.selection.ref if r.selection is not None else None for r in runs],
            "rows": pa.array([len(r.selection) if r.selection is not None else 0 for r in runs], pa.int64()),
            "trained_tokens": pa.array([r.trained_tokens for r in runs], pa.int64()),
            "heldout_loss": pa.array([r.heldout_loss for r in runs], pa.float64()),
            "accuracy": pa.array([r.accuracy for r in runs], pa.float64()),
            "heldout_reward": pa.array([r.heldout_reward for r in runs], pa.float64()),
            "select_s": pa.array([r.select_s for r in runs], pa.float64()),
            "train_s": pa.array([r.train_s for r in runs], pa.float64()),
            "score_s": pa.array([r.score_s for r in runs], pa.float64()),
            "row_sums": pa.array([_list(r.sums) for r in runs], pa.list_(pa.float64())),
            "row_counts": pa.array([_list(r.counts) for r in runs], pa.list_(pa.int64())),
            "row_rewards": pa.array([_list(r.rewards) for r in runs], pa.list_(pa.float64())),
        }
    )
    return table, summarise(runs, rl=config.rl)


def _list(a: np.ndarray | None) -> list | None:
    return None if a is None else a.tolist()


#: metrics where lower is better (the others: higher is better)
LOWER_IS_BETTER = ("heldout_loss",)


def verdict(row: dict[str, Any]) -> str:
    """What a summary row's paired difference to random says: ``beats random`` or ``worse than random`` when its
    95% interval excludes 0 (on the metric's better side or not), else ``no clear difference``; "" without one.

    >>> verdict({"metric": "heldout_loss", "vs_random": {"diff": -0.05, "ci_low": -0.07, "ci_high": -0.04}})
    'beats random'
    """
    d = row.get("vs_random")
    if not d:
        return ""
    lower = row["metric"] in LOWER_IS_BETTER
    better, worse = (d["ci_high"] < 0, d["ci_low"] > 0) if lower else (d["ci_low"] > 0, d["ci_high"] < 0)
    return "beats random" if better else "worse than random" if worse else "no clear difference"


def summarise(runs: list[Run], *, rl: bool = False, n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Per metric and arm: the mean over seeds, its 95% interval, and the paired difference to ``random`` (when it
    ran): ``heldout_loss`` for SFT runs, ``accuracy`` with rewards; ``heldout_reward`` for RL runs."""
    arms = list(dict.fromkeys(r.arm for r in runs))
    metrics: dict[str, Any] = {}
    if not rl:
        metrics["heldout_loss"] = lambda r: (r.sums, r.counts)
    if all(r.rewards is not None for r in runs):
        if rl:
            metrics["heldout_reward"] = lambda r: (r.rewards, np.ones_like(r.rewards))
        else:
            metrics["accuracy"] = lambda r: (r.correct, np.ones_like(r.correct))
    out = []
    for metric, get in metrics.items():
        data = {a: tuple(np.stack(x) for x in zip(*(get(r) for r in runs if r.arm == a), strict=True)) for a in arms}
        for a in arms:
            ci = bootstrap_interval(*data[a], n_boot=n_boot, seed=seed)
            row: dict[str, Any] = {"metric": metric, "arm": a, "mean": ci.value, "ci_low": ci.low, "ci_high": ci.high}
            if "random" in data and a != "random":
                d = paired_difference(*data[a], *data["random"], n_boot=n_boot, seed=seed)
                row["vs_random"] = {"diff": d.value, "ci_low": d.low, "ci_high": d.high}
            out.append(row)
    return out
