"""The online curriculum of ``curate train grpo --curriculum online``: draw the prompts whose pass rate is nearest
1/2, learning the pass rates from the trainer's own rollouts.

What it computes. Each prompt's pass rate has a Beta(a + successes, b + failures) posterior (a success is a reward >
0.5, the rule of ``curate rollout``), updated with every group the trainer samples; a step draws its prompts without
replacement with probability proportional to the learnability ``m (1 - m)`` of the posterior mean m, floored so no
prompt vanishes. Prompts whose rollouts all agree give GRPO no gradient, so they are drawn least. Optionally
(GRESO) a prompt that stayed all-correct or all-wrong for its last updates is skipped with a probability that grows
with the streak. The offline counterpart, a band and a staged curriculum from one set of rollouts, is
``curate select --method difficulty`` (``curate/selectors/difficulty.py``).

Papers: Online Difficulty Filtering (Bae et al., arXiv 2504.03380); LILO, learnability p (1 - p) (Foster, Sims,
Forkel, Fellows, Foerster, arXiv 2502.12272); GRESO (Zheng et al., arXiv 2506.02177).

Departures: the sampler reuses the trainer's rollouts instead of screening with extra ones, so its estimates lag the
policy by the age of the evidence (``decay`` < 1 forgets old evidence). GRESO's adaptive skip probabilities are
optional (``adaptive=True``, adjusted once per ``sample`` call from the updates since the previous call) and its "all
correct" / "all wrong" states are exact (every / no reward > 0.5), not its 0.98 / 0.11 thresholds on the mean reward.

    curate train grpo gsm8k@v1 --model smollm2-135m --reward math --curriculum online --out runs/grpo
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.groups import learnability
from curate.rollouts import PASS_THRESHOLD

__all__ = ["OnlineDifficultySampler"]


def _prior(value: Any) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in value)
    except (TypeError, ValueError):
        raise CurateError(f"OnlineDifficultySampler: prior must be two numbers (a, b), got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < 0:
        raise CurateError(f"OnlineDifficultySampler: prior must be two finite numbers >= 0, got {value!r}")
    return a, b


class OnlineDifficultySampler:
    """Draw training prompts by learnability of a per-prompt Beta posterior; update it from training rollouts.

    Each prompt's pass rate has a Beta(a + successes, b + failures) posterior (``prior=(a, b)``; a success is a
    reward > 0.5, as in ``curate rollout``). ``sample(k)`` draws k distinct prompts with probability proportional to
    ``max(m (1 - m), floor)`` where m is the posterior mean: prompts near p = 0.5 come most often, unseen prompts have
    the prior's mean (0.5 for Beta(1, 1), so they are explored first), and ``floor`` keeps solved or hopeless prompts
    from vanishing while the policy changes. ``update(prompt_id, rewards)`` adds one group of rollouts.

    With ``skip_zero_variance=True`` (GRESO): a prompt whose last ``count`` updates were all correct (all wrong) is
    passed over with probability ``1 - max(p_easy ** count, 0.01)`` (``p_hard`` for all wrong); count 0 never
    skips. The draw walks the weighted random order and takes the first k prompts not skipped; if fewer than k
    survive it fills up with skipped ones in the same order, so ``sample(k)`` always returns ``min(k, #prompts)``.
    With ``adaptive=True`` each ``sample`` call first moves ``p_easy`` (``p_hard``) by -0.01 if the share of
    all-correct (all-wrong) updates since the previous call reached ``target_easy`` (``target_hard``), else by
    +0.01, clipped to [0.05, 0.95] (GRESO's rule). ``decay`` < 1 shrinks old evidence before each update.

    ``state_dict()`` / ``load_state_dict()`` are plain JSON-able dicts (posteriors, streaks, skip probabilities,
    the RNG state), so a resumed trainer draws exactly what an uninterrupted one would.

    >>> s = OnlineDifficultySampler(["a", "b", "c"], n_per_step=2, seed=0)
    >>> s.update("a", [1.0, 1.0, 1.0, 1.0]); len(s.sample())
    2
    """

    def __init__(
        self,
        prompt_ids: Sequence[str],
        *,
        n_per_step: int,
        prior: tuple[float, float] = (1.0, 1.0),
        seed: int = 0,
        floor: float = 0.01,
        decay: float = 1.0,
        skip_zero_variance: bool = False,
        p_easy: float = 0.5,
        p_hard: float = 0.5,
        adaptive: bool = False,
        target_easy: float = 0.25 / 3,
        target_hard: float = 0.25 * 2 / 3,
    ):
        ids = [str(p) for p in prompt_ids]
        if len(set(ids)) != len(ids):
            raise CurateError("OnlineDifficultySampler: prompt_ids has duplicates")
        if isinstance(n_per_step, bool) or not isinstance(n_per_step, int) or n_per_step < 1:
            raise CurateError(f"OnlineDifficultySampler: n_per_step must be a positive integer, got {n_per_step!r}")
        a, b = _prior(prior)
        if a + b <= 0:
            raise CurateError(f"OnlineDifficultySampler: prior must have a + b > 0, got {prior!r}")
        if not 0 <= floor <= 0.25:
            raise CurateError(f"OnlineDifficultySampler: floor must be in [0, 0.25], got {floor!r}")
        if not 0 < decay <= 1:
            raise CurateError(f"OnlineDifficultySampler: decay must be in (0, 1], got {decay!r}")
        for flag, v in (("p_easy", p_easy), ("p_hard", p_hard)):
            if not 0 <= v <= 1:
                raise CurateError(f"OnlineDifficultySampler: {flag} must be in [0, 1], got {v!r}")
        self.prompt_ids = ids
        self.n_per_step = n_per_step
        self.prior = (a, b)
        self.seed = seed
        self.floor = float(floor)
        self.decay = float(decay)
        self.skip_zero_variance = skip_zero_variance
        self.p_easy = float(p_easy)
        self.p_hard = float(p_hard)
        self.adaptive = adaptive
        self.target_easy = float(target_easy)
        self.target_hard = float(target_hard)
        self._index = {p: i for i, p in enumerate(ids)}
        self.alpha = np.full(len(ids), a, dtype=np.float64)
        self.beta = np.full(len(ids), b, dtype=np.float64)
        self.easy_streak = np.zeros(len(ids), dtype=np.int64)
        self.hard_streak = np.zeros(len(ids), dtype=np.int64)
        self._since = [0, 0, 0]  # updates, all-correct, all-wrong since the last sample() call
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def _i(self, prompt_id: str) -> int:
        try:
            return self._index[str(prompt_id)]
        except KeyError:
            raise CurateError(f"OnlineDifficultySampler: unknown prompt_id {prompt_id!r}") from None

    def pass_rate(self, prompt_id: str | None = None) -> float | np.ndarray:
        """Posterior mean pass rate of one prompt, or of all prompts in ``prompt_ids`` order."""
        m = self.alpha / (self.alpha + self.beta)
        return m if prompt_id is None else float(m[self._i(prompt_id)])

    def weights(self) -> np.ndarray:
        """Unnormalised sampling weights ``max(m (1 - m), floor)``, in ``prompt_ids`` order."""
        m = self.pass_rate()
        return np.maximum(learnability(m), self.floor)

    def skip_probability(self) -> np.ndarray:
        """GRESO's ``1 - max(p ** count, 0.01)`` per prompt (0 where the streak is 0 or skipping is off)."""
        if not self.skip_zero_variance:
            return np.zeros(len(self))
        out = np.zeros(len(self))
        for streak, p in ((self.easy_streak, self.p_easy), (self.hard_streak, self.p_hard)):
            on = streak > 0
            out[on] = 1.0 - np.maximum(p ** streak[on].astype(np.float64), 0.01)
        return out

    def _adapt(self) -> None:
        total, easy, hard = self._since
        if self.adaptive and total:
            self.p_easy += -0.01 if easy / total >= self.target_easy else 0.01
            self.p_hard += -0.01 if hard / total >= self.target_hard else 0.01
            self.p_easy = float(np.clip(self.p_easy, 0.05, 0.95))
            self.p_hard = float(np.clip(self.p_hard, 0.05, 0.95))
        self._since = [0, 0, 0]

    def sample(self, k: int | None = None) -> list[str]:
        """``k`` distinct prompt ids (default ``n_per_step``), drawn by learnability weight, GRESO skips applied."""
        k = self.n_per_step if k is None else int(k)
        if k < 0:
            raise CurateError(f"OnlineDifficultySampler.sample: k must be >= 0, got {k}")
        self._adapt()
        n = len(self)
        u = self._rng.random(n)
        v = self._rng.random(n)
        w = self.weights()
        # Efraimidis-Spirakis: sorting log(u) / w descending is a weighted draw without replacement; a zero weight
        # (floor 0 and a certain prompt) sorts last instead of dividing by zero.
        with np.errstate(divide="ignore"):
            keys = np.where(w > 0, np.log(np.maximum(u, 1e-300)) / np.where(w > 0, w, 1.0), -np.inf)
        order = np.argsort(-keys, kind="stable")
        skipped = v[order] < self.skip_probability()[order]
        picked = np.concatenate((order[~skipped], order[skipped]))[: min(k, n)]
        return [self.prompt_ids[i] for i in picked]

    def update(self, prompt_id: str, rewards: Sequence[float]) -> None:
        """Add one group of rollouts of ``prompt_id`` to its posterior and its GRESO streaks."""
        i = self._i(prompt_id)
        r = np.asarray(list(rewards), dtype=np.float64)
        if r.size == 0:
            raise CurateError(f"OnlineDifficultySampler.update: no rewards for prompt_id {prompt_id!r}")
        if not np.all(np.isfinite(r)):
            raise CurateError(f"OnlineDifficultySampler.update: prompt_id {prompt_id!r}: non-finite reward in {r}")
        x = (r > PASS_THRESHOLD).astype(np.float64)
        a, b = self.prior
        self.alpha[i] = a + self.decay * (self.alpha[i] - a) + x.sum()
        self.beta[i] = b + self.decay * (self.beta[i] - b) + (x.size - x.sum())
        all_correct, all_wrong = bool(x.all()), not x.any()
        self.easy_streak[i] = self.easy_streak[i] + 1 if all_correct else 0
        self.hard_streak[i] = self.hard_streak[i] + 1 if all_wrong else 0
        self._since[0] += 1
        self._since[1] += int(all_correct)
        self._since[2] += int(all_wrong)

    def state_dict(self) -> dict[str, Any]:
        """Everything ``load_state_dict`` needs to continue exactly; plain JSON types only."""
        return {
            "format": 1,
            "prompt_ids": list(self.prompt_ids),
            "alpha": self.alpha.tolist(),
            "beta": self.beta.tolist(),
            "easy_streak": self.easy_streak.tolist(),
            "hard_streak": self.hard_streak.tolist(),
            "p_easy": self.p_easy,
            "p_hard": self.p_hard,
            "since": list(self._since),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the prompt ids must be the same set (their order may differ)."""
        if state.get("format") != 1:
            raise CurateError(f"OnlineDifficultySampler: unknown state format {state.get('format')!r}")
        ids = [str(p) for p in state["prompt_ids"]]
        if set(ids) != set(self.prompt_ids) or len(ids) != len(self.prompt_ids):
            extra = sorted(set(ids) - set(self.prompt_ids))[:3]
            lack = sorted(set(self.prompt_ids) - set(ids))[:3]
            raise CurateError(
                f"OnlineDifficultySampler: state is for other prompts (unknown here: {extra}, "
                f"missing from state: {lack})"
            )
        pos = np.asarray([self._index[p] for p in ids], dtype=np.int64)
        for name, dtype in (
            ("alpha", np.float64),
            ("beta", np.float64),
            ("easy_streak", np.int64),
            ("hard_streak", np.int64),
        ):
            arr = np.empty(len(ids), dtype=dtype)
            arr[pos] = np.asarray(state[name], dtype=dtype)
            setattr(self, name, arr)
        self.p_easy = float(state["p_easy"])
        self.p_hard = float(state["p_hard"])
        self._since = [int(x) for x in state["since"]]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self._rng = rng
