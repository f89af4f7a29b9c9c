"""verl: ``verl`` (RL, ``main_ppo``) and ``verl-sft`` (multi-turn SFT, ``sft_trainer``) parquet files.

``verl`` writes ``<name>.parquet`` with one row per prompt: ``data_source``, ``prompt`` (a chat list; verl applies
the chat template), ``ability``, ``reward_model{style, ground_truth}`` (the version's ``answer``) and
``extra_info{index, split, id, dataset_version, dataset_ref, answer, <other columns>}``, which verl hands to
``compute_score``. A ``data_source`` verl's built-in scorer knows under another name is written under verl's name
(``VERL_DATA_SOURCES``: ``gsm8k`` -> ``openai/gsm8k``, as ``verl.utils.reward_score.default_compute_score``
dispatches), the original kept in ``extra_info.curate_data_source``; for any other source the note names
``compute_score`` below (curate's ``math`` reward) as ``custom_reward_function``. ``verl-sft`` writes
``<name>.parquet`` with the ``messages`` column and the other columns. Reading back drops what the export made up
(``index``, ``answer``, and ``ability`` / ``split`` when they were defaults), as ``curate.json``'s ``added``
records, and restores the original ``data_source``; a third-party file's ``extra_info`` keys become columns.

Field names follow verl's ``examples/data_preprocess/gsm8k.py`` and ``verl/utils/dataset/README.md``; the SFT
command follows ``verl/trainer/sft_trainer.py`` and its ``config/sft_trainer_engine.yaml`` (``data.messages_key``,
``model.path``), which replaced ``fsdp_sft_trainer`` and its ``data.multiturn.*`` keys (verl 0.9.1). Departure:
``extra_info.index`` is the row's position in the export (verl uses it as a per-row key); the curate row id goes to
``extra_info.id``.

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
from curate.rewards import math_reward

_VERL_EXTRA_RESERVED = ("index", "id", "dataset_version", "dataset_ref", "answer", "curate_data_source")
#: the verl release whose entry points and config keys the notes print
VERL_VERSION = "0.9.1"
#: data sources verl's built-in scorer (``verl.utils.reward_score.default_compute_score``) knows under another name;
#: keys are lower-case. Names it knows as they are (``math``, ``openai/gsm8k``, ...) pass through unchanged.
VERL_DATA_SOURCES = {
    "gsm8k": "openai/gsm8k",
    "openai_gsm8k": "openai/gsm8k",
    "math500": "HuggingFaceH4/MATH-500",
    "math-500": "HuggingFaceH4/MATH-500",
    "math_500": "HuggingFaceH4/MATH-500",
    "math-lighteval": "DigitalLearningGmbH/MATH-lighteval",
    "math_lighteval": "DigitalLearningGmbH/MATH-lighteval",
    "geometry3k": "hiyouga/geometry3k",
    "geo3k": "hiyouga/geometry3k",
}
#: every data source ``default_compute_score`` dispatches on (besides the ``aime*`` prefix), verl 0.9.1
VERL_KNOWN_SOURCES = frozenset(
    {
        "openai/gsm8k",
        "lighteval/MATH",
        "DigitalLearningGmbH/MATH-lighteval",
        "HuggingFaceH4/MATH-500",
        "math_dapo",
        "math",
        "math_dapo_reasoning",
        "numina_aops_forum",
        "numina_synthetic_math",
        "numina_amc_aime",
        "numina_synthetic_amc",
        "numina_cn_k12",
        "numina_olympiads",
        "codecontests",
        "apps",
        "codeforces",
        "taco",
        "hiyouga/geometry3k",
        "searchR1_nq",
        "searchR1_triviaqa",
        "searchR1_popqa",
        "searchR1_hotpotqa",
        "searchR1_2wikimultihopqa",
        "searchR1_musique",
        "searchR1_bamboogle",
    }
)


def verl_data_source(name: str) -> str:
    """verl's name for a data source its built-in scorer knows, else ``name`` unchanged.

    >>> verl_data_source("gsm8k"), verl_data_source("GSM8K"), verl_data_source("toy")
    ('openai/gsm8k', 'openai/gsm8k', 'toy')
    """
    return VERL_DATA_SOURCES.get(name.lower(), name)


def verl_scores(name: str) -> bool:
    """Whether verl's built-in ``default_compute_score`` scores rows of this (verl-named) data source."""
    return name in VERL_KNOWN_SOURCES or name.startswith("aime")


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **_
) -> float:
    """verl ``custom_reward_function`` entry point: curate's ``math`` reward (the one ``curate rollout`` uses).

    ``custom_reward_function.path=pkg://curate.formats.verl custom_reward_function.name=compute_score`` in verl's
    command line.

    >>> compute_score("toy", "The answer is 4.", "4"), compute_score("toy", "The answer is 5.", "4")
    (1.0, 0.0)
    """
    return float(math_reward(solution_str, ground_truth))


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
            ours = pc.fill_null(table.column("data_source").cast(pa.string()), name).to_pylist()
        else:
            ours = [name] * n
        theirs = [verl_data_source(x) for x in ours]
        data_source = pa.array(theirs, pa.string())
        renamed = theirs != ours
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
        if "answer" in table.column_names:
            # where verl's own preprocessing (examples/data_preprocess/gsm8k.py) keeps the answer, beside the
            # ground truth: reward functions that read extra_info["answer"] find it
            info_names.append("answer")
            info_arrays.append(truth.combine_chunks() if isinstance(truth, pa.ChunkedArray) else truth)
            added_extra.append("answer")
        if renamed:
            info_names.append("curate_data_source")
            info_arrays.append(pa.array(ours, pa.string()))
            added_extra.append("curate_data_source")
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
        sources = sorted(set(theirs))
        unknown = [x for x in sources if not verl_scores(x)]
        shuffle = " data.shuffle=False" if ctx.curriculum else ""
        # pkg:// makes verl import the module by name (verl.utils.import_utils.load_module), not execute a file copy
        custom = f" custom_reward_function.path=pkg://{__name__} custom_reward_function.name=compute_score"
        lines = [
            f"verl {VERL_VERSION} RL parquet (one row per prompt; verl applies the chat template to `prompt`).",
            f"  python3 -m verl.trainer.main_ppo data.train_files={path} data.prompt_key=prompt "
            f"data.reward_fn_key=data_source{shuffle}{custom if unknown else ''} ...",
            f"data_source values: {', '.join(sources[:8])}{' ...' if len(sources) > 8 else ''}.",
        ]
        if renamed:
            mapped = sorted({f"{a} -> {b}" for a, b in zip(ours, theirs, strict=True) if a != b})
            lines.append(
                f"Renamed to the names verl's built-in scorer uses: {', '.join(mapped)} "
                "(the original is in extra_info.curate_data_source; curate import restores it)."
            )
        if unknown:
            lines.append(
                f"verl's built-in scorer (default_compute_score) does not know {', '.join(unknown[:4])}"
                f"{' ...' if len(unknown) > 4 else ''}: the command passes curate's math reward as "
                "custom_reward_function (compute_score in curate.formats.verl; curate must be installed where "
                "verl runs), or pass your own file and function there."
            )
        else:
            lines.append("verl's built-in scorer knows every data_source: no custom_reward_function needed.")
        lines += [
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
            if isinstance(info, dict) and info.get("curate_data_source") is not None:
                new["data_source"] = str(info["curate_data_source"])  # the name before the export renamed it
            for k, v in info.items() if isinstance(info, dict) else ():
                if k in added.get("extra_info", []):
                    continue
                if k == "id":
                    new["id"] = str(v)
                elif k == "answer" and new.get("answer") in (None, as_text(v)):
                    new["answer"] = as_text(v)  # where curate's export puts the answer, beside ground_truth
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
            f"verl {VERL_VERSION} multi-turn SFT parquet (MultiTurnSFTDataset: loss on assistant turns).",
            f"  torchrun --standalone --nnodes=1 --nproc_per_node=<gpus> -m verl.trainer.sft_trainer "
            f"data.train_files={path} data.messages_key=messages model.path=<model> ...",
            *shuffle_line(
                ctx.curriculum,
                "verl's SFT trainer samples with DistributedSampler(shuffle=True) (fixed in sft_trainer.py), so it "
                "does not keep this order: train one stage per run to keep the curriculum.",
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
