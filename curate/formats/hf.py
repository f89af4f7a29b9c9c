"""Hugging Face ``datasets``: a ``save_to_disk`` folder with a dataset card, and reading such a folder back.

Writes the whole ``--out`` folder: every column as stored (token labels included), via
``datasets.Dataset(table).save_to_disk``, plus a ``README.md`` card with the columns, the version's lineage (from
``curate.store.lineage``) and how to load it. The folder is staged beside ``--out`` and renamed into place, so a
killed export never leaves a half-written folder; it replaces only an earlier ``hf`` export (or an empty folder).
Reading back loads the folder with ``datasets.load_from_disk``, taking ``--split`` from a ``DatasetDict``.

Field names are the version's own; the layout is ``datasets``' ``save_to_disk`` format.

    curate export sft-fisher --format hf --out exports/hf
    curate import exports/hf --name sft-back --format hf
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.errors import InputError
from curate.formats.base import MANIFEST, ExportContext, Format, shuffle_line
from curate.outputs import remove, temp_path
from curate.store import canonical_json, curate_version, lineage


def _card(table: pa.Table, ctx: ExportContext) -> str:
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


class HF(Format):
    """A ``datasets`` ``save_to_disk`` folder with a lineage card: every column, token labels included."""

    name = "hf"
    carries_labels = True
    whole_folder = True
    reads_split = True

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        import datasets  # heavy: loaded only when an hf export runs
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
            *shuffle_line(ctx.curriculum, "Turn your trainer's shuffling off to keep it."),
        ]
        return files, lines

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
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
