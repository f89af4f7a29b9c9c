"""Plain ``jsonl`` and ``parquet``: every column as stored, for any reader (``datasets``, pandas, polars, duckdb).

``jsonl`` writes ``<name>.jsonl`` as strict JSON (NaN and infinities become null, which pyarrow's JSON reader
needs); ``parquet`` writes ``<name>.parquet`` (zstd). Token labels go out as they are. These are not read back
with ``--format``: ``curate import FILE`` reads them as plain data (``plain_import``), the same as any jsonl or
parquet file.

    curate export sft-fisher --format jsonl --out exports/sft-fisher.jsonl
    curate export sft-fisher --format parquet --out exports/parquet
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from curate.formats.base import ExportContext, Format, shuffle_line, write_jsonl, write_parquet


class _Plain(Format):
    carries_labels = True
    plain_import = True
    loader: ClassVar[str]  # the `datasets` builder that reads the file

    def write_file(self, path: Path, table: pa.Table) -> None:
        raise NotImplementedError

    def write(self, table: pa.Table, ctx: ExportContext, opts: Any) -> tuple[list[Path], list[str]]:
        path = ctx.out_dir / f"{ctx.stem}{self.suffix}"
        self.write_file(path, table)
        load = f'load_dataset("{self.loader}", data_files="{path}", split="train")'
        return [path], [
            f"Plain {ctx.fmt}, every column as stored. With datasets: {load}",
            *shuffle_line(ctx.curriculum, "Turn your trainer's shuffling off to keep it."),
        ]


class Jsonl(_Plain):
    """Every column as stored, as strict JSON lines."""

    name = "jsonl"
    suffix = ".jsonl"
    loader = "json"

    def write_file(self, path: Path, table: pa.Table) -> None:
        write_jsonl(path, table.to_pylist())


class Parquet(_Plain):
    """Every column as stored, as zstd parquet."""

    name = "parquet"
    suffix = ".parquet"
    loader = "parquet"

    def write_file(self, path: Path, table: pa.Table) -> None:
        write_parquet(path, table)
