"""Perplexity: keep the rows whose answers a model finds most likely (or least, ``--highest``). A plain baseline.

What it computes. Each row's score is the token-mean negative log-likelihood (natural log; perplexity =
exp(score)) of its answer tokens under ``model``: the tokens SFT trains on (``chat.assistant_token_mask``: each
assistant turn's content and its end-of-turn token), each predicted from everything before it in the
chat-templated conversation. The per-token losses come from ``curate.scoring.token_losses`` (one forward pass per
row, no backward, cached per model, tokenizer and row content), so a rerun with another budget, or ``--method ifd``
on the same rows and model, costs no forward pass. Rows are kept lowest score first (ties: lower row index first)
within the budget (``--budget``, ``--fraction`` or ``--budget-tokens``; reason ``below_budget``);
``--highest`` keeps the highest first. A row with no answer token (no assistant turn, only blank ones, or none left
within the tokenizer's ``model_max_length``) gets reason ``no_answer_tokens``, and a row whose losses are not finite
(a model that overflows) ``nan_score``; neither is ever kept.

Which direction. Keeping the lowest is the usual choice: it is perplexity filtering as in CCNet (Wenzek et al.,
LREC 2020: keep the text a reference LM finds likely: fluent, clean, in-distribution). ``--highest`` keeps the rows
the model finds hardest, the "hard examples" variant (Ankner et al., *Perplexed by Perplexity*, arXiv 2405.20541,
where high or middle perplexity helped, depending on the data). It is a baseline for the self-scoring selectors
(``--method ifd`` divides this very loss by the loss of the answer without its question); no paper is followed.

    curate select sft-pool --method perplexity --fraction 0.1 --name sft-lowppl
    curate select sft-pool --method perplexity --budget 500 --highest --name sft-highppl
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection, Selector, check_budget, take_by_budget
from curate.store import Store, Version

__all__ = ["PerplexitySelector", "answer_token_losses", "has_answer", "read_conversations"]


def has_answer(messages: Sequence[dict]) -> bool:
    """Whether a conversation has an assistant turn with non-blank content (anything to score).

    >>> has_answer([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}])
    False
    """
    return any(m["role"] == "assistant" and m["content"].strip() for m in messages)


def read_conversations(version: Version) -> tuple[list[list[dict]], list[str]]:
    """Each row's ``messages`` as checked ``{role, content}`` lists, and the row ids; malformed rows are an error."""
    from curate.scoring import _check_messages, _conversations

    msgs, row_ids, src, _ = _conversations(version, None)
    return [_check_messages(m, src, i, rid) for i, (m, rid) in enumerate(zip(msgs, row_ids, strict=True))], row_ids


def answer_token_losses(
    convs: Sequence[list[dict]],
    *,
    model: str,
    store: Store | None = None,
    row_ids: Sequence[str] | None = None,
    src: str = "rows",
    stats: dict[str, int] | None = None,
    batch_tokens: int | None = None,
    **engine: Any,
) -> list[np.ndarray]:
    """The losses of each conversation's answer tokens under ``model``: one float64 array per conversation.

    Answer tokens are those SFT trains on (``chat.assistant_token_mask``), in order, each -log p(token | all tokens
    before it) in natural log, cut where ``token_losses`` cuts (the tokenizer's ``model_max_length``); a token at
    position 0 has nothing before it and is left out. The forward passes go through ``curate.scoring.token_losses``
    and its cache in ``store`` (none without one); ``stats`` gets its ``computed`` and ``cached`` counts, ``engine``
    its engine options.

    >>> chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    >>> answer_token_losses([chat], model="smollm2-135m")[0].shape   # doctest: +SKIP
    (2,)
    """
    from curate.models import load_tokenizer
    from curate.scoring import _trained_mask, token_losses

    if not convs:
        return []
    ids = [str(i) for i in range(len(convs))] if row_ids is None else [str(r) for r in row_ids]
    tokenizer = load_tokenizer(model)
    # Masks first: a chat template that refuses a conversation fails here, before any forward pass.
    masks = [_trained_mask(tokenizer, c, src, i, ids[i])[1] for i, c in enumerate(convs)]
    rows = [{"id": rid, "messages": c} for rid, c in zip(ids, convs, strict=True)]
    losses = token_losses(rows, model=model, store=store, batch_tokens=batch_tokens, stats=stats, **engine)
    out = []
    for mask, loss in zip(masks, losses, strict=True):
        m = mask[: len(loss)].copy()
        m[:1] = False
        out.append(loss[m].astype(np.float64))
    return out


