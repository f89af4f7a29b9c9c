"""Trainer-format exporters, and the importers that read those formats back into canonical rows.

What it computes. ``export_version`` writes one store version in the layout a trainer reads, plus a small
``curate.json`` beside the data (ref, version id, format, row count, files), and returns the command or config lines
that trainer needs. ``read_export`` / ``import_format`` turn such files (ours or anyone's in that layout) back into
canonical rows (``id``, ``messages`` / ``prompt``, ``answer``, ``data_source`` + extra columns).

======================  ====================================================  =========================================
format                  files                                                 columns
======================  ====================================================  =========================================
``trl-sft``             ``<name>.jsonl``                                      ``messages`` (or ``prompt`` and
                                                                              ``completion`` chat lists with
                                                                              ``style="prompt-completion"``);
                                                                              pre-tokenised versions: ``input_ids``
                                                                              + ``labels`` as they are
``trl-grpo``            ``<name>.jsonl``                                      ``prompt`` + ``solution`` (= ``answer``)
                                                                              + the other columns (reward kwargs)
``verl``                ``<name>.parquet``                                    ``data_source``, ``prompt``, ``ability``,
                                                                              ``reward_model{style, ground_truth}``,
                                                                              ``extra_info{index, split, id,
                                                                              dataset_version, dataset_ref, scores..}``
``verl-sft``            ``<name>.parquet``                                    ``messages`` (multi-turn SFT)
``openrlhf``            ``<name>.jsonl``                                      ``input``, ``label``, ``datasource``
``llamafactory``        ``<name>.jsonl`` + ``dataset_info.json`` entry        ``messages`` (sharegpt formatting with
                                                                              OpenAI role/content tags)
``hf``                  a ``save_to_disk`` folder + ``README.md`` card        every column, lineage in the card
``jsonl`` / ``parquet`` ``<name>.jsonl`` / ``<name>.parquet``                 every column as stored
======================  ====================================================  =========================================

Field names follow the trainers' own docs and code: TRL ``docs/source/dataset_formats.md`` and ``SFTTrainer``'s
pre-tokenised path (a ``labels`` column is used as is); verl ``examples/data_preprocess/gsm8k.py`` and
``verl/utils/dataset/README.md``; OpenRLHF's ``--data.input_key``/``--data.label_key`` flags; LLaMA-Factory
``data/README.md`` and its sharegpt converter (user/assistant turns must alternate after an optional system turn).

A curriculum version (a ``stage`` column, or a ``<method>_rank`` column) is written in that order (stage, then the
latest rank), and the note says how to turn the trainer's shuffling off. Token-level labels only go to formats that
can hold them (``trl-sft``, ``hf``, ``parquet``, ``jsonl``); any other format refuses such a version.

Outputs: ``--out`` must lie outside the store (``curate.outputs.check_out``). A non-empty ``--out`` folder, or an
existing ``--out`` file, needs ``--overwrite``, unless it holds this same export (same version, format and options,
every file matching the sha256 ``curate.json`` recorded), which is written again. Each file is written to a
temporary name and renamed into place; temporaries a killed export left are removed by the next export there.

Departures: verl's ``extra_info.index`` is the row's position in the export (verl uses it as a per-row key); the
curate row id goes to ``extra_info.id``. RL exports carry the prompt, the answer and the non-canonical columns
(scores, ranks, stage, pass rate), not the SFT ``messages``. TRL has no per-sample loss weights, so a ``weight``
column is exported but TRL ignores it. ``hf`` replaces its whole output folder (only an earlier ``hf`` export).

    curate export math-curriculum --format verl --out exports/verl
    curate import exports/verl --name math-back --format verl
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import CurateError, InputError
from curate.outputs import atomic_write, check_out, remove, sweep_temps, temp_path
from curate.records import CANONICAL_TYPES, MESSAGES, ROLES, prompt_of, row_id, to_table
from curate.store import Store, Version, canonical_json, curate_version, sha256_file

MANIFEST = "curate.json"
CARRIES_LABELS = ("trl-sft", "hf", "parquet", "jsonl")
TOKEN_COLUMNS = ("input_ids", "labels")
# Columns of a long-format rollouts version: one row per sampled completion, so a prompt repeats.
_LONG_FORMAT = ("prompt_id", "sample")
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
_VERL_EXTRA_RESERVED = ("index", "id", "dataset_version", "dataset_ref")
_LLAMAFACTORY_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
    "observation_tag": "tool",
}


@dataclass
class ExportResult:
    """What an export wrote: the folder, the files (data first, ``curate.json`` last) and the trainer note."""

    out_dir: Path
    files: list[Path]
    note: str

    def __str__(self) -> str:
        return self.note


@dataclass
class _Ctx:
    version: Version
    out_dir: Path
    stem: str
    fmt: str
    curriculum: str | None
    # Fields an exporter made up (not columns of the version): the importer drops them again.
    added: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- file writing
def _jsonable(v: Any) -> Any:
    # Strict JSON readers (pyarrow's, used by `datasets`) reject NaN and Infinity: a missing score becomes null.
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(_jsonable(row), ensure_ascii=False, allow_nan=False, default=str) + "\n")

    return atomic_write(path, write)


def _write_parquet(path: Path, table: pa.Table) -> Path:
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n"))


# ---------------------------------------------------------------------------------------------- shared checks
def _require(table: pa.Table, ctx: _Ctx, column: str, why: str) -> None:
    if column not in table.column_names:
        raise CurateError(
            f"{ctx.version.ref}: --format {ctx.fmt} needs a {column!r} column ({why}); "
            f"the version has: {', '.join(table.column_names)}"
        )
    if nulls := table.column(column).null_count:
        first = table.column(column).is_null().to_pylist().index(True)
        raise CurateError(f"{ctx.version.ref}: row {first}: field {column!r}: empty ({nulls} rows have none)")


def _require_prompt_rows(table: pa.Table, ctx: _Ctx) -> None:
    _require(table, ctx, "prompt", "an RL prompt as a list of {role, content} turns")
    if all(c in table.column_names for c in _LONG_FORMAT):
        raise CurateError(
            f"{ctx.version.ref}: --format {ctx.fmt} wants one row per prompt, but this is a rollouts version (one row "
            "per sampled completion: prompt_id, sample); select or aggregate it to prompts first "
            "(e.g. curate select REF --method difficulty)"
        )


def _extras(table: pa.Table, keep_canonical: Sequence[str] = ()) -> list[str]:
    """Non-canonical columns (scores, ranks, stage, pass rate, tags ...) plus the canonical ones asked for."""
    return [c for c in table.column_names if c not in CANONICAL_TYPES or c in keep_canonical]


def _rows(table: pa.Table, columns: Sequence[str], rename: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rename = rename or {}
    sub = table.select([c for c in columns if c in table.column_names])
    return [{rename.get(k, k): v for k, v in r.items()} for r in sub.to_pylist()]


def _curriculum(table: pa.Table) -> tuple[pa.Table, str | None]:
    """Rows in curriculum order: ``stage`` ascending, then the latest ``*_rank``; ties keep stored order."""
    keys = ["stage"] if "stage" in table.column_names else []
    ranks = [c for c in table.column_names if c.endswith("_rank")]
    if ranks:
        keys.append(ranks[-1])  # a selector appends its rank column last, so the last one is the latest op's
    if not keys:
        return table, None
    pos = "__curate_row__"
    indexed = table.append_column(pos, pa.array(range(table.num_rows), pa.int64()))
    # pyarrow puts nulls last by default: rows without a stage or rank go after the curriculum.
    order = pc.sort_indices(indexed, sort_keys=[(k, "ascending") for k in [*keys, pos]])
    return table.take(order), ", then ".join(keys)


def _shuffle_line(curriculum: str | None, how: str) -> list[str]:
    if curriculum is None:
        return []
    return [f"Curriculum: rows are in {curriculum} order. {how}"]


def _tokenizer_of(version: Version) -> str | None:
    m = version.manifest
    for where in (m, m.get("op", {}), m.get("stats", {})):
        for key in ("tokenizer", "model"):
            if isinstance(where.get(key), str):
                return where[key]
    return None


# ---------------------------------------------------------------------------------------------- exporters
def _export_plain(table: pa.Table, ctx: _Ctx) -> tuple[list[Path], list[str]]:
    path = ctx.out_dir / f"{ctx.stem}.{ctx.fmt}"
    if ctx.fmt == "parquet":
        _write_parquet(path, table)
        load = f'load_dataset("parquet", data_files="{path}", split="train")'
    else:
        _write_jsonl(path, table.to_pylist())
        load = f'load_dataset("json", data_files="{path}", split="train")'
    return [path], [
        f"Plain {ctx.fmt}, every column as stored. With datasets: {load}",
        *_shuffle_line(ctx.curriculum, "Turn your trainer's shuffling off to keep it."),
    ]


def _export_trl_sft(table: pa.Table, ctx: _Ctx, *, style: str = "messages") -> tuple[list[Path], list[str]]:
    if style not in ("messages", "prompt-completion"):
        raise CurateError(f"--format trl-sft: style must be 'messages' or 'prompt-completion', got {style!r}")
    path = ctx.out_dir / f"{ctx.stem}.jsonl"
    # TRL reads `prompt` (and `completion`) as the prompt-completion layout, so they must not sit beside `messages`.
    drop = {"prompt", "completion"}
    tokenised = "input_ids" in table.column_names
    lines: list[str] = []
    if tokenised:
        cols = ["id", *TOKEN_COLUMNS, "messages", *_extras(table, ("answer", "data_source", "weight"))]
        rows = _rows(table, [c for c in dict.fromkeys(cols) if c not in drop])
        longest = max((len(r["input_ids"] or []) for r in rows), default=0)
        tok = _tokenizer_of(ctx.version)
        lines += [
            "TRL SFT, pre-tokenised: TRL skips tokenisation and uses `labels` as they are (-100 = no loss)"
            + ("" if "labels" in table.column_names else "; without `labels` every token is trained on")
            + f". Train with the tokenizer that made these ids{f' ({tok})' if tok else ''}.",
        ]
        # SFTConfig.max_length defaults to 1024 and TRL truncates pre-tokenised rows to it.
        config = "max_length=None" if longest > _TRL_MAX_LENGTH else ""
        if config:
            lines.append(f"The longest row has {longest} tokens: max_length=None keeps TRL from cutting it.")
    elif style == "messages":
        _require(table, ctx, "messages", "the conversation; or pass style='prompt-completion'")
        cols = ["id", "messages", *_extras(table, ("answer", "data_source", "weight"))]
        rows = _rows(table, [c for c in dict.fromkeys(cols) if c not in drop])
        lines.append(
            "TRL SFT, conversational `messages`. assistant_only_loss=True trains on assistant turns only but "
            "needs a chat template with {% generation %} markers; otherwise use style='prompt-completion'."
        )
        config = "assistant_only_loss=True"
    else:
        _require(table, ctx, "messages", "the conversation to split into prompt and completion")
        rows = []
        extra = [c for c in dict.fromkeys(["id", *_extras(table, ("answer", "data_source", "weight"))])]
        for r in _rows(table, ["messages", *extra]):
            messages = r.pop("messages") or []
            prompt = prompt_of(messages)
            rows.append({"id": r.pop("id"), "prompt": prompt, "completion": messages[len(prompt) :], **r})
        lines.append(
            "TRL SFT, conversational prompt-completion: loss on the completion only (TRL's default "
            "completion_only_loss)."
        )
        config = ""
    _write_jsonl(path, rows)
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
    lines += _shuffle_line(
        ctx.curriculum, 'Keep it with SFTConfig(shuffle_dataset=False, train_sampling_strategy="sequential") as above.'
    )
    return [path], lines


def _export_trl_grpo(table: pa.Table, ctx: _Ctx) -> tuple[list[Path], list[str]]:
    _require_prompt_rows(table, ctx)
    extras = [c for c in _extras(table, ("data_source", "weight")) if c not in ("prompt", "solution")]
    clash = [c for c in extras if c in _TRL_REWARD_RESERVED]
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
    rows = _rows(table, ["id", "prompt", "answer", *extras], rename={"answer": "solution"})
    _write_jsonl(path, rows)
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
        *_shuffle_line(ctx.curriculum, "Keep it with GRPOConfig(shuffle_dataset=False) as above."),
    ]
    return [path], lines


def _export_verl(
    table: pa.Table, ctx: _Ctx, *, split: str = "train", ability: str | None = None, reward_style: str = "rule"
) -> tuple[list[Path], list[str]]:
    _require_prompt_rows(table, ctx)
    if reward_style not in ("rule", "model"):
        raise CurateError(f"--format verl: reward_style must be 'rule' or 'model', got {reward_style!r}")
    if "answer" not in table.column_names and reward_style == "rule":
        raise CurateError(
            f"{ctx.version.ref}: --format verl with rule rewards needs an 'answer' column for "
            "reward_model.ground_truth; pass reward_style='model' for a reward model instead"
        )
    n = table.num_rows
    name = ctx.version.name
    extras = [c for c in _extras(table, ("weight", "reward")) if c not in ("ability", "split")]
    clash = [c for c in extras if c in _VERL_EXTRA_RESERVED]
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
        abilities = pc.fill_null(table.column("ability").cast(pa.string()), ability or "general")
    else:
        abilities = pa.array([ability or "general"] * n, pa.string())
        added_cols.append("ability")
    truth = (
        table.column("answer").cast(pa.string())
        if "answer" in table.column_names
        else pa.array([None] * n, pa.string())
    )
    if "split" in table.column_names:
        splits = table.column("split").cast(pa.string())
    else:
        splits = pa.array([split] * n, pa.string())
        added_extra.append("split")
    info_names = ["index", "split", "id", "dataset_version", "dataset_ref", *extras]
    info_arrays = [
        pa.array(range(n), pa.int64()),
        splits.combine_chunks() if isinstance(splits, pa.ChunkedArray) else splits,
        table.column("id").cast(pa.string()).combine_chunks(),
        pa.array([ctx.version.id] * n, pa.string()),
        pa.array([ctx.version.ref] * n, pa.string()),
        *[table.column(c).combine_chunks() for c in extras],
    ]
    out = pa.table(
        {
            "data_source": data_source,
            "prompt": table.column("prompt").cast(MESSAGES),
            "ability": abilities,
            "reward_model": pa.StructArray.from_arrays(
                [
                    pa.array([reward_style] * n, pa.string()),
                    truth.combine_chunks() if isinstance(truth, pa.ChunkedArray) else truth,
                ],
                names=["style", "ground_truth"],
            ),
            "extra_info": pa.StructArray.from_arrays(info_arrays, names=info_names),
        }
    )
    path = ctx.out_dir / f"{ctx.stem}.parquet"
    _write_parquet(path, out)
    ctx.added = {"extra_info": added_extra, "columns": added_cols}
    sources = sorted(set(data_source.to_pylist()))
    shuffle = " data.shuffle=False" if ctx.curriculum else ""
    lines = [
        "verl RL parquet (one row per prompt; verl applies the chat template to `prompt`).",
        f"  python3 -m verl.trainer.main_ppo data.train_files={path} data.prompt_key=prompt "
        f"data.reward_fn_key=data_source{shuffle} ...",
        f"data_source values: {', '.join(sources[:8])}{' ...' if len(sources) > 8 else ''}. verl picks its built-in "
        "scorer by data_source (e.g. openai/gsm8k); for other sources pass "
        "custom_reward_function.path=<file.py> custom_reward_function.name=compute_score.",
        f"compute_score(data_source, solution_str, ground_truth, extra_info) gets extra_info keys: "
        f"{', '.join(info_names)}.",
        *_shuffle_line(ctx.curriculum, "Keep it with data.shuffle=False as above."),
    ]
    return [path], lines


def _export_verl_sft(table: pa.Table, ctx: _Ctx) -> tuple[list[Path], list[str]]:
    _require(table, ctx, "messages", "the multi-turn conversation")
    path = ctx.out_dir / f"{ctx.stem}.parquet"
    cols = list(dict.fromkeys(["id", "messages", *_extras(table, ("answer", "data_source", "weight"))]))
    _write_parquet(path, table.select(cols))
    lines = [
        "verl multi-turn SFT parquet (loss on assistant turns).",
        f"  torchrun -m verl.trainer.fsdp_sft_trainer data.train_files={path} data.multiturn.enable=true "
        "data.multiturn.messages_key=messages ...",
        *_shuffle_line(
            ctx.curriculum,
            "verl's FSDP SFT trainer samples with shuffle=True (fixed in "
            "fsdp_sft_trainer.py), so it does not keep this order: train one stage per "
            "run to keep the curriculum.",
        ),
    ]
    return [path], lines


def _export_openrlhf(table: pa.Table, ctx: _Ctx) -> tuple[list[Path], list[str]]:
    _require_prompt_rows(table, ctx)
    extras = [c for c in _extras(table, ("weight",)) if c not in ("input", "label", "datasource")]
    path = ctx.out_dir / f"{ctx.stem}.jsonl"
    rows = _rows(
        table,
        ["id", "prompt", "answer", "data_source", *extras],
        rename={"prompt": "input", "answer": "label", "data_source": "datasource"},
    )
    _write_jsonl(path, rows)
    label = "answer" in table.column_names
    flags = f"--data.prompt_dataset {path} --data.input_key input" + (" --data.label_key label" if label else "")
    old = f"--prompt_data {path} --input_key input" + (" --label_key label" if label else "")
    lines = [
        "OpenRLHF prompts jsonl: `input` is a chat list, `label` goes to your reward_func(queries, prompts, labels), "
        "`datasource` is read per row.",
        f"  python3 -m openrlhf.cli.train_ppo_ray {flags} --data.apply_chat_template ...",
        f"  (releases before the 2026-04 flag rename: {old} --apply_chat_template)",
        *_shuffle_line(
            ctx.curriculum,
            "OpenRLHF's prompt dataloader shuffles and has no documented switch to keep "
            "file order: train one stage per run to keep the curriculum.",
        ),
    ]
    return [path], lines


def _check_alternation(table: pa.Table, ctx: _Ctx) -> None:
    ids = table.column("id").to_pylist()
    for i, messages in enumerate(table.column("messages").to_pylist()):
        turns = messages or []
        if turns and turns[0]["role"] == "system":
            turns = turns[1:]
        roles = [m["role"] for m in turns]
        bad = next((j for j, r in enumerate(roles) if r not in (("user", "tool"), ("assistant",))[j % 2]), None)
        if bad is not None or len(roles) % 2 or not roles:
            why = f"turn {bad} is {roles[bad]!r}" if bad is not None else f"{len(roles)} turns after the system turn"
            raise CurateError(
                f"{ctx.version.ref}: row {i} (id {ids[i]}): field 'messages': LLaMA-Factory needs user/assistant "
                f"turns alternating after an optional first system turn and ending with the assistant ({why}); "
                "it would skip this row"
            )


def _export_llamafactory(
    table: pa.Table, ctx: _Ctx, *, dataset_name: str | None = None
) -> tuple[list[Path], list[str]]:
    _require(table, ctx, "messages", "the conversation")
    _check_alternation(table, ctx)
    name = dataset_name or ctx.stem
    path = ctx.out_dir / f"{ctx.stem}.jsonl"
    cols = list(dict.fromkeys(["id", "messages", *_extras(table, ("answer", "data_source", "weight"))]))
    _write_jsonl(path, _rows(table, cols))
    info_path = ctx.out_dir / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CurateError(f"{info_path}: exists but is not valid JSON ({e}); fix or remove it") from None
        if not isinstance(info, dict):
            raise CurateError(f"{info_path}: exists but is not a JSON object")
    info[name] = {
        "file_name": path.name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": dict(_LLAMAFACTORY_TAGS),
    }
    _write_json(info_path, info)
    lines = [
        f'LLaMA-Factory: registered as "{name}" in {info_path} (sharegpt formatting, OpenAI role/content tags).',
        "  llamafactory-cli train config.yaml, with config.yaml holding:",
        "    stage: sft",
        f"    dataset: {name}",
        f"    dataset_dir: {ctx.out_dir}",
        "    template: <your model's template, e.g. qwen>",
    ]
    if ctx.curriculum:
        lines.append("    disable_shuffling: true")
    lines += _shuffle_line(ctx.curriculum, "Keep it with disable_shuffling: true as above.")
    return [path, info_path], lines


def _card(table: pa.Table, ctx: _Ctx) -> str:
    from curate.store import lineage

    v = ctx.version
    tree = lineage(v, store=v.store)

    def walk(node: dict[str, Any], depth: int) -> list[str]:
        op = dict(node.get("op") or {})
        what = op.pop("name", "?")
        params = canonical_json(op)
        params = params if len(params) <= 240 else params[:237] + "..."
        rows = f", {node['rows']} rows" if node.get("rows") is not None else ""
        out = [f"{'  ' * depth}- `{node['ref']}` (id `{node['id']}`): {what} {params}{rows}"]
        for p in node.get("parents", []):
            out += walk(p, depth + 1)
        return out

    schema = "\n".join(f"| `{f.name}` | `{f.type}` |" for f in table.schema)
    order = (
        f"\nRows are in {ctx.curriculum} order (a curriculum): turn shuffling off to keep it.\n"
        if ctx.curriculum
        else ""
    )
    return (
        f"---\npretty_name: {v.name}\ntags:\n- curate\n---\n\n# {v.ref}\n\n"
        f"Exported by curate {curate_version()} from version `{v.id}` of `{v.name}` ({table.num_rows} rows).\n"
        f"{order}\n## Columns\n\n| column | type |\n|---|---|\n{schema}\n\n"
        f"## Lineage\n\n" + "\n".join(walk(tree, 0)) + "\n\n"
        f'## Load\n\n```python\nfrom datasets import load_from_disk\nds = load_from_disk("{ctx.out_dir}")\n```\n'
    )


def _export_hf(table: pa.Table, ctx: _Ctx) -> tuple[list[Path], list[str]]:
    import datasets
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    out = ctx.out_dir
    # Both beside `out` under names sweep_temps knows: a kill between the two renames leaves `old` for the next
    # export to remove, never a half-written `out`.
    stage, old = temp_path(out), temp_path(out)
    quiet = are_progress_bars_disabled()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        disable_progress_bars()  # a bar per export is noise; the CLI prints the note instead
        datasets.Dataset(table).save_to_disk(str(stage))
        (stage / "README.md").write_text(_card(table, ctx))
        if out.exists():
            os.rename(out, old)
        os.rename(stage, out)
    except BaseException:
        remove(stage)
        if old.exists() and not out.exists():
            os.rename(old, out)
        raise
    finally:
        if not quiet:
            enable_progress_bars()
    remove(old)
    files = sorted(p for p in out.iterdir() if p.is_file() and p.name != MANIFEST)
    lines = [
        "Hugging Face dataset folder (save_to_disk) with a dataset card (README.md) holding the lineage.",
        f'  from datasets import load_from_disk; ds = load_from_disk("{out}")',
        *_shuffle_line(ctx.curriculum, "Turn your trainer's shuffling off to keep it."),
    ]
    return files, lines


EXPORTERS: dict[str, Callable[..., tuple[list[Path], list[str]]]] = {
    "trl-sft": _export_trl_sft,
    "trl-grpo": _export_trl_grpo,
    "verl": _export_verl,
    "verl-sft": _export_verl_sft,
    "openrlhf": _export_openrlhf,
    "llamafactory": _export_llamafactory,
    "hf": _export_hf,
    "jsonl": _export_plain,
    "parquet": _export_plain,
}
# The single data file each format writes, so `--out file.ext` can name it directly.
_FILE_SUFFIX = {
    "trl-sft": ".jsonl",
    "trl-grpo": ".jsonl",
    "openrlhf": ".jsonl",
    "jsonl": ".jsonl",
    "verl": ".parquet",
    "verl-sft": ".parquet",
    "parquet": ".parquet",
}


def _options(fmt: str) -> list[str]:
    sig = inspect.signature(EXPORTERS[fmt])
    return [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


# The data file each format writes in a folder export (hf writes a whole folder).
_DATA_SUFFIX = {**_FILE_SUFFIX, "llamafactory": ".jsonl"}


def _out_location(out: Path, fmt: str, version: Version) -> tuple[Path, str, Path | None]:
    """The folder to write in, the data file stem, and the file itself when ``out`` names one."""
    suffix = _FILE_SUFFIX.get(fmt)
    if suffix and out.suffix == suffix:
        if out.is_dir():
            raise CurateError(f"--out {out}: a folder; a --out ending in {suffix} names the file to write")
        return out.parent, out.stem, out
    if out.exists() and not out.is_dir():
        raise CurateError(f"--out {out}: an existing file; --format {fmt} writes into a directory")
    if fmt == "hf" and out.is_dir() and any(out.iterdir()) and _meta_for(out).get("format") != "hf":
        raise CurateError(
            f"--out {out}: a non-empty directory that is not an hf export by curate; the hf format "
            "replaces the whole folder, so pick an empty or new one"
        )
    return out, version.name, None


def _file_sums(folder: Path, names: Sequence[str]) -> dict[str, str]:
    return {n: sha256_file(folder / n) for n in names}


def _same_export(out_dir: Path, single: Path | None, version: Version, fmt: str, options: dict[str, Any]) -> bool:
    """Whether ``out`` already holds this very export, untouched since: writing it again loses nothing."""
    meta = _meta_for(single or out_dir)
    files = meta.get("files")
    sums = meta.get("sha256")
    if (
        meta.get("version_id") != version.id
        or meta.get("name") != version.name
        or meta.get("format") != fmt
        or meta.get("options") != options
        or not isinstance(files, list)
        or not all(isinstance(n, str) and n and Path(n).name == n for n in files)
        or not isinstance(sums, dict)
        or set(files) != set(sums)
    ):
        return False
    if fmt == "hf":
        # hf replaces the folder: anything beside its own files would be lost.
        if {p.name for p in out_dir.iterdir()} != {*files, MANIFEST}:
            return False
    else:
        data = single.name if single else f"{version.name}{_DATA_SUFFIX[fmt]}"
        if data not in files:
            return False
    return all((out_dir / n).is_file() and sha256_file(out_dir / n) == sums[n] for n in files)


def _check_overwrite(
    out_dir: Path, single: Path | None, version: Version, fmt: str, options: dict[str, Any], overwrite: bool
) -> None:
    if overwrite:
        return
    if single is not None:
        if not single.exists():
            return
        what = "exists"
    else:
        if not out_dir.is_dir() or not any(out_dir.iterdir()):
            return
        what = "is a non-empty folder"
    if _same_export(out_dir, single, version, fmt, options):
        return
    raise CurateError(
        f"--out {single or out_dir}: {what}; pass --overwrite (overwrite=True) to write over "
        f"{'it' if single else 'the files of the same name'}, or choose another --out"
    )


def holds_export(out: str | Path, format: str) -> bool:
    """Whether ``out`` (a folder, or the file a ``--out`` names) holds an earlier curate export in ``format``.

    >>> holds_export("exports/verl", "verl")   # doctest: +SKIP
    True
    """
    path = Path(out).expanduser()
    return path.exists() and _meta_for(path).get("format") == format


def export_version(
    version: Version,
    *,
    format: str,
    out: str | Path,
    drop_labels: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> ExportResult:
    """Write ``version`` in a trainer's format under ``out``; returns the files and the note to print.

    ``out`` must lie outside the store. An existing non-empty folder (or an existing file, when ``out`` names
    one) needs ``overwrite=True``, unless it holds this same export, untouched since it was written.

    >>> r = export_version(curate.load("math-curriculum"), format="verl", out="exports/verl")   # doctest: +SKIP
    >>> print(r.note)                                                                           # doctest: +SKIP
    """
    if format not in EXPORTERS:
        raise CurateError(f"unknown export format {format!r} (available: {', '.join(sorted(EXPORTERS))})")
    accepted = _options(format)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise CurateError(
            f"--format {format}: unknown option(s) {', '.join(unknown)} "
            f"(accepted: {', '.join([*accepted, 'drop_labels']) or 'none'})"
        )
    recorded = dict(sorted({**options, **({"drop_labels": True} if drop_labels else {})}.items()))
    out_path = check_out(out, version.store, replaces=format == "hf")
    out_dir, stem, single = _out_location(out_path, format, version)
    sweep_temps(out_dir)
    if format == "hf":
        sweep_temps(out_dir.parent)  # hf stages the whole folder beside it
    _check_overwrite(out_dir, single, version, format, recorded, overwrite)
    table = version.to_arrow()
    if table.num_rows == 0:
        raise CurateError(f"{version.ref}: no rows to export")
    token_cols = [c for c in TOKEN_COLUMNS if c in table.column_names]
    if token_cols and format not in CARRIES_LABELS:
        if not drop_labels:
            raise CurateError(
                f"{version.ref}: rows carry token-level labels ({', '.join(token_cols)}) and --format {format} "
                f"cannot hold them; formats that can: {', '.join(CARRIES_LABELS)} "
                "(or pass drop_labels=True / --drop-labels to export the text without the token masks)"
            )
        table = table.drop_columns(token_cols)
    table, curriculum = _curriculum(table)
    ctx = _Ctx(version=version, out_dir=out_dir, stem=stem, fmt=format, curriculum=curriculum)
    files, lines = EXPORTERS[format](table, ctx, **options)
    meta = {
        "ref": version.ref,
        "name": version.name,
        "version_id": version.id,
        "format": format,
        "rows": table.num_rows,
        "files": [p.name for p in files],
        "sha256": _file_sums(out_dir, [p.name for p in files]),
        "options": recorded,
        "curriculum": curriculum,
        "added": ctx.added,
        "curate": curate_version(),
    }
    manifest = _write_json(out_dir / MANIFEST, meta)
    head = f"Exported {version.ref} (id {version.id}, {table.num_rows} rows) as {format} to {out_dir}"
    return ExportResult(out_dir=out_dir, files=[*files, manifest], note="\n".join([head, *lines]))


# ---------------------------------------------------------------------------------------------- importers
def _meta_for(path: Path) -> dict[str, Any]:
    folder = path if path.is_dir() else path.parent
    p = folder / MANIFEST
    if not p.exists():
        return {}
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if not isinstance(meta, dict):
        return {}
    # A curate.json written for another file in the same folder says nothing about this one.
    files = meta.get("files")
    if path.is_file() and (not isinstance(files, list) or path.name not in files):
        return {}
    return meta


def _data_files(path: Path, suffixes: tuple[str, ...], fmt: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or directory")
    meta = _meta_for(path)
    if meta.get("files"):
        files = [path / f for f in meta["files"] if f.endswith(suffixes) and (path / f).is_file()]
    else:
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.name.endswith(suffixes) and p.name not in (MANIFEST, "dataset_info.json")
        )
    if not files:
        raise InputError(f"{path}: no {' / '.join(suffixes)} data file for --format {fmt}")
    return files


def _read_rows(files: Sequence[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.name.endswith(".parquet"):
            try:
                rows += pq.read_table(f).to_pylist()
            except (pa.ArrowInvalid, OSError) as e:
                raise InputError(f"{f}: not a readable Parquet file ({e})") from None
        elif f.name.endswith(".json"):
            try:
                obj = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{f}: invalid JSON ({e})") from None
            if not isinstance(obj, list):
                raise InputError(f"{f}: expected a JSON list of rows")
            rows += obj
        else:
            with open(f, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{f}: line {lineno}: invalid JSON ({e})") from None
                    if not isinstance(obj, dict):
                        raise InputError(f"{f}: line {lineno}: expected a JSON object")
                    rows.append(obj)
    return rows


def _chat(value: Any, where: str, default_role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: expected a non-empty list of {{role, content}} messages or a string")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}[{j}]: expected an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise InputError(f"{where}[{j}].role: unknown role {m['role']!r} (expected one of {', '.join(ROLES)})")
        out.append({"role": m["role"], "content": "" if m["content"] is None else str(m["content"])})
    return out


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]  # verl's README shows ground_truth as a one-element list
    return canonical_json(value)


def _import_trl_sft(path: Path, src: str) -> tuple[list[dict[str, Any]], list[Path]]:
    files = _data_files(path, (".jsonl", ".json", ".parquet"), "trl-sft")
    out = []
    for i, row in enumerate(_read_rows(files)):
        row = dict(row)
        where = f"{src}: row {i}"
        if row.get("messages"):
            row["messages"] = _chat(row["messages"], f"{where}: field 'messages'", "user")
            row["prompt"] = prompt_of(row["messages"])
        elif row.get("prompt") is not None and row.get("completion") is not None:
            prompt = _chat(row.pop("prompt"), f"{where}: field 'prompt'", "user")
            completion = _chat(row.pop("completion"), f"{where}: field 'completion'", "assistant")
            row["messages"], row["prompt"] = prompt + completion, prompt
        elif row.get("input_ids") is None:
            raise InputError(
                f"{where}: expected 'messages', 'prompt'+'completion' or pre-tokenised 'input_ids' "
                "(a plain 'text' row has no turns: use curate import without --format)"
            )
        out.append(row)
    return out, files


def _import_trl_grpo(path: Path, src: str) -> tuple[list[dict[str, Any]], list[Path]]:
    files = _data_files(path, (".jsonl", ".json", ".parquet"), "trl-grpo")
    out = []
    for i, row in enumerate(_read_rows(files)):
        row = dict(row)
        row["prompt"] = _chat(row.get("prompt"), f"{src}: row {i}: field 'prompt'", "user")
        if "solution" in row:
            row["answer"] = _text(row.pop("solution"))
        out.append(row)
    return out, files


def _import_verl(path: Path, src: str) -> tuple[list[dict[str, Any]], list[Path]]:
    files = _data_files(path, (".parquet",), "verl")
    added = _meta_for(files[0]).get("added") or {"extra_info": ["index"], "columns": []}
    out = []
    for i, row in enumerate(_read_rows(files)):
        where = f"{src}: row {i}"
        new: dict[str, Any] = {"prompt": _chat(row.get("prompt"), f"{where}: field 'prompt'", "user")}
        if row.get("data_source") is not None:
            new["data_source"] = str(row["data_source"])
        reward = row.get("reward_model") or {}
        if not isinstance(reward, dict):
            raise InputError(f"{where}: field 'reward_model': expected {{style, ground_truth}}")
        if reward.get("ground_truth") is not None:
            new["answer"] = _text(reward["ground_truth"])
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


def _import_verl_sft(path: Path, src: str) -> tuple[list[dict[str, Any]], list[Path]]:
    files = _data_files(path, (".parquet",), "verl-sft")
    out = []
    for i, row in enumerate(_read_rows(files)):
        row = dict(row)
        row["messages"] = _chat(row.get("messages"), f"{src}: row {i}: field 'messages'", "user")
        row["prompt"] = prompt_of(row["messages"])
        out.append(row)
    return out, files


def _import_openrlhf(path: Path, src: str) -> tuple[list[dict[str, Any]], list[Path]]:
    files = _data_files(path, (".jsonl", ".json", ".parquet"), "openrlhf")
    out = []
    for i, row in enumerate(_read_rows(files)):
        row = dict(row)
        new: dict[str, Any] = {"prompt": _chat(row.pop("input", None), f"{src}: row {i}: field 'input'", "user")}
        if "label" in row:
            new["answer"] = _text(row.pop("label"))
        if "datasource" in row:
            new["data_source"] = row.pop("datasource")
        out.append({**new, **row})
    return out, files


def _llamafactory_entry(path: Path) -> tuple[dict[str, Any], Path, Path | None]:
    """The dataset_info.json entry for ``path`` (a data dir or a data file) and the data file it names."""
    folder = path if path.is_dir() else path.parent
    info_path = folder / "dataset_info.json"
    if not info_path.exists():
        if path.is_file():  # a bare file: assume the layout curate writes
            return (
                {"formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": dict(_LLAMAFACTORY_TAGS)},
                path,
                None,
            )
        raise InputError(f"{path}: no dataset_info.json (LLaMA-Factory registers every dataset there)")
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{info_path}: invalid JSON ({e})") from None
    entries = (
        {k: v for k, v in info.items() if isinstance(v, dict) and v.get("file_name")} if isinstance(info, dict) else {}
    )
    if path.is_file():
        hits = [e for e in entries.values() if e["file_name"] == path.name]
    else:
        wanted = _meta_for(path).get("name")
        hits = [entries[wanted]] if wanted in entries else list(entries.values()) if len(entries) == 1 else []
    if len(hits) != 1:
        raise InputError(
            f"{info_path}: cannot tell which entry to read (entries: {', '.join(entries) or 'none'}); "
            "pass the data file itself as the source"
        )
    entry = hits[0]
    data = folder / entry["file_name"]
    if not data.is_file():
        raise InputError(f"{info_path}: entry names file_name {entry['file_name']!r}, which does not exist")
    return entry, data, info_path


def _import_llamafactory(path: Path, src: str) -> tuple[list[dict[str, Any]], list[Path]]:
    entry, data, info_path = _llamafactory_entry(path)
    cols = {
        "messages": "conversations",
        "system": None,
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "history": None,
        **(entry.get("columns") or {}),
    }
    formatting = entry.get("formatting", "alpaca")
    tags = {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
        **(entry.get("tags") or {}),
    }
    role_of = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["observation_tag"]: "tool",
        tags["function_tag"]: "assistant",
        tags["system_tag"]: "system",
    }
    out = []
    for i, row in enumerate(_read_rows([data])):
        row = dict(row)
        where = f"{src}: row {i}"
        messages: list[dict[str, str]] = []
        system = row.pop(cols["system"], None) if cols["system"] else None
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        if formatting in ("sharegpt", "openai"):
            turns = row.pop(cols["messages"], None)
            if not isinstance(turns, list) or not turns:
                raise InputError(f"{where}: field {cols['messages']!r}: expected a non-empty list of turns")
            for j, t in enumerate(turns):
                speaker = t.get(tags["role_tag"]) if isinstance(t, dict) else None
                if speaker not in role_of:
                    raise InputError(f"{where}: field {cols['messages']}[{j}]: unknown speaker {speaker!r}")
                messages.append({"role": role_of[speaker], "content": str(t.get(tags["content_tag"]) or "")})
        else:
            for pair in (row.pop(cols["history"], None) if cols["history"] else None) or []:
                messages += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
            query = "\n".join(str(x) for x in (row.pop(cols["prompt"], None), row.pop(cols["query"], None)) if x)
            messages += [
                {"role": "user", "content": query},
                {"role": "assistant", "content": str(row.pop(cols["response"], "") or "")},
            ]
        row["messages"], row["prompt"] = messages, prompt_of(messages)
        out.append(row)
    return out, [data] + ([info_path] if info_path else [])


def _import_hf(path: Path, src: str, split: str = "train") -> tuple[list[dict[str, Any]], list[Path]]:
    import datasets

    if not path.is_dir():
        raise InputError(f"{path}: --format hf reads a save_to_disk folder")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise InputError(f"{path}: not a saved Hugging Face dataset ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{path}: no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name not in (MANIFEST, "README.md"))
    return ds.to_list(), files


IMPORTERS: dict[str, Callable[..., tuple[list[dict[str, Any]], list[Path]]]] = {
    "trl-sft": _import_trl_sft,
    "trl-grpo": _import_trl_grpo,
    "verl": _import_verl,
    "verl-sft": _import_verl_sft,
    "openrlhf": _import_openrlhf,
    "llamafactory": _import_llamafactory,
    "hf": _import_hf,
}


def _with_ids(rows: list[dict[str, Any]], src: str) -> list[dict[str, Any]]:
    if rows and all(r.get("id") is not None for r in rows):
        seen: dict[str, int] = {}
        for i, r in enumerate(rows):
            r["id"] = str(r["id"])
            if r["id"] in seen:
                first = seen[r["id"]]
                raise InputError(f"{src}: row {i}: field 'id': duplicate id {r['id']!r} (first at row {first})")
            seen[r["id"]] = i
        return rows
    counts: dict[str, int] = {}
    for r in rows:
        base = row_id({k: r.get(k) for k in ("messages", "prompt", "answer", "input_ids") if r.get(k) is not None})
        n = counts.get(base, 0)
        counts[base] = n + 1
        r["id"] = base if n == 0 else f"{base}-{n}"
    return rows


def _read(source: str | Path, fmt: str, *, data_source: str | None, split: str) -> tuple[pa.Table, list[Path]]:
    if fmt not in IMPORTERS:
        raise CurateError(
            f"cannot import --format {fmt!r} (readable: {', '.join(sorted(IMPORTERS))}; plain jsonl "
            "and parquet import without --format)"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"{source}: no such file or directory")
    reader = IMPORTERS[fmt]
    rows, files = reader(path, str(source), split) if fmt == "hf" else reader(path, str(source))
    if not rows:
        raise InputError(f"{source}: no rows")
    rows = _with_ids(rows, str(source))
    fill = data_source or _meta_for(path).get("name") or (path.stem if path.is_file() else path.name)
    for r in rows:
        if r.get("data_source") is None:
            r["data_source"] = fill
    head = ["id", "messages", "prompt", "answer", "data_source"]
    rows = [{**{k: r[k] for k in head if k in r}, **{k: v for k, v in r.items() if k not in head}} for r in rows]
    return to_table(rows, source=str(source)), files


def read_export(source: str | Path, *, format: str, data_source: str | None = None, split: str = "train") -> pa.Table:
    """Canonical rows (an Arrow table) from files in a trainer format, e.g. a verl parquet or a TRL jsonl.

    >>> t = read_export("exports/verl", format="verl")       # doctest: +SKIP
    >>> t.column_names[:4]                                     # doctest: +SKIP
    ['id', 'prompt', 'answer', 'data_source']
    """
    return _read(source, format, data_source=data_source, split=split)[0]


def import_format(
    source: str | Path,
    *,
    format: str,
    name: str,
    store: Store | str | None = None,
    data_source: str | None = None,
    split: str = "train",
) -> Version:
    """Import a trainer-format export as a new version of ``name`` (``curate import SRC --format F``).

    >>> v = import_format("exports/verl", format="verl", name="math-back")   # doctest: +SKIP
    """
    from curate.api import get_store, import_data

    s = get_store(store)
    if format in ("jsonl", "parquet"):
        return import_data(str(source), name=name, store=s, data_source=data_source, split=split)
    table, files = _read(source, format, data_source=data_source, split=split)
    # The recipe names the files read, not the path given: a folder and its data file import as one version.
    root = Path(source).expanduser() if format == "hf" else files[0].parent
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(sha256_file(f).encode())
    op = {
        "name": "import",
        "format": format,
        "source": root.name if format == "hf" else files[0].name,
        "digest": h.hexdigest(),
        "data_source": data_source,
        "split": split if format == "hf" else None,
    }
    if (hit := s.lookup(name, [], op)) is not None:
        return hit
    return s.commit(table, name=name, op=op, stats={"layout": format, "rows": table.num_rows})
