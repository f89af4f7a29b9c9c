"""IFD: keep the rows whose question helps the model least with the answer (Instruction-Following Difficulty).

What it computes. For each row, with A its answer tokens and Q everything before them,

    IFD = L(A | Q) / L(A),

where L(A | Q) is the token-mean cross-entropy (natural log) of the answer tokens in the chat-templated
conversation and L(A) the same for the answer with its question removed. The answer tokens are those SFT trains on
(``chat.assistant_token_mask``: each assistant turn's content and its end-of-turn token). "Question removed" means
every non-assistant turn (user, system, tool) keeps its place and role but loses its content, and the same chat
template renders the result (ChatML: ``<|im_start|>user\\n<|im_end|>\\n<|im_start|>assistant\\n ... <|im_end|>``):
the answer given an empty question, in the format the model saw in training, as the reference code scores
``"### Response:" + output``. Why not the assistant turns alone: a conversation that opens with an assistant turn
is out of distribution for a chat model (it would inflate L(A) and so deflate IFD), templates that require
user/assistant alternation refuse it, and ``chat.assistant_token_mask`` cannot locate a turn with nothing before
it. In a multi-turn row every assistant turn counts in both terms, so in L(A) a later answer is still conditioned
on the earlier answers, only not on any question. A row whose questions are already empty has IFD exactly 1.

IFD < 1: the question makes the answer easier to predict. IFD >= 1: it does not help at all, which the paper reads
as a question and answer that do not belong together; such rows are dropped (reason ``ifd_ge_max``, the edge
``--max-ifd``, default 1.0; ``--max-ifd none`` keeps them). ``--min-ifd`` also drops rows below a floor (reason
``ifd_lt_min``). The rows in the band [min, max) are ranked by IFD, highest first (ties: lower row index first),
and kept within the budget (``--budget``, ``--fraction`` of all input rows, or ``--budget-tokens``; none keeps the
whole band; reason ``below_budget``). A row with no answer token (no assistant turn, only blank ones, or none left
within the tokenizer's ``model_max_length``) gets reason ``no_answer_tokens``; one whose IFD is not a finite number
(non-finite losses, or with ``--ratio loss`` an alone loss of 0) gets ``nan_score``. Both have a NaN score and are
never kept.

Two forward passes per row (no backward), through ``curate.scoring.token_losses`` and its cache: a rerun with
another band or budget costs none, and the conditioned pass is the one ``--method perplexity`` reads, so either
method after the other on the same rows and model computes only the answers alone. A small scorer for a larger
model (Superfiltering) is just ``--model``: the paper scores with GPT-2 (124M) for LLaMA-2 7B/13B.

Papers: Li, Zhang, Li, Chen, Chen, Wang, Zhou, Xiao, "From Quantity to Quality: Boosting LLM Performance with
Self-Guided Data Selection for Instruction Tuning", NAACL 2024, arXiv 2308.12032 (reference code
tianyi-lab/Cherry_LLM); Li, Zhang, Chen, Chen, Chen, Wang, Zhou, Xiao, "Superfiltering: Weak-to-Strong Data
Filtering for Fast Instruction-Tuning", ACL 2024, arXiv 2402.00530 (reference code tianyi-lab/Superfiltering).

Departures from the papers and their code:
- Ratio. Cherry's ``data_by_IFD.py`` divides the mean losses (the paper's definition, the default here);
  Superfiltering's ``put_analysis_to_data.py`` divides the perplexities, exp(L(A|Q)) / exp(L(A)) =
  exp(L(A|Q) - L(A)): ``--ratio ppl``. Both are below 1 for exactly the same rows; they rank them differently.
- Band edge. Rows with IFD >= 1 are dropped, as Superfiltering's ``select_data.py`` does (``< filter_threash``);
  Cherry's ``data_by_IFD.py`` drops only IFD > 1.
- Budget. ``--fraction`` is a share of all input rows, rounded, as in every curate selector (Superfiltering:
  ``int(52002 * rate)``, a share of the whole pool too; Cherry: ``int(rate * rows left after the filter)``).
- Rendering. The chat template instead of Alpaca/Vicuna prompt strings; the answer includes its end-of-turn token
  (trained by SFT), and the answer alone keeps the template's empty question and role headers (Cherry keeps only
  the response header, Superfiltering scores the bare output text with no header).
- Multi-turn rows (the reference code is single-turn only): as described above.
- Truncation. Both renderings are cut at the tokenizer's ``model_max_length`` and compared on the first k answer
  tokens both still hold (k = the smaller count); Cherry skips a row whose conditioned text overflows, Superfiltering
  cuts the alone text to the conditioned text's room.
- No pre-experienced model. Cherry first fine-tunes the scorer on a small clustered sample ("brief experience");
  here the scorer is whatever ``--model`` names (its V2 data drops that step as well; ``curate train sft`` can make
  one).
- Rows without an answer or with an undefined IFD get a reason in ``decisions.parquet`` instead of vanishing.

    curate select sft-pool --method ifd --fraction 0.1 --name sft-ifd
    curate select sft-pool --method ifd --budget 500 --max-ifd 0.9 --min-ifd 0.3 --name sft-ifd-band
    curate select sft-pool --method ifd --model runs/small --ratio ppl --name sft-superfiltered
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Selection, Selector, check_budget, rank_desc, take_by_budget
from curate.selectors.perplexity import answer_token_losses, has_answer, read_conversations
from curate.store import Version

__all__ = ["RATIOS", "IFDSelector", "without_question", "ifd_score"]

#: how the two answer losses are compared: the mean losses (the paper, Cherry) or their perplexities (Superfiltering)
RATIOS = ("loss", "ppl")


def without_question(messages: Sequence[dict]) -> list[dict]:
    """The conversation IFD's denominator scores: every non-assistant turn with its content emptied, in place.

    >>> without_question([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    [{'role': 'user', 'content': ''}, {'role': 'assistant', 'content': 'a'}]
    """
    return [m if m["role"] == "assistant" else {**m, "content": ""} for m in messages]


def ifd_score(conditioned: np.ndarray, alone: np.ndarray, ratio: str = "loss") -> tuple[float, float, float]:
    """(IFD, mean conditioned loss, mean alone loss) over the first k answer tokens of both (k = the shorter).

    ``ratio="loss"``: mean conditioned / mean alone; ``"ppl"``: exp(mean conditioned - mean alone). NaN when there is
    no token to compare or the alone loss is 0 (the ratio is undefined).

    >>> ifd_score(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0, 9.0]))
    (0.5, 2.0, 4.0)
    >>> round(ifd_score(np.array([1.0, 2.0, 3.0]), np.array([4.0, 4.0, 4.0]), ratio="ppl")[0], 6)
    0.135335
    """
    k = min(len(conditioned), len(alone))
    if k == 0:
        return math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        lc, la = float(np.mean(conditioned[:k])), float(np.mean(alone[:k]))
    if ratio == "ppl":
        value = math.exp(lc - la) if math.isfinite(lc - la) else math.nan
    else:
        value = lc / la if la != 0 and math.isfinite(la) and math.isfinite(lc) else math.nan
    return value, lc, la


def _real(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool | np.bool_)


class IFDSelector(Selector):
    """Keep the rows of highest IFD = L(answer | question) / L(answer) below --max-ifd.

    Args:
        max_ifd: Drop rows with IFD at or above this (the question does not help); none keeps them.
        min_ifd: Also drop rows with IFD below this floor.
        ratio: Ratio of the mean losses (loss) or of the perplexities (ppl).
        model: LM whose token losses give the IFD.
    """

    name = "ifd"
    requires = ("messages",)

    def __init__(
        self,
        *,
        budget: int | None = None,
        fraction: float | None = None,
        budget_tokens: int | None = None,
        max_ifd: float | None = 1.0,
        min_ifd: float | None = None,
        ratio: str = "loss",
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
        self.max_ifd = max_ifd
        self.min_ifd = min_ifd
        self.ratio = ratio
        self.model = model
        self.batch_tokens = batch_tokens
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker

    def _check(self) -> None:
        check_budget(self.budget, self.fraction, self.budget_tokens, required=False)
        if self.ratio not in RATIOS:
            raise CurateError(f"--ratio must be one of {', '.join(RATIOS)}, got {self.ratio!r}")
        if self.max_ifd is not None and not (_real(self.max_ifd) and self.max_ifd > 0):
            raise CurateError(f"--max-ifd must be a number > 0 (or none: no upper edge), got {self.max_ifd!r}")
        if self.min_ifd is not None and not (_real(self.min_ifd) and 0 <= self.min_ifd < math.inf):
            raise CurateError(f"--min-ifd must be a finite number >= 0 (or none), got {self.min_ifd!r}")
        if self.min_ifd is not None and self.max_ifd is not None and self.min_ifd >= self.max_ifd:
            raise CurateError(
                f"--min-ifd ({self.min_ifd}) must be below --max-ifd ({self.max_ifd}): the band is empty"
            )

    # ------------------------------------------------------------------ fit
    def fit(self, version: Version) -> Self:
        self._check()
        self.version_ = version
        convs, row_ids = read_conversations(version)
        live = [i for i, c in enumerate(convs) if has_answer(c)]
        self.loss_stats_: dict[str, dict[str, int]] = {"conditioned": {}, "alone": {}}
        common = {
            "model": self.model,
            "store": version.store,
            "row_ids": [row_ids[i] for i in live],
            "batch_tokens": self.batch_tokens,
            **self.engine_kwargs(),
        }
        cond = answer_token_losses(
            [convs[i] for i in live], src=version.ref, stats=self.loss_stats_["conditioned"], **common
        )
        alone = answer_token_losses(
            [without_question(convs[i]) for i in live],
            src=f"{version.ref} (questions emptied)",
            stats=self.loss_stats_["alone"],
            **common,
        )
        n = len(convs)
        scores, self.loss_conditioned_, self.loss_alone_ = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        self.reasons_ = ["no_answer_tokens"] * n
        for i, lc, la in zip(live, cond, alone, strict=True):
            if min(len(lc), len(la)) == 0:
                continue  # the answer lies beyond model_max_length
            scores[i], self.loss_conditioned_[i], self.loss_alone_[i] = ifd_score(lc, la, self.ratio)
            s = scores[i]
            if not math.isfinite(s):
                self.reasons_[i] = "nan_score"
            elif self.max_ifd is not None and s >= self.max_ifd:
                self.reasons_[i] = "ifd_ge_max"
            elif self.min_ifd is not None and s < self.min_ifd:
                self.reasons_[i] = "ifd_lt_min"
            else:
                self.reasons_[i] = ""
        self.scores_ = scores
        return self

    def identity(self) -> dict[str, Any]:
        from curate.models import resolve

        return {"model": resolve(self.model).identity}

    def token_counts(self) -> np.ndarray:
        from curate.scoring import response_token_counts

        return response_token_counts(self.version_, self.model)

    # ------------------------------------------------------------------ choose
    def select(self) -> Selection:
        """Rows in the band, highest IFD first (ties by row index), within the budget; every other row has a reason."""
        cand = np.array([i for i, r in enumerate(self.reasons_) if r == ""], dtype=np.int64)
        ranked = cand[rank_desc(self.scores_[cand])]
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
        """Kept rows in order with ``ifd_score``, ``ifd_rank`` (1 = first) and the two mean answer losses."""
        ours = ("ifd_score", "ifd_rank", "ifd_loss_conditioned", "ifd_loss_alone")
        out = super().transform(table.drop_columns([c for c in ours if c in table.column_names]), selection)
        for col, values in (("ifd_loss_conditioned", self.loss_conditioned_), ("ifd_loss_alone", self.loss_alone_)):
            out = out.append_column(col, pa.array(values[selection.order], type=pa.float64()))
        return out

    def stats(self, selection: Selection) -> dict[str, Any]:
        """The base counts, how many rows got an IFD and how many fell in the band, and the loss-cache counts."""
        finite = self.scores_[np.isfinite(self.scores_)]
        return {
            **super().stats(selection),
            "ifd": {
                "scored": int(len(finite)),
                "in_band": int(sum(r == "" for r in self.reasons_)),
                "median": float(np.median(finite)) if len(finite) else None,
            },
            "losses": self.loss_stats_,
        }