class PerplexitySelector(Selector):
    """Keep the rows whose answers the model finds most likely (lowest mean NLL), or least with ``highest``.

    Args:
        highest: Keep the highest-perplexity rows first instead of the lowest.
        model: LM whose token losses score the answers.
    """

    name = "perplexity"
    requires = ("messages",)

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        budget_tokens: int | None = None,
        highest: bool = False,
        model: str = "smollm2-135m",
        batch_tokens: int | None = None,
        engine: str = "local",
        ray_address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
    ):
        self.budget = budget
        self.fraction = fraction
        self.budget_tokens = budget_tokens
        self.highest = highest
        self.model = model
        self.batch_tokens = batch_tokens
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker

    def _check(self) -> None:
        check_budget(self.budget, self.fraction, self.budget_tokens, required=True)
        if not isinstance(self.highest, bool | np.bool_):
            raise CurateError(f"--highest is a flag (true or false), got {self.highest!r}")

    def fit(self, version: Version) -> Self:
        self._check()
        self.version_ = version
        convs, row_ids = read_conversations(version)
        live = [i for i, c in enumerate(convs) if has_answer(c)]
        self.loss_stats_: dict[str, int] = {}
        losses = answer_token_losses(
            [convs[i] for i in live],
            model=self.model,
            store=version.store,
            row_ids=[row_ids[i] for i in live],
            src=version.ref,
            stats=self.loss_stats_,
            batch_tokens=self.batch_tokens,
            **self.engine_kwargs(),
        )
        scores = np.full(len(convs), np.nan)
        self.reasons_ = ["no_answer_tokens"] * len(convs)
        for i, loss in zip(live, losses, strict=True):
            if not len(loss):
                continue  # the answer lies beyond model_max_length
            with np.errstate(invalid="ignore", over="ignore"):
                scores[i] = float(np.mean(loss))
            self.reasons_[i] = "" if np.isfinite(scores[i]) else "nan_score"
        self.scores_ = scores
        return self

    def identity(self) -> dict[str, Any]:
        from curate.models import resolve

        return {"model": resolve(self.model).identity}

    def token_counts(self) -> np.ndarray:
        from curate.scoring import response_token_counts

        return response_token_counts(self.version_, self.model)

    def select(self) -> Selection:
        """Scored rows lowest first (``--highest``: highest first), ties by row index, within the budget."""
        cand = np.array([i for i, r in enumerate(self.reasons_) if r == ""], dtype=np.int64)
        key = self.scores_[cand] if self.highest else -self.scores_[cand]
        ranked = cand[np.argsort(-key, kind="stable")]
        keep = take_by_budget(
            ranked,
            n_rows=len(self.scores_),
            budget=self.budget,
            fraction=self.fraction,
            budget_tokens=self.budget_tokens,
            tokens=self.token_counts() if self.budget_tokens is not None else None,
        )
        reasons = [r or "below_budget" for r in self.reasons_]
        for i in keep:
            reasons[i] = ""
        return Selection(order=np.asarray(keep, dtype=np.int64), reasons=reasons)

    def transform(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Kept rows in order with ``perplexity_score`` (mean answer NLL, nats) and ``perplexity_rank`` (1 = first)."""
        ours = [c for c in (f"{self.prefix}_score", f"{self.prefix}_rank") if c in table.column_names]
        return super().transform(table.drop_columns(ours), selection)

    def stats(self, selection: Selection) -> dict[str, Any]:
        """The base counts, the direction, and how many rows' losses were computed vs read from the cache."""
        return {
            **super().stats(selection),
            "keep": "highest" if self.highest else "lowest",
            "losses": dict(getattr(self, "loss_stats_", {})),
        }
