"""TRL: ``trl-sft`` (SFTTrainer), ``trl-grpo`` (GRPOTrainer) and ``trl-dpo`` (DPOTrainer) jsonl files, read back.

``trl-sft`` writes ``<name>.jsonl`` with a conversational ``messages`` column and ``<name>.chat_template.jinja``, a
training chat template (``curate.formats.templates``: SmolLM2's by default, ``chat_template=chatml|none``) that the
printed ``SFTConfig(assistant_only_loss=True, chat_template_path=...)`` loads, since TRL cannot add
``{% generation %}`` markers to SmolLM2's template itself (or ``prompt`` and ``completion`` chat lists with
``style="prompt-completion"``, which needs no template); a pre-tokenised version goes out as ``input_ids`` +
``labels`` as they are, which SFTTrainer uses without tokenising again (-100 = no loss). ``trl-grpo`` writes
prompt-only rows: the ``prompt`` chat list, ``solution`` (the version's ``answer``, which
``trl.rewards.accuracy_reward`` reads) and the other columns, which GRPOTrainer hands to reward functions as keyword
arguments. ``trl-dpo`` writes conversational preference rows with an explicit prompt: ``prompt`` (the prompt's
turns), ``chosen`` and ``rejected`` (the assistant turns), plus ``margin``, the rewards and the prompt's columns;
DPOTrainer and RewardTrainer read the same rows (RewardTrainer also reads ``margin``: its loss is -log
sigmoid(r_chosen - r_rejected - margin) when the column is there; DPOTrainer ignores it).

Field names follow TRL's ``docs/source/dataset_formats.md`` (conversational, prompt-completion, prompt-only and
preference layouts), ``DPOTrainer._prepare_dataset`` (it tokenises ``prompt`` with the generation prompt and
``prompt + chosen`` / ``prompt + rejected``, so the turns must not repeat the prompt), ``SFTTrainer``'s
pre-tokenised path (a ``labels`` column is used as is) and ``SFTConfig.max_length`` (1024 by default, which truncates
pre-tokenised rows). Departure: TRL has no per-sample loss weights, so a ``weight`` column is exported but TRL
ignores it.

    curate export sft-fisher --format trl-sft --out exports/sft
    curate export math-curriculum --format trl-grpo --out exports/grpo
    curate export math-pairs --format trl-dpo --out exports/dpo
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.errors import CurateError, InputError
from curate.formats.base import (
    TOKEN_COLUMNS,
    ExportContext,
    Format,
    as_text,
    chat,
    data_files,
    extras,
    holds_pairs,
    pair_row,
    read_rows,
    require,
    require_pairs,
    require_prompt_rows,
    rows_of,
    shuffle_line,
    tokenizer_of,
    write_jsonl,
    write_text,
)
from curate.formats.templates import TRAINING_TEMPLATES
from curate.records import prompt_of

# Keyword names TRL's GRPOTrainer passes to reward functions itself; a dataset column of that name would clash.
_TRL_REWARD_RESERVED = (
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
    "environments",
)
_TRL_MAX_LENGTH = 1024


#: ``chat_template`` value that writes no template (the model's own must carry {% generation %} markers, or TRL
#: must know how to patch it)
NO_TEMPLATE = "none"


@dataclass
class TrlSftOptions:
    """Export options of ``--format trl-sft``."""

    style: str = "messages"
    """messages (one conversational column) or prompt-completion (loss on the completion only)."""
    chat_template: str = "smollm2"
    """With style messages: the training chat template written beside the data for assistant_only_loss: smollm2
    (SmolLM2's, curate's default model), chatml (plain ChatML), or none (the model's own template)."""

    def __post_init__(self) -> None:
        if self.style not in ("messages", "prompt-completion"):
            raise CurateError(f"--format trl-sft: style must be 'messages' or 'prompt-completion', got {self.style!r}")
        names = [*TRAINING_TEMPLATES, NO_TEMPLATE]
        if self.chat_template not in names:
            raise CurateError(
                f"--format trl-sft: chat_template must be one of {', '.join(names)}, got {self.chat_template!r}"
            )


class TrlSft(Format):
    """TRL SFTTrainer rows: conversational ``messages``, prompt-completion, or pre-tokenised ids and labels."""

    name = "trl-sft"
    suffix = ".jsonl"
    carries_labels = True
    options = TrlSftOptions

    def write(self, table: pa.Table, ctx: ExportContext, opts: TrlSftOptions) -> tuple[list[Path], list[str]]:
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        # TRL reads `prompt` (and `completion`) as the prompt-completion layout, so they must not sit beside
        # `messages`.
        drop = {"prompt", "completion"}
        tokenised = "input_ids" in table.column_names
        lines: list[str] = []
        extra_files: list[Path] = []
        if tokenised:
            cols = ["id", *TOKEN_COLUMNS, "messages", *extras(table, ("answer", "data_source", "weight"))]
            rows = rows_of(table, [c for c in dict.fromkeys(cols) if c not in drop])
            longest = max((len(r["input_ids"] or []) for r in rows), default=0)
            tok = tokenizer_of(ctx.version)
            lines += [
                "TRL SFT, pre-tokenised: TRL skips tokenisation and uses `labels` as they are (-100 = no loss)"
                + ("" if "labels" in table.column_names else "; without `labels` every token is trained on")
                + f". Train with the tokenizer that made these ids{f' ({tok})' if tok else ''}.",
            ]
            # SFTConfig.max_length defaults to 1024 and TRL truncates pre-tokenised rows to it.
            config = "max_length=None" if longest > _TRL_MAX_LENGTH else ""
            if config:
                lines.append(f"The longest row has {longest} tokens: max_length=None keeps TRL from cutting it.")
        elif opts.style == "messages":
            require(table, ctx, "messages", "the conversation; or pass style='prompt-completion'")
            cols = ["id", "messages", *extras(table, ("answer", "data_source", "weight"))]
            rows = rows_of(table, [c for c in dict.fromkeys(cols) if c not in drop])
            config = "assistant_only_loss=True"
            if opts.chat_template == NO_TEMPLATE:
                lines.append(
                    "TRL SFT, conversational `messages`. assistant_only_loss=True trains on assistant turns only and "
                    "needs a chat template with {% generation %} markers: the model's own, or one TRL patches "
                    "(trl.chat_template_utils); otherwise use style='prompt-completion'."
                )
            else:
                template = ctx.out_dir / f"{ctx.stem}.chat_template.jinja"
                write_text(template, TRAINING_TEMPLATES[opts.chat_template])
                extra_files.append(template)
                config += f', chat_template_path="{template}"'
                lines.append(
                    f"TRL SFT, conversational `messages`, trained on assistant turns only. {template.name} is the "
                    f"{opts.chat_template} chat template with {{% generation %}} markers around each assistant turn "
                    "(it renders the same text), which assistant_only_loss=True needs and TRL cannot add to it. "
                    "For a model with another template pass chat_template='none', or style='prompt-completion'."
                )
        else:
            require(table, ctx, "messages", "the conversation to split into prompt and completion")
            rows = []
            extra = [c for c in dict.fromkeys(["id", *extras(table, ("answer", "data_source", "weight"))])]
            for r in rows_of(table, ["messages", *extra]):
                messages = r.pop("messages") or []
                prompt = prompt_of(messages)
                rows.append({"id": r.pop("id"), "prompt": prompt, "completion": messages[len(prompt) :], **r})
            lines.append(
                "TRL SFT, conversational prompt-completion: loss on the completion only (TRL's default "
                "completion_only_loss)."
            )
            config = ""
        write_jsonl(path, rows)
        args = f'output_dir="out"{", " + config if config else ""}'
        if ctx.curriculum:
            args += ', shuffle_dataset=False, train_sampling_strategy="sequential"'
        lines += [
            "  from datasets import load_dataset",
            "  from trl import SFTConfig, SFTTrainer",
            f'  ds = load_dataset("json", data_files="{path}", split="train")',
            f'  SFTTrainer(model="<model>", train_dataset=ds, args=SFTConfig({args})).train()',
        ]
        if "weight" in table.column_names:
            lines.append(
                "The `weight` column is exported but TRL ignores it (no per-sample loss weights; "
                "`curate train sft` honours it)."
            )
        lines += shuffle_line(
            ctx.curriculum,
            'Keep it with SFTConfig(shuffle_dataset=False, train_sampling_strategy="sequential") as above.',
        )
        return [path, *extra_files], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".jsonl", ".json", ".parquet"), self.name)
        out = []
        for i, row in enumerate(read_rows(files)):
            row = dict(row)
            where = f"{src}: row {i}"
            if row.get("messages"):
                row["messages"] = chat(row["messages"], f"{where}: field 'messages'", "user")
                row["prompt"] = prompt_of(row["messages"])
            elif row.get("prompt") is not None and row.get("completion") is not None:
                prompt = chat(row.pop("prompt"), f"{where}: field 'prompt'", "user")
                completion = chat(row.pop("completion"), f"{where}: field 'completion'", "assistant")
                row["messages"], row["prompt"] = prompt + completion, prompt
            elif holds_pairs(list(row)):
                raise InputError(
                    f"{where}: a preference row (chosen, rejected): import it with --format {TrlDpo.name}"
                )
            elif row.get("input_ids") is None:
                raise InputError(
                    f"{where}: expected 'messages', 'prompt'+'completion' or pre-tokenised 'input_ids' "
                    "(a plain 'text' row has no turns: use curate import without --format)"
                )
            out.append(row)
        return out, files


