"""Uniform random selection: the baseline every other selector is measured against.

Scores are i.i.d. uniform draws under ``seed``, so every budget form (``--budget``, ``--fraction``,
``--budget-tokens``) keeps a uniform random subset and the same seed keeps the same rows.

    curate select sample-sft --method random --budget 50 --name sft-random --seed 0
"""

from __future__ import annotations

from typing import Self

import numpy as np

from curate.selectors.base import Selector, check_budget
from curate.store import Version


class RandomSelector(Selector):
    """Keep a uniform random subset within the budget.

    Args:
        seed: Seed of the uniform draws: the same seed keeps the same rows.
        model: Tokenizer that counts response tokens; read only with --budget-tokens.
    """

    name = "random"
    only_with = {"model": ("--budget-tokens", lambda s: s.budget_tokens is not None)}

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        budget_tokens: int | None = None,
        seed: int = 0,
        model: str = "smollm2-135m",
    ):
        self.budget = budget
        self.fraction = fraction
        self.budget_tokens = budget_tokens
        self.seed = seed
        self.model = model

    def fit(self, version: Version) -> Self:
        check_budget(self.budget, self.fraction, self.budget_tokens, required=True)
        self.version_ = version
        self.scores_ = np.random.default_rng(self.seed).random(len(version))
        return self

    def identity(self) -> dict:
        if self.budget_tokens is None:
            return {}
        from curate.models import resolve

        return {"tokenizer": resolve(self.model).identity}

    def token_counts(self) -> np.ndarray:
        from curate.scoring import response_token_counts

        return response_token_counts(self.version_, self.model)
