"""verl: ``verl`` (RL, ``main_ppo``) and ``verl-sft`` (multi-turn SFT, ``fsdp_sft_trainer``) parquet files.

``verl`` writes ``<name>.parquet`` with one row per prompt: ``data_source``, ``prompt`` (a chat list; verl applies
the chat template), ``ability``, ``reward_model{style, ground_truth}`` (the version's ``answer``) and
``extra_info{index, split, id, dataset_version, dataset_ref, <other columns>}``, which verl hands to
``compute_score``. ``verl-sft`` writes ``<name>.parquet`` with the ``messages`` column and the other columns.
Reading back drops what the export made up (``index``, and ``ability`` / ``split`` when they were defaults), as
``curate.json``'s ``added`` records; a third-party file's ``extra_info`` keys become columns.

Field names follow verl's ``examples/data_preprocess/gsm8k.py`` and ``verl/utils/dataset/README.md``, and the
``data.multiturn.messages_key`` setting of ``fsdp_sft_trainer.py``. Departure: ``extra_info.index`` is the row's
position in the export (verl uses it as a per-row key); the curate row id goes to ``extra_info.id``.

    curate export math-curriculum --format verl --out exports/verl
    curate export sft-fisher --format verl-sft --out exports/verl-sft
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError, InputError
from curate.formats.base import (
    ExportContext,
    Format,
    as_text,
    chat,
    data_files,
    extras,
    meta_for,
    read_rows,
    require,
    require_prompt_rows,
    shuffle_line,
    write_parquet,
)
from curate.records import CANONICAL_TYPES, MESSAGES, prompt_of

_VERL_EXTRA_RESERVED = ("index", "id", "dataset_version", "dataset_ref")


@dataclass
class VerlOptions:
    """Export options of ``--format verl``."""

    split: str = "train"
    """The split written into extra_info (a ``split`` column of the version wins)."""
    ability: str | None = None
    """The ability tag of rows without an ``ability`` column value (default: general)."""
    reward_style: str = "rule"
    """rule (verl scores against reward_model.ground_truth, the answer) or model (a reward model scores)."""

    def __post_init__(self) -> None:
        if self.reward_style not in ("rule", "model"):
            raise CurateError(f"--format verl: reward_style must be 'rule' or 'model', got {self.reward_style!r}")


class Verl(Format):
    """verl RL parquet: one row per prompt, the ground truth in ``reward_model``, the rest in ``extra_info``."""

    name = "verl"
    suffix = ".parquet"
    options = VerlOptions

    def write(self, table: pa.Table, ctx: ExportContext, opts: VerlOptions) -> tuple[list[Path], list[str]]:
        require_prompt_rows(table, ctx)
        if "answer" not in table.column_names and opts.reward_style == "rule":
            raise CurateError(
                f"{ctx.version.ref}: --format verl with rule rewards needs an 'answer' column for "
                "reward_model.ground_truth; pass reward_style='model' for a reward model instead"
            )
        n = table.num_rows
        name = ctx.version.name
        extra = [c for c in extras(table, ("weight", "reward")) if c not in ("ability", "split")]
        clash = [c for c in extra if c in _VERL_EXTRA_RESERVED]
        if clash:
            raise CurateError(
                f"{ctx.version.ref}: column(s) {', '.join(clash)} clash with the extra_info keys curate "
                f"writes ({', '.join(_VERL_EXTRA_RESERVED)}); rename them before exporting to verl"
            )
        added_extra = ["index", "dataset_version", "dataset_ref"]
        added_cols: list[str] = []
        if "data_source" in table.column_names:
            data_source = pc.fill_null(table.column("data_source").cast(pa.string()), name)
        else:
            data_source = pa.array([name] * n, pa.string())
        if "ability" in table.column_names:
            abilities = pc.fill_null(table.column("ability").cast(pa.string()), opts.ability or "general")
        else:
            abilities = pa.array([opts.ability or "general"] * n, pa.string())
            added_cols.append("ability")
        truth = (
            table.column("answer").cast(pa.string())
            if "answer" in table.column_names
            else pa.array([None] * n, pa.string())
        )
        if "split" in table.column_names:
            splits = table.column("split").cast(pa.string())
        else:
            splits = pa.array([opts.split] * n, pa.string())
            added_extra.append("split")
        info_names = ["index", "split", "id", "dataset_version", "dataset_ref", *extra]
        info_arrays = [
            pa.array(range(n), pa.int64()),
            splits.combine_chunks() if isinstance(splits, pa.ChunkedArray) else splits,
            table.column("id").cast(pa.string()).combine_chunks(),
            pa.array([ctx.version.id] * n, pa.string()),
            pa.array([ctx.version.ref] * n, pa.string()),
            *[table.column(c).combine_chunks() for c in extra],
        ]
        out = pa.table(
            {
                "data_source": data_source,
                "prompt": table.column("prompt").cast(MESSAGES),
                "ability": abilities,
                "reward_model": pa.StructArray.from_arrays(
                    [
                        pa.array([opts.reward_style] * n, pa.string()),
                        truth.combine_chunks() if isinstance(truth, pa.ChunkedArray) else truth,
                    ],
                    names=["style", "ground_truth"],
                ),
                "extra_info": pa.StructArray.from_arrays(info_arrays, names=info_names),
            }
        )
        path = ctx.out_dir / f"{ctx.stem}.parquet"
        write_parquet(path, out)
        ctx.added = {"extra_info": added_extra, "columns": added_cols}
        sources = sorted(set(data_source.to_pylist()))
        shuffle = " data.shuffle=False" if ctx.curriculum else ""
        lines = [
            "verl RL parquet (one row per prompt; verl applies the chat template to `prompt`).",
            f"  python3 -m verl.trainer.main_ppo data.train_files={path} data.prompt_key=prompt "
            f"data.reward_fn_key=data_source{shuffle} ...",
            f"data_source values: {', '.join(sources[:8])}{' ...' if len(sources) > 8 else ''}. verl picks its "
            "built-in scorer by data_source (e.g. openai/gsm8k); for other sources pass "
            "custom_reward_function.path=<file.py> custom_reward_function.name=compute_score.",
            f"compute_score(data_source, solution_str, ground_truth, extra_info) gets extra_info keys: "
            f"{', '.join(info_names)}.",
            *shuffle_line(ctx.curriculum, "Keep it with data.shuffle=False as above."),
        ]
        return [path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".parquet",), self.name)
        added = meta_for(files[0]).get("added") or {"extra_info": ["index"], "columns": []}
        out = []
        for i, row in enumerate(read_rows(files)):
            where = f"{src}: row {i}"
            new: dict[str, Any] = {"prompt": chat(row.get("prompt"), f"{where}: field 'prompt'", "user")}
            if row.get("data_source") is not None:
                new["data_source"] = str(row["data_source"])
            reward = row.get("reward_model") or {}
            if not isinstance(reward, dict):
                raise InputError(f"{where}: field 'reward_model': expected {{style, ground_truth}}")
            if reward.get("ground_truth") is not None:
                new["answer"] = as_text(reward["ground_truth"])
            if "ability" not in added.get("columns", []) and row.get("ability") is not None:
                new["ability"] = row["ability"]
            info = row.get("extra_info") or {}
            for k, v in info.items() if isinstance(info, dict) else ():
                if k in added.get("extra_info", []):
                    continue
                if k == "id":
                    new["id"] = str(v)
                else:
                    new[f"extra_{k}" if k in CANONICAL_TYPES else k] = v
            for k, v in row.items():  # columns beside the verl ones pass through
                if k not in ("prompt", "data_source", "reward_model", "ability", "extra_info"):
                    new.setdefault(k, v)
            out.append(new)
        return out, files


class VerlSft(Format):
    """verl multi-turn SFT parquet: ``messages`` and the other columns."""

    name = "verl-sft"
    suffix = ".parquet"

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        require(table, ctx, "messages", "the multi-turn conversation")
        path = ctx.out_dir / f"{ctx.stem}.parquet"
        cols = list(dict.fromkeys(["id", "messages", *extras(table, ("answer", "data_source", "weight"))]))
        write_parquet(path, table.select(cols))
        lines = [
            "verl multi-turn SFT parquet (loss on assistant turns).",
            f"  torchrun -m verl.trainer.fsdp_sft_trainer data.train_files={path} data.multiturn.enable=true "
            "data.multiturn.messages_key=messages ...",
            *shuffle_line(
                ctx.curriculum,
                "verl's FSDP SFT trainer samples with shuffle=True (fixed in "
                "fsdp_sft_trainer.py), so it does not keep this order: train one stage per "
                "run to keep the curriculum.",
            ),
        ]
        return [path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".parquet",), self.name)
        out = []
        for i, row in enumerate(read_rows(files)):
            row = dict(row)
            row["messages"] = chat(row.get("messages"), f"{src}: row {i}: field 'messages'", "user")
            row["prompt"] = prompt_of(row["messages"])
            out.append(row)
        return out, files
