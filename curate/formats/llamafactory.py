"""LLaMA-Factory: a sharegpt-formatted jsonl plus its ``dataset_info.json`` entry, and reading any entry back.

``llamafactory`` writes ``<name>.jsonl`` (``messages`` as OpenAI-style role/content turns, plus the other columns) and
adds or replaces the dataset's entry in ``dataset_info.json`` beside it (other entries are kept), so
``dataset: <name>`` and ``dataset_dir: <out>`` in a LLaMA-Factory config find it. There is no single-file form: the
entry must sit beside the data. Reading back follows the entry: sharegpt / openai turns with their tags, or alpaca
instruction/input/output (+ system, history) columns.

``llamafactory-dpo`` writes a preference dataset (stages ``dpo``, ``rm``, ``orpo``...) the same way: ``messages``
holds the prompt's turns, ``chosen`` and ``rejected`` one assistant message object each, and the entry says
``ranking: true`` and names the ``chosen`` / ``rejected`` columns. It reads back sharegpt pairs and alpaca pairs
(``instruction`` / ``input`` + ``chosen`` / ``rejected`` strings). Each reader refuses the other's entries: a
``ranking`` dataset is usable only in the preference stages and an SFT one only outside them.

Field names follow LLaMA-Factory's ``data/README.md`` (``file_name``, ``formatting``, ``ranking``, ``columns``,
``tags``), its ``parser.py`` (``chosen`` / ``rejected`` have no default column, so the entry must name them) and its
sharegpt converter: user/assistant turns must alternate after an optional system turn, ending with the assistant
(SFT) or with the user (preference, then ``chosen`` / ``rejected`` are single assistant messages), or the row is
skipped, so such a version is refused here instead.

    curate export sft-fisher --format llamafactory --out exports/lf --dataset-name sft_fisher
    curate export math-pairs --format llamafactory-dpo --out exports/lf-dpo --dataset-name math_pairs
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.errors import CurateError, InputError
from curate.formats.base import (
    ExportContext,
    Format,
    extras,
    meta_for,
    pair_row,
    read_rows,
    require,
    require_pairs,
    rows_of,
    shuffle_line,
    write_json,
    write_jsonl,
)
from curate.records import prompt_of

_LLAMAFACTORY_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
    "observation_tag": "tool",
}


@dataclass
class LlamaFactoryOptions:
    """Export options of ``--format llamafactory``."""

    dataset_name: str | None = None
    """The dataset_info.json key (the ``dataset:`` of a LLaMA-Factory config); default: the data file's stem."""


def _check_alternation(table: pa.Table, ctx: ExportContext) -> None:
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


def _check_pairs(table: pa.Table, ctx: ExportContext) -> None:
    ids = table.column("id").to_pylist()
    rows = zip(*(table.column(c).to_pylist() for c in ("prompt", "chosen", "rejected")), strict=True)
    for i, (prompt, chosen, rejected) in enumerate(rows):
        turns = prompt[1:] if prompt and prompt[0]["role"] == "system" else prompt
        roles = [m["role"] for m in turns]
        bad = next((j for j, r in enumerate(roles) if r not in (("user", "tool"), ("assistant",))[j % 2]), None)
        if bad is not None or len(roles) % 2 == 0:
            why = f"turn {bad} is {roles[bad]!r}" if bad is not None else f"{len(roles)} turns after the system turn"
            raise CurateError(
                f"{ctx.version.ref}: row {i} (id {ids[i]}): field 'prompt': a LLaMA-Factory preference prompt has "
                f"user/assistant turns alternating after an optional system turn and ends with the user ({why}); "
                "it would skip this row"
            )
        for column, side in (("chosen", chosen), ("rejected", rejected)):
            if len(side) != 1 or side[0]["role"] != "assistant":
                raise CurateError(
                    f"{ctx.version.ref}: row {i} (id {ids[i]}): field {column!r}: LLaMA-Factory takes one assistant "
                    f"message here, got {len(side)} turn(s) ({', '.join(m['role'] for m in side)})"
                )


def _register(info_path: Path, name: str, entry: dict[str, Any]) -> Path:
    """Add or replace ``name`` in ``dataset_info.json``, keeping the other entries."""
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CurateError(f"{info_path}: exists but is not valid JSON ({e}); fix or remove it") from None
        if not isinstance(info, dict):
            raise CurateError(f"{info_path}: exists but is not a JSON object")
    info[name] = entry
    return write_json(info_path, info)


