"""Length: keep the rows with the most trained tokens (SFT label positions). A plain, cheap baseline.

What it computes. Each row's score is its number of trained tokens under ``model``'s tokenizer and chat template
(``curate.scoring.response_token_counts``, cached per tokenizer); rows are kept longest first within the budget
(``--budget``, ``--fraction`` or ``--budget-tokens``). ``--shortest`` keeps the shortest first instead.

Why it exists. Several information-based selectors prefer long examples (FisherSFT's log-det gain grows with the
tokens a row adds), so at a row budget they train on more tokens than a random pick of the same size. ``curate
compare`` runs this selector as the ``longest`` control arm, which separates "picked informative rows" from
"picked long rows".

    curate select gsm8k --method length --budget 32 --name gsm8k-longest
"""

from __future__ import annotations

from typing import Self

import numpy as np

from curate.selectors.base import Selector, check_budget
from curate.store import Version


class LengthSelector(Selector):
    """Keep the rows with the most trained tokens (or the fewest, ``shortest``).

    Args:
        shortest: Keep the shortest rows first instead of the longest.
        model: Tokenizer and chat template that count the trained tokens.
    """

    name = "length"
    requires = ("messages",)

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        budget_tokens: int | None = None,
        shortest: bool = False,
        model: str = "smollm2-135m",
    ):
        self.budget = budget
        self.fraction = fraction
        self.budget_tokens = budget_tokens
        self.shortest = shortest
        self.model = model

    def fit(self, version: Version) -> Self:
        check_budget(self.budget, self.fraction, self.budget_tokens, required=True)
        self.version_ = version
        counts = self.token_counts().astype(np.float64)
        # Ties keep input order (a stable sort of the negated score), so the pick is reproducible.
        self.scores_ = -counts if self.shortest else counts
        return self

    def identity(self) -> dict:
        from curate.models import resolve

        return {"tokenizer": resolve(self.model).identity}

    def token_counts(self) -> np.ndarray:
        from curate.scoring import response_token_counts

        if getattr(self, "counts_", None) is None:
            self.counts_ = response_token_counts(self.version_, self.model)
        return self.counts_