class TrlGrpo(Format):
    """TRL GRPOTrainer prompt-only rows: ``prompt``, ``solution`` and the reward-function keyword columns."""

    name = "trl-grpo"
    suffix = ".jsonl"

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        require_prompt_rows(table, ctx)
        extra = [c for c in extras(table, ("data_source", "weight")) if c not in ("prompt", "solution")]
        clash = [c for c in extra if c in _TRL_REWARD_RESERVED]
        if clash:
            raise CurateError(
                f"{ctx.version.ref}: column(s) {', '.join(clash)} would clash with the keyword arguments "
                "TRL passes to reward functions; rename them before exporting to trl-grpo"
            )
        if "solution" in table.column_names and "answer" in table.column_names:
            raise CurateError(
                f"{ctx.version.ref}: has both 'answer' and 'solution'; trl-grpo writes 'answer' as "
                "'solution', so drop or rename one"
            )
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        rows = rows_of(table, ["id", "prompt", "answer", *extra], rename={"answer": "solution"})
        write_jsonl(path, rows)
        kwargs = [k for k in rows[0] if k != "prompt"] if rows else []
        args = 'output_dir="out"' + (", shuffle_dataset=False" if ctx.curriculum else "")
        lines = [
            "TRL GRPO, conversational prompt-only rows"
            + (
                "; `solution` is the ground truth that trl.rewards.accuracy_reward reads"
                if "answer" in table.column_names
                else "; no `answer` column, so no `solution` for rewards"
            )
            + ".",
            "  from datasets import load_dataset",
            "  from trl import GRPOConfig, GRPOTrainer",
            "  from trl.rewards import accuracy_reward",
            f'  ds = load_dataset("json", data_files="{path}", split="train")',
            '  GRPOTrainer(model="<model>", reward_funcs=accuracy_reward, train_dataset=ds,',
            f"              args=GRPOConfig({args})).train()",
            f"Reward functions receive these columns as keyword arguments: {', '.join(kwargs)}.",
            *shuffle_line(ctx.curriculum, "Keep it with GRPOConfig(shuffle_dataset=False) as above."),
        ]
        return [path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".jsonl", ".json", ".parquet"), self.name)
        out = []
        for i, row in enumerate(read_rows(files)):
            row = dict(row)
            row["prompt"] = chat(row.get("prompt"), f"{src}: row {i}: field 'prompt'", "user")
            if "solution" in row:
                row["answer"] = as_text(row.pop("solution"))
            out.append(row)
        return out, files