def _entry(path: Path, *, ranking: bool = False) -> tuple[dict[str, Any], Path, Path | None]:
    """The dataset_info.json entry for ``path`` (a data dir or a data file) and the data file it names."""
    folder = path if path.is_dir() else path.parent
    info_path = folder / "dataset_info.json"
    if not info_path.exists():
        if path.is_file():  # a bare file: assume the layout curate writes
            columns = {"messages": "messages", **({"chosen": "chosen", "rejected": "rejected"} if ranking else {})}
            return (
                {"formatting": "sharegpt", "ranking": ranking, "columns": columns, "tags": dict(_LLAMAFACTORY_TAGS)},
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
        wanted = meta_for(path).get("name")
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
    if bool(entry.get("ranking")) != ranking:
        what, other = (
            ("a preference dataset (ranking: true)", LlamaFactoryDpo.name)
            if entry.get("ranking")
            else ("not a preference dataset (no ranking: true)", LlamaFactory.name)
        )
        raise InputError(
            f"{info_path}: the entry for {entry['file_name']!r} is {what}; import it with --format {other}"
        )
    return entry, data, info_path


def _tags(entry: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The entry's sharegpt tags (LLaMA-Factory's defaults filled in) and the canonical role of each speaker tag."""
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
    return tags, role_of


def _alpaca_prompt(row: dict[str, Any], cols: dict[str, Any]) -> list[dict[str, str]]:
    """An alpaca row's turns before its response: the history pairs, then ``instruction`` + newline + ``input``.
    The fields are popped from ``row``."""
    turns: list[dict[str, str]] = []
    for pair in (row.pop(cols["history"], None) if cols["history"] else None) or []:
        turns += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
    query = "\n".join(str(x) for x in (row.pop(cols["prompt"], None), row.pop(cols["query"], None)) if x)
    return [*turns, {"role": "user", "content": query}]


def _columns(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's column names, LLaMA-Factory's defaults filled in (``chosen`` / ``rejected`` have none)."""
    return {
        "messages": "conversations",
        "system": None,
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "history": None,
        "chosen": None,
        "rejected": None,
        **(entry.get("columns") or {}),
    }


def _sharegpt_turns(
    turns: Any, where: str, field: str, tags: dict[str, str], role_of: dict[str, str]
) -> list[dict[str, str]]:
    """Sharegpt turns (a list, or one message object) as canonical {role, content} turns."""
    if isinstance(turns, dict):
        turns = [turns]
    if not isinstance(turns, list) or not turns:
        raise InputError(f"{where}: field {field!r}: expected a non-empty list of turns")
    out = []
    for j, t in enumerate(turns):
        speaker = t.get(tags["role_tag"]) if isinstance(t, dict) else None
        if speaker not in role_of:
            raise InputError(f"{where}: field {field}[{j}]: unknown speaker {speaker!r}")
        out.append({"role": role_of[speaker], "content": str(t.get(tags["content_tag"]) or "")})
    return out


class LlamaFactory(Format):
    """LLaMA-Factory sharegpt jsonl registered in ``dataset_info.json``; reads sharegpt, openai or alpaca entries."""

    name = "llamafactory"
    data_suffix = ".jsonl"
    options = LlamaFactoryOptions

    def write(self, table: pa.Table, ctx: ExportContext, opts: LlamaFactoryOptions) -> tuple[list[Path], list[str]]:
        require(table, ctx, "messages", "the conversation")
        _check_alternation(table, ctx)
        name = opts.dataset_name or ctx.stem
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        cols = list(dict.fromkeys(["id", "messages", *extras(table, ("answer", "data_source", "weight"))]))
        write_jsonl(path, rows_of(table, cols))
        info_path = _register(
            ctx.out_dir / "dataset_info.json",
            name,
            {
                "file_name": path.name,
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": dict(_LLAMAFACTORY_TAGS),
            },
        )
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
        lines += shuffle_line(ctx.curriculum, "Keep it with disable_shuffling: true as above.")
        return [path, info_path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        entry, data, info_path = _entry(path)
        cols = _columns(entry)
        formatting = entry.get("formatting", "alpaca")
        tags, role_of = _tags(entry)
        out = []
        for i, row in enumerate(read_rows([data])):
            row = dict(row)
            where = f"{src}: row {i}"
            messages: list[dict[str, str]] = []
            system = row.pop(cols["system"], None) if cols["system"] else None
            if isinstance(system, str) and system:
                messages.append({"role": "system", "content": system})
            if formatting in ("sharegpt", "openai"):
                turns = row.pop(cols["messages"], None)
                # A conversation is a list; a lone message object is one side of a preference pair.
                messages += _sharegpt_turns(
                    turns if isinstance(turns, list) else None, where, cols["messages"], tags, role_of
                )
            else:
                messages += _alpaca_prompt(row, cols)
                messages.append({"role": "assistant", "content": str(row.pop(cols["response"], "") or "")})
            row["messages"], row["prompt"] = messages, prompt_of(messages)
            out.append(row)
        return out, [data] + ([info_path] if info_path else [])


class LlamaFactoryDpo(Format):
    """LLaMA-Factory preference jsonl (``ranking: true``): the prompt's turns, one chosen and one rejected message."""

    name = "llamafactory-dpo"
    data_suffix = ".jsonl"
    options = LlamaFactoryOptions
    pairwise = True

    def write(self, table: pa.Table, ctx: ExportContext, opts: LlamaFactoryOptions) -> tuple[list[Path], list[str]]:
        require_pairs(table, ctx)
        _check_pairs(table, ctx)
        name = opts.dataset_name or ctx.stem
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        extra = [c for c in extras(table, ("prompt_id", "answer", "data_source")) if c not in ("chosen", "rejected")]
        rows = [
            {
                "id": r.pop("id"),
                "messages": r.pop("prompt"),
                "chosen": r.pop("chosen")[0],
                "rejected": r.pop("rejected")[0],
                **r,
            }
            for r in rows_of(table, list(dict.fromkeys(["id", "prompt", "chosen", "rejected", *extra])))
        ]
        write_jsonl(path, rows)
        info_path = _register(
            ctx.out_dir / "dataset_info.json",
            name,
            {
                "file_name": path.name,
                "formatting": "sharegpt",
                "ranking": True,
                "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
                "tags": dict(_LLAMAFACTORY_TAGS),
            },
        )
        lines = [
            f'LLaMA-Factory: registered as "{name}" in {info_path} (sharegpt preference data, ranking: true, '
            "OpenAI role/content tags).",
            "  llamafactory-cli train config.yaml, with config.yaml holding:",
            "    stage: dpo",
            f"    dataset: {name}",
            f"    dataset_dir: {ctx.out_dir}",
            "    template: <your model's template, e.g. qwen>",
        ]
        if ctx.curriculum:
            lines.append("    disable_shuffling: true")
        lines.append("stage: rm trains a reward model on the same entry.")
        lines += shuffle_line(ctx.curriculum, "Keep it with disable_shuffling: true as above.")
        return [path, info_path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        entry, data, info_path = _entry(path, ranking=True)
        cols = _columns(entry)
        if not cols["chosen"] or not cols["rejected"]:
            raise InputError(
                f"{info_path or data}: the entry names no chosen / rejected columns (LLaMA-Factory has no default "
                "for them)"
            )
        sharegpt = entry.get("formatting", "alpaca") in ("sharegpt", "openai")
        tags, role_of = _tags(entry)
        out = []
        for i, row in enumerate(read_rows([data])):
            row = dict(row)
            where = f"{src}: row {i}"
            prompt: list[dict[str, str]] = []
            system = row.pop(cols["system"], None) if cols["system"] else None
            if isinstance(system, str) and system:
                prompt.append({"role": "system", "content": system})
            sides = {c: row.pop(cols[c], None) for c in ("chosen", "rejected")}
            if sharegpt:
                prompt += _sharegpt_turns(row.pop(cols["messages"], None), where, cols["messages"], tags, role_of)
                pair = {c: _sharegpt_turns(v, where, cols[c], tags, role_of) for c, v in sides.items()}
            else:
                prompt += _alpaca_prompt(row, cols)
                pair = {c: v for c, v in sides.items() if v is not None}
            out.append(pair_row({**pair, "prompt": prompt, **row}, where))
        return out, [data] + ([info_path] if info_path else [])
