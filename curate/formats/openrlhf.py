"""OpenRLHF: a prompts jsonl for ``openrlhf.cli.train_ppo_ray``, a preference jsonl for ``train_rm`` /
``train_dpo``, and reading both back.

``openrlhf`` writes ``<name>.jsonl`` with one row per prompt: ``input`` (the prompt as a chat list, for
``--data.apply_chat_template``), ``label`` (the version's ``answer``, handed to a custom
``reward_func(queries, prompts, labels)``), ``datasource`` (read per row) and the other columns.

``openrlhf-dpo`` writes one row per preference pair: ``prompt``, ``chosen`` and ``rejected`` as chat lists (with
``--data.prompt_key prompt --data.apply_chat_template`` OpenRLHF renders ``prompt`` with the generation prompt and
``prompt + chosen`` / ``prompt + rejected``, and keeps what follows the prompt), ``margin`` (the reward gap, which
``train_rm --model.margin_loss_enable`` reads under that name) and the other columns.

Field names follow OpenRLHF's ``--data.input_key`` / ``--data.label_key`` flags (``--input_key`` / ``--label_key``
before the 2026-04 flag rename) and its per-row ``datasource`` key; for pairs, ``--data.prompt_key`` /
``--data.chosen_key`` / ``--data.rejected_key`` (defaults: none, ``chosen``, ``rejected``) and
``openrlhf/datasets/reward_dataset.py`` (``preprocess_data``, the ``margin`` key). Departure: OpenRLHF's prompt
dataloader shuffles with no documented switch, so a curriculum must be trained one stage per run.

    curate export math-curriculum --format openrlhf --out exports/openrlhf
    curate export math-pairs --format openrlhf-dpo --out exports/openrlhf-dpo
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.errors import InputError
from curate.formats.base import (
    ExportContext,
    Format,
    as_text,
    chat,
    data_files,
    extras,
    holds_pairs,
    pair_row,
    read_rows,
    require_pairs,
    require_prompt_rows,
    rows_of,
    shuffle_line,
    write_jsonl,
)


class OpenRLHF(Format):
    """OpenRLHF prompt rows: ``input``, ``label``, ``datasource`` and the other columns."""

    name = "openrlhf"
    suffix = ".jsonl"

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        require_prompt_rows(table, ctx)
        extra = [c for c in extras(table, ("weight",)) if c not in ("input", "label", "datasource")]
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        rows = rows_of(
            table,
            ["id", "prompt", "answer", "data_source", *extra],
            rename={"prompt": "input", "answer": "label", "data_source": "datasource"},
        )
        write_jsonl(path, rows)
        label = "answer" in table.column_names
        flags = f"--data.prompt_dataset {path} --data.input_key input" + (" --data.label_key label" if label else "")
        old = f"--prompt_data {path} --input_key input" + (" --label_key label" if label else "")
        lines = [
            "OpenRLHF prompts jsonl: `input` is a chat list, `label` goes to your reward_func(queries, prompts, "
            "labels), `datasource` is read per row.",
            f"  python3 -m openrlhf.cli.train_ppo_ray {flags} --data.apply_chat_template ...",
            f"  (releases before the 2026-04 flag rename: {old} --apply_chat_template)",
            *shuffle_line(
                ctx.curriculum,
                "OpenRLHF's prompt dataloader shuffles and has no documented switch to keep "
                "file order: train one stage per run to keep the curriculum.",
            ),
        ]
        return [path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".jsonl", ".json", ".parquet"), self.name)
        out = []
        for i, row in enumerate(read_rows(files)):
            row = dict(row)
            if "input" not in row and holds_pairs(list(row)):
                raise InputError(
                    f"{src}: row {i}: a preference row (chosen, rejected): import it with --format {OpenRLHFDpo.name}"
                )
            new: dict[str, Any] = {"prompt": chat(row.pop("input", None), f"{src}: row {i}: field 'input'", "user")}
            if row.get("output") is not None:  # OpenRLHF SFT rows: --input_key input --output_key output
                answer = chat(row.pop("output"), f"{src}: row {i}: field 'output'", "assistant")
                new["messages"] = new["prompt"] + answer
            if "label" in row:
                new["answer"] = as_text(row.pop("label"))
            if "datasource" in row:
                new["data_source"] = row.pop("datasource")
            out.append({**new, **row})
        return out, files


class OpenRLHFDpo(Format):
    """OpenRLHF reward-model / DPO rows: ``prompt``, ``chosen``, ``rejected`` chat lists and the ``margin``."""

    name = "openrlhf-dpo"
    suffix = ".jsonl"
    pairwise = True

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        require_pairs(table, ctx)
        path = ctx.out_dir / f"{ctx.stem}.jsonl"
        cols = ["id", "prompt", "chosen", "rejected", *extras(table, ("prompt_id", "answer", "data_source"))]
        write_jsonl(path, rows_of(table, list(dict.fromkeys(cols))))
        keys = "--data.prompt_key prompt --data.chosen_key chosen --data.rejected_key rejected"
        old = "--prompt_key prompt --chosen_key chosen --rejected_key rejected"
        lines = [
            "OpenRLHF preference jsonl: `prompt`, `chosen` and `rejected` are chat lists; with "
            "--data.apply_chat_template OpenRLHF renders prompt + chosen and prompt + rejected and trains on what "
            "follows the prompt.",
            f"  python3 -m openrlhf.cli.train_dpo --data.dataset {path} {keys} --data.apply_chat_template ...",
            f"  python3 -m openrlhf.cli.train_rm --data.dataset {path} {keys} --data.apply_chat_template ...",
            f"  (releases before the 2026-04 flag rename: --dataset {path} {old} --apply_chat_template)",
        ]
        if "margin" in table.column_names:
            lines.append(
                "`margin` is the reward gap of each pair: train_rm --model.margin_loss_enable "
                "(--margin_loss before the rename) adds it to the reward-model loss."
            )
        lines += shuffle_line(
            ctx.curriculum,
            "OpenRLHF's dataloader shuffles and has no documented switch to keep file order: train one stage per "
            "run to keep the curriculum.",
        )
        return [path], lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        files = data_files(path, (".jsonl", ".json", ".parquet"), self.name)
        return [pair_row(row, f"{src}: row {i}") for i, row in enumerate(read_rows(files))], files