class TrlDpo(Format):
    """TRL DPOTrainer (and RewardTrainer) preference rows: ``prompt``, ``chosen``, ``rejected`` message lists."""

    name = "trl-dpo"
    suffix = ".jsonl"
    pairwise = True

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        require_pairs(table, ctx)
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        cols = ["id", "prompt", "chosen", "rejected", *extras(table, ("prompt_id", "answer", "data_source"))]
        write_jsonl(path, rows_of(table, list(dict.fromkeys(cols))))
        args = 'output_dir="out"' + (', train_sampling_strategy="sequential"' if ctx.curriculum else "")
        lines = [
            "TRL DPO, conversational preference rows with an explicit prompt: DPOTrainer applies the chat template to "
            "`prompt` and to `prompt` + `chosen` / `rejected`, and trains on the chosen and rejected turns.",
            "  from datasets import load_dataset",
            "  from trl import DPOConfig, DPOTrainer",
            f'  ds = load_dataset("json", data_files="{path}", split="train")',
            f'  DPOTrainer(model="<model>", train_dataset=ds, args=DPOConfig({args})).train()',
            "The same rows train a reward model with trl.RewardTrainer, which reads `margin` and subtracts it inside "
            "its loss, -log sigmoid(r_chosen - r_rejected - margin); drop the column for the plain Bradley-Terry "
            "loss. DPOTrainer ignores `margin` and the rewards.",
            *shuffle_line(ctx.curriculum, 'Keep it with DPOConfig(train_sampling_strategy="sequential") as above.'),
        ]
        return [path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".jsonl", ".json", ".parquet"), self.name)
        return [pair_row(row, f"{src}: row {i}") for i, row in enumerate(read_rows(files))], files
