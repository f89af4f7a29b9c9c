"""A plugin written the way a user would: one module, no edit to curate's files. It adds a selector (``toy-head``:
the first k rows), an export format (``toy-tsv``: id and first user turn, tab-separated, readable back) and an
operation (``shout``: upper-cases every message), each with one registration call.

Load it with ``CURATE_PLUGINS=tests.toy_plugin curate ...`` or ``import tests.toy_plugin``; ``uninstall()`` takes it
out of the registries again (tests share one process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate import ops
from curate.formats import FORMATS, Format, register
from curate.outputs import atomic_write
from curate.selectors import SELECTORS, Selector
from curate.selectors import register as register_selector
from curate.store import get_store


class ToyHead(Selector):
    """Keep the first ``k`` rows."""

    name = "toy-head"
    requires = ("id",)

    def __init__(self, k: int = 2):
        self.k = k

    def fit(self, version):
        self.version_ = version
        self.scores_ = -np.arange(len(version), dtype=np.float64)  # earlier rows score higher
        self.budget = self.k
        return self


@dataclass
class ToyTsvOptions:
    """Options of toy-tsv."""

    header: bool = False
    """Write a header line first."""


class ToyTsv(Format):
    """id <TAB> first user turn, one row per line."""

    name = "toy-tsv"
    suffix = ".tsv"
    carries_labels = False
    options = ToyTsvOptions

    def write(self, table: pa.Table, ctx: Any, opts: Any) -> tuple[list[Path], list[str]]:
        path = ctx.out_dir / f"{ctx.stem}.tsv"
        lines = ["id\tuser"] if opts.header else []
        for r in table.to_pylist():
            user = next(m["content"] for m in r["messages"] if m["role"] == "user")
            lines.append(f"{r['id']}\t{' '.join(user.split())}")
        # Written to a temporary and renamed into place, so a killed export leaves no half file.
        atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
        return [path], ["toy-tsv: id and first user turn"]

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict], list[Path]]:
        f = path if path.is_file() else next(path.glob("*.tsv"))
        rows = [line.split("\t", 1) for line in f.read_text(encoding="utf-8").splitlines() if line]
        rows = [r for r in rows if r != ["id", "user"]]
        return [{"id": i, "messages": [{"role": "user", "content": u}]} for i, u in rows], [f]


@dataclass
class ShoutConfig:
    """Options of shout."""

    suffix: str = "!"
    """Appended to every message."""


def shout(ref: Any, *, name: str | None = None, store: Any = None, **params: Any):
    """Upper-case every message of ``ref`` and append ``suffix``."""
    config = ShoutConfig(**params)
    s = get_store(store)
    parent = s.load(ref)

    def compute() -> dict[str, Any]:
        rows = parent.to_pylist()
        for r in rows:
            r["messages"] = [{**m, "content": m["content"].upper() + config.suffix} for m in r["messages"]]
        return {"table": pa.Table.from_pylist(rows, schema=parent.to_arrow().schema)}

    op = {"name": "shout", "suffix": config.suffix}
    return s.materialise(name or f"{parent.name}-shout", [parent], op, compute)


SHOUT = ops.Op(
    "shout",
    shout,
    "Upper-case every message.",
    keys=(ops.Key("name", str | None, help="Output dataset name."),),
    target=lambda entry: ShoutConfig,
    summary=lambda v, params: f"{v.ref} id={v.id} rows={len(v)}",
)


def install() -> None:
    if "toy-head" not in SELECTORS:
        register_selector(ToyHead)
    if "toy-tsv" not in FORMATS:
        register(ToyTsv)
    if "shout" not in ops.OPS:
        ops.register(SHOUT)


def uninstall() -> None:
    SELECTORS.pop("toy-head", None)
    FORMATS.pop("toy-tsv", None)
    ops.OPS.pop("shout", None)


install()
