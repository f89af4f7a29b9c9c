"""Intermediate-difficulty prompt selection and curricula for RL, offline (the online sampler is in train/).

What it computes. Every prompt gets a pass rate p from n rollouts of the current policy: successes / n, or with a
Beta(a, b) prior (``--prior a,b``) the posterior mean (successes + a) / (n + a + b). A success is a reward > 0.5, the
rule of ``curate rollout`` (correct for binary rewards, and for PODS-style 1.0 + format-bonus rewards). Prompts whose
rollouts all agree give GRPO no gradient (advantages vanish when p is 0 or 1) and the SNR of the policy gradient is
bounded by 4 N p (1 - p) in the tails (SPEED-RL), so the selector keeps a band of intermediate difficulty:

- default: 0 < p < 1 strictly, on the raw empirical pass rate (DAPO's and SPEED-RL's screening rule; the raw rate
  because a prior would never let p reach 0 or 1);
- ``--band lo,hi``: lo <= p <= hi inclusive, on p as estimated (the posterior mean when a prior is given); the
  balanced filter of Bae et al.

Dropped prompts get reason ``too_hard`` (p below the band) or ``too_easy`` (above it). ``--score`` ranks the prompts
for a budget: ``pass-rate`` (p, higher first, so a budget keeps the easiest in the band) or ``learnability``
(p (1 - p), LILO's score: a budget keeps those nearest p = 0.5). ``--budget K`` / ``--fraction F`` (F of the input
prompts) apply after the band, in score order; the rest get ``below_budget``. The kept prompts are written in
curriculum ``--order`` (``easy-to-hard``: p descending; ``hard-to-easy``: p ascending; ``learnability``: p (1 - p)
descending); ties keep input row order (stable sort). ``--stages K`` adds a ``stage`` column 1..K that cuts the
ordered rows into K contiguous chunks of equal size (the first ``rows % K`` chunks one row larger), for a staged
curriculum. The output carries ``pass_rate`` (p as estimated), ``n_rollouts`` and ``learnability``.

Input: a rollouts version (``prompt_id`` + ``reward``: one output row per prompt, taken from the first rollout row of
each prompt, rollout-only columns dropped, ``id`` = ``prompt_id``; ``decisions.parquet`` has one row per rollout
with its prompt's decision), or a prompts version, for which the selector runs ``--n`` rollouts per prompt itself
through the rollout cache (``curate.rollouts.generate_rollouts``; a second run generates nothing) with ``--model``,
``--backend``, ``--temperature``, ``--max-tokens`` and ``--reward``; the model identity then enters the version id.

The same idea inside a training loop, updated from the trainer's own rollouts, is ``curate train grpo --curriculum
online`` (``OnlineDifficultySampler`` in ``curate/train/curriculum.py``).

Papers: SPEED-RL (Zhang, Arora, Mei, Zanette, arXiv 2506.09016); Online Difficulty Filtering (Bae et al., arXiv
2504.03380); LILO, learnability p (1 - p) (Foster, Sims, Forkel, Fellows, Foerster, arXiv 2502.12272); DAPO dynamic
sampling (Yu et al., arXiv 2503.14476).

Departures: the papers filter on-policy at every step; the selector filters once, offline, from one set of rollouts
(a staged curriculum instead of re-screening). SPEED-RL's continuation rollouts and Bae et al.'s asynchronous batch
refill are the trainer's business.

    curate select sample-math --method difficulty --n 4 --band 0.2,0.8 --order easy-to-hard --stages 3 \\
        --name math-curriculum
    curate select math-rollouts --method difficulty --score learnability --budget 100 --name math-frontier
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.groups import learnability
from curate.rollouts import PASS_THRESHOLD
from curate.selectors.base import Selection, Selector, check_budget, rank_desc, take_by_budget
from curate.selectors.variance import prompt_groups, rewards_of
from curate.store import Version

#: columns that describe one completion, not its prompt; dropped when rollouts collapse to one row per prompt
ROLLOUT_ONLY = ("sample", "completion", "reward", "completion_tokens", "finish_reason", "advantage")
SCORES = ("pass-rate", "learnability")
ORDERS = ("easy-to-hard", "hard-to-easy", "learnability")
#: band edges are inclusive; sums of float rewards leave rounding noise far below this
BAND_TOL = 1e-12


def _pair(value: Any, flag: str, *, unit: bool) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in value)
    except (TypeError, ValueError):
        raise CurateError(f"{flag} must be two numbers 'A,B', got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise CurateError(f"{flag} must be two finite numbers >= 0, got {value!r}")
    if unit and not a <= b <= 1:
        raise CurateError(f"{flag} must satisfy 0 <= lo <= hi <= 1, got {value!r}")
    return a, b


def pass_rates(successes: np.ndarray, n: np.ndarray, prior: tuple[float, float] | None) -> np.ndarray:
    """Empirical pass rate, or the Beta(a, b) posterior mean ``(s + a) / (n + a + b)``.

    >>> pass_rates(np.array([3.0]), np.array([4]), None).tolist(), pass_rates(np.array([3.0]), np.array([4]), (1, 1))
    ([0.75], array([0.66666667]))
    """
    s, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if prior is None:
        return s / n
    a, b = prior
    return (s + a) / (n + a + b)


def stage_labels(n_rows: int, stages: int) -> np.ndarray:
    """Stage 1..K for rows in curriculum order: K contiguous chunks, the first ``n_rows % K`` one row larger.

    >>> stage_labels(7, 3).tolist()
    [1, 1, 1, 2, 2, 3, 3]
    """
    return np.concatenate(
        [np.full(len(c), k + 1, dtype=np.int64) for k, c in enumerate(np.array_split(np.arange(n_rows), stages))]
    ).astype(np.int64)


class DifficultySelector(Selector):
    """Keep prompts of intermediate pass rate and write them as a curriculum (SPEED-RL / Bae et al. / LILO).

    Args:
        n: Rollouts per prompt, when the input is a prompts version (the selector runs them).
        model: Policy that runs the rollouts for a prompts version.
        backend: Generation backend of those rollouts (as curate rollout --backend).
        temperature: Sampling temperature of those rollouts.
        max_tokens: Most new tokens per rollout.
        reward: Reward function that scores those rollouts (as curate rollout --reward).
        base_url: Server URL for an OpenAI-compatible backend.
        prior: Beta(a, b) prior on the pass rate, as a,b: p is then the posterior mean.
        band: Keep prompts with lo <= p <= hi, as lo,hi; none keeps 0 < p < 1 on the raw pass rate.
        score: Ranking for a budget: pass-rate (easiest first) or learnability (p (1 - p), nearest 0.5 first).
        order: Curriculum order of the kept prompts: easy-to-hard, hard-to-easy or learnability.
        stages: Cut the ordered prompts into this many equal stages (a stage column 1..K).
        budget: Keep this many prompts after the band, in --score order.
        fraction: Keep this fraction of the input prompts after the band, in --score order.
        seed: Seed of the rollouts the selector runs itself.

    >>> curate.select("math-rollouts", method="difficulty", band=(0.2, 0.8), name="cur")  # doctest: +SKIP
    """

    name = "difficulty"
    requires = ()

    def __init__(
        self,
        *,
        n: int = 8,
        model: str = "smollm2-135m",
        backend: str = "hf",
        temperature: float = 1.0,
        max_tokens: int = 256,
        reward: str = "math",
        base_url: str | None = None,
        prior: tuple[float, float] | None = None,
        band: tuple[float, float] | None = None,
        score: str = "pass-rate",
        order: str = "easy-to-hard",
        stages: int | None = None,
        budget: int | None = None,
        fraction: float | None = None,
        seed: int = 0,
        engine: str = "local",
        ray_address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
    ):
        self.n = n
        self.model = model
        self.backend = backend
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.reward = reward
        self.base_url = base_url
        self.prior = prior
        self.band = band
        self.score = score
        self.order = order
        self.stages = stages
        self.budget = budget
        self.fraction = fraction
        self.seed = seed
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker

    # ------------------------------------------------------------------ input
    def check_input(self, version: Version) -> None:
        cols = set(version.columns)
        if {"prompt_id", "reward"} <= cols:
            self.runs_rollouts_ = False
        elif "prompt_id" in cols or "reward" in cols:
            have, lack = ("prompt_id", "reward") if "prompt_id" in cols else ("reward", "prompt_id")
            raise CurateError(
                f"{version.ref}: --method difficulty: a rollouts version needs both prompt_id and "
                f"reward, this one has {have} but no {lack}"
            )
        elif "prompt" in cols:
            self.runs_rollouts_ = True
        else:
            raise CurateError(
                f"{version.ref}: --method difficulty needs a rollouts version (prompt_id, reward) or a "
                f"prompts version (prompt, answer); it has {', '.join(version.columns)}"
            )

    def rollout_config(self):
        """The ``RolloutConfig`` this selector runs on a prompts version."""
        from curate.engine import Engine
        from curate.rollouts import RolloutConfig

        return RolloutConfig(
            n=self.n,
            model=self.model,
            backend=self.backend,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            reward=self.reward,
            seed=self.seed,
            base_url=self.base_url,
            run=Engine(**self.engine_kwargs()),
        )

    def generator(self):
        """The generator that runs the rollouts (built once: its identity reads the tokenizer)."""
        if getattr(self, "_generator", None) is None:
            self._generator = self.rollout_config().make_generator()
        return self._generator

    def identity(self) -> dict[str, Any]:
        # Before check_input the input kind is unknown; assume rollouts run, so the id never misses the model.
        if not getattr(self, "runs_rollouts_", True):
            return {}
        from curate.rewards import reward_source
        from curate.rollouts import EXECUTION_ONLY

        # The same recipe `curate rollout` hashes: generator identity (model weights, chat template), sampling
        # settings, and the source of a user reward function.
        config = self.rollout_config()
        return {
            "generator": self.generator().identity(),
            "rollout": {k: v for k, v in dataclasses.asdict(config).items() if k not in EXECUTION_ONLY},
            "reward_source": reward_source(config.reward),
        }

    def _check_params(self) -> None:
        if self.score not in SCORES:
            raise CurateError(f"--score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.order not in ORDERS:
            raise CurateError(f"--order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.stages is not None and (
            isinstance(self.stages, bool) or not isinstance(self.stages, int | np.integer) or self.stages < 1
        ):
            raise CurateError(f"--stages must be a positive integer, got {self.stages!r}")
        if self.prior is not None:
            _pair(self.prior, "--prior", unit=False)
        if self.band is not None:
            _pair(self.band, "--band", unit=True)
        check_budget(self.budget, self.fraction, None, required=False)
        if self.runs_rollouts_ and (
            isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 1
        ):
            raise CurateError(f"--n must be a positive integer, got {self.n!r}")

    # ------------------------------------------------------------------ scoring
    def fit(self, version: Version) -> Self:
        self.check_input(version)
        self._check_params()
        self.version_ = version
        if self.runs_rollouts_:
            from curate.rollouts import generate_rollouts

            rollouts = generate_rollouts(
                version, self.rollout_config(), store=version.store, generator=self.generator()
            )
            pids, groups = prompt_groups(version, rollouts)
            r = rewards_of(version, rollouts, pids, groups)
            by_id = {p: r[g] for p, g in zip(pids, groups, strict=True)}
            ids = [str(x) for x in version.to_arrow(columns=["id"]).column("id").to_pylist()]
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise CurateError(f"{version.ref}: no rollouts came back for prompt id {missing[0]!r}")
            per_prompt = [by_id[i] for i in ids]
            self.prompt_rows_ = np.arange(len(ids), dtype=np.int64)
            self.row_prompt_ = np.arange(len(ids), dtype=np.int64)
        else:
            table = version.to_arrow(columns=["prompt_id", "reward"])
            ids, groups = prompt_groups(version, table)
            r = rewards_of(version, table, ids, groups)
            per_prompt = [r[g] for g in groups]
            self.prompt_rows_ = np.asarray([g[0] for g in groups], dtype=np.int64)
            self.row_prompt_ = np.zeros(len(r), dtype=np.int64)
            for k, g in enumerate(groups):
                self.row_prompt_[g] = k
        self.prompt_ids_ = list(ids)
        self.n_rollouts_ = np.asarray([len(x) for x in per_prompt], dtype=np.int64)
        self.successes_ = np.asarray([float((x > PASS_THRESHOLD).sum()) for x in per_prompt], dtype=np.float64)
        prior = None if self.prior is None else _pair(self.prior, "--prior", unit=False)
        self.raw_pass_rate_ = pass_rates(self.successes_, self.n_rollouts_, None)
        self.pass_rate_ = pass_rates(self.successes_, self.n_rollouts_, prior)
        self.learnability_ = learnability(self.pass_rate_)
        self.prompt_scores_ = self.pass_rate_ if self.score == "pass-rate" else self.learnability_
        self.scores_ = self.prompt_scores_[self.row_prompt_].astype(np.float64)
        return self

    # ------------------------------------------------------------------ choosing
    def select(self) -> Selection:
        """Band, then budget in score order, then curriculum order and stages; reasons per parent row."""
        n_prompts = len(self.prompt_ids_)
        reasons = np.full(n_prompts, "", dtype=object)
        if self.band is None:
            reasons[self.raw_pass_rate_ <= BAND_TOL] = "too_hard"
            reasons[self.raw_pass_rate_ >= 1.0 - BAND_TOL] = "too_easy"
        else:
            lo, hi = _pair(self.band, "--band", unit=True)
            reasons[self.pass_rate_ < lo - BAND_TOL] = "too_hard"
            reasons[self.pass_rate_ > hi + BAND_TOL] = "too_easy"
        in_band = np.flatnonzero(reasons == "")
        ranked = in_band[rank_desc(self.prompt_scores_[in_band])]
        kept = take_by_budget(ranked, n_rows=n_prompts, budget=self.budget, fraction=self.fraction)
        below = np.setdiff1d(in_band, kept)
        reasons[below] = "below_budget"
        kept = np.sort(kept)  # back to input order, so the curriculum sort below breaks ties by row order
        p = self.pass_rate_[kept]
        if self.order == "easy-to-hard":
            ordered = kept[np.argsort(-p, kind="stable")]
        elif self.order == "hard-to-easy":
            ordered = kept[np.argsort(p, kind="stable")]
        else:
            ordered = kept[np.argsort(-self.learnability_[kept], kind="stable")]
        self.prompt_kept_ = np.zeros(n_prompts, dtype=bool)
        self.prompt_kept_[ordered] = True
        self.prompt_reasons_ = reasons
        columns: dict[str, list[Any]] = {
            "pass_rate": self.pass_rate_[ordered].tolist(),
            "n_rollouts": self.n_rollouts_[ordered].tolist(),
            "learnability": self.learnability_[ordered].tolist(),
        }
        if self.stages is not None:
            columns["stage"] = stage_labels(len(ordered), int(self.stages)).tolist()
        return Selection(
            order=self.prompt_rows_[ordered], reasons=[str(x) for x in reasons[self.row_prompt_]], columns=columns
        )

    # ------------------------------------------------------------------ output
    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        if not self.runs_rollouts_:
            pids = table.column("prompt_id").cast(pa.string())
            if "id" in table.column_names:
                table = table.set_column(table.column_names.index("id"), "id", pids)
            else:
                table = table.add_column(0, "id", pids)
            table = table.drop_columns([c for c in (*ROLLOUT_ONLY, "prompt_id") if c in table.column_names])
        # A stale curriculum from an earlier run (a stage column without --stages) must not survive into this one.
        ours = ("pass_rate", "n_rollouts", "learnability", "stage", f"{self.prefix}_score", f"{self.prefix}_rank")
        table = table.drop_columns([c for c in ours if c in table.column_names])
        out = super().transform(table, Selection(selection.order, selection.reasons))
        types = {
            "pass_rate": pa.float64(),
            "n_rollouts": pa.int64(),
            "learnability": pa.float64(),
            "stage": pa.int64(),
        }
        for col, values in selection.columns.items():
            out = out.append_column(col, pa.array(values, type=types.get(col)))
        return out

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """One row per parent row (per rollout for a rollouts version), carrying its prompt's decision."""
        return pa.table(
            {
                "id": table.column("id").cast(pa.string()),
                "prompt_id": pa.array([self.prompt_ids_[k] for k in self.row_prompt_], type=pa.string()),
                "score": pa.array(self.scores_, type=pa.float64()),
                "pass_rate": pa.array(self.pass_rate_[self.row_prompt_], type=pa.float64()),
                "kept": pa.array(self.prompt_kept_[self.row_prompt_]),
                "reason": pa.array(selection.reasons, type=pa.string()),
            }
        )

    def stats(self, selection: Selection) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for r in self.prompt_reasons_:
            if r:
                reasons[r] = reasons.get(r, 0) + 1
        kept = int(self.prompt_kept_.sum())
        out: dict[str, Any] = {
            "kept": kept,
            "dropped": len(self.prompt_ids_) - kept,
            "reasons": reasons,
            "prompts": len(self.prompt_ids_),
            "rows": len(self.row_prompt_),
            "rollouts": int(self.n_rollouts_.sum()),
            "ran_rollouts": bool(self.runs_rollouts_),
        }
        if len(self.pass_rate_):
            out["pass_rate_mean"] = round(float(self.pass_rate_.mean()), 6)
        if "stage" in selection.columns:
            out["stage_sizes"] = np.bincount(
                np.asarray(selection.columns["stage"], dtype=np.int64), minlength=int(self.stages) + 1
            )[1:].tolist()
        return out
