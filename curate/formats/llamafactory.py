"""LLaMA-Factory: a sharegpt-formatted jsonl plus its ``dataset_info.json`` entry, and reading any entry back.

Writes ``<name>.jsonl`` (``messages`` as OpenAI-style role/content turns, plus the other columns) and adds or
replaces the dataset's entry in ``dataset_info.json`` beside it (other entries are kept), so ``dataset: <name>`` and
``dataset_dir: <out>`` in a LLaMA-Factory config find it. There is no single-file form: the entry must sit beside
the data. Reading back follows the entry: sharegpt / openai turns with their tags, or alpaca
instruction/input/output (+ system, history) columns.

Field names follow LLaMA-Factory's ``data/README.md`` (``file_name``, ``formatting``, ``columns``, ``tags``) and its
sharegpt converter: user/assistant turns must alternate after an optional system turn, ending with the assistant,
or the row is skipped, so such a version is refused here instead.

    curate export sft-fisher --format llamafactory --out exports/lf --dataset-name sft_fisher
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
    read_rows,
    require,
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


def _entry(path: Path) -> tuple[dict[str, Any], Path, Path | None]:
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
    return entry, data, info_path


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
        write_json(info_path, info)
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
        for i, row in enumerate(read_rows([data])):
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
                    messages += [
                        {"role": "user", "content": str(pair[0])},
                        {"role": "assistant", "content": str(pair[1])},
                    ]
                query = "\n".join(str(x) for x in (row.pop(cols["prompt"], None), row.pop(cols["query"], None)) if x)
                messages += [
                    {"role": "user", "content": query},
                    {"role": "assistant", "content": str(row.pop(cols["response"], "") or "")},
                ]
            row["messages"], row["prompt"] = messages, prompt_of(messages)
            out.append(row)
        return out, [data] + ([info_path] if info_path else [])
