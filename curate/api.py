"""The Python API behind the CLI: every function here is one store operation.

Example:
    >>> import curate
    >>> curate.set_store("/tmp/my-store")                                 # doctest: +SKIP
    >>> v = curate.import_data("data.jsonl", name="mydata")               # doctest: +SKIP
    >>> curate.diff("mydata@v1", "mydata@v2")["removed"]                  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.errors import InputError
from curate.store import Store, Version, canonical_json, get_store, lineage, set_store, table_digest  # noqa: E402, F401


def load(ref: str | Version, *, store: Store | str | None = None) -> Version:
    """Load a version by ref: ``name``, ``name@latest``, ``name@v3``, ``name@<id-prefix>``, ``name@<tag>``.

    >>> v = curate.load("gsm8k@v1"); v.id, len(v), v.to_polars().shape   # doctest: +SKIP
    """
    return get_store(store).load(ref)


def as_table(data: Any) -> pa.Table:
    """Arrow table from a pyarrow table, polars / pandas frame, ``datasets.Dataset`` or list of dicts."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, list):
        from curate.records import to_table

        return to_table(data)
    if hasattr(data, "to_arrow"):  # polars
        return data.to_arrow()
    if hasattr(data, "data") and hasattr(data.data, "table"):  # datasets.Dataset
        return data.data.table
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InputError(
        f"cannot store a {type(data).__name__}: pass a pyarrow Table, DataFrame, Dataset or list of dicts"
    )


def save(
    data: Any,
    *,
    name: str,
    parents: Sequence[str | Version] = (),
    op: dict[str, Any] | None = None,
    store: Store | str | None = None,
) -> Version:
    """Commit a table as a new version of ``name`` with its lineage.

    The recipe is ``op`` plus a digest of the data, so saving the same table twice is a no-op.

    >>> v = curate.save([{"id": "a", "messages": [...]}], name="handmade", op={"name": "save"})  # doctest: +SKIP
    """
    s = get_store(store)
    table = as_table(data)
    if "id" not in table.column_names:
        raise InputError(f"save {name}: the table needs an 'id' column")
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        raise InputError(f"save {name}: column 'id' has duplicate values")
    op = {"name": "save", **(op or {}), "data": table_digest(table)}
    return s.commit(table, name=name, parents=[s.load(p) for p in parents], op=op)


def import_data(
    source: str,
    *,
    name: str,
    mapping: Sequence[str] | dict[str, str] | None = None,
    split: str = "train",
    data_source: str | None = None,
    format: str | None = None,
    store: Store | str | None = None,
) -> Version:
    """Import jsonl / json / parquet / csv / a saved HF dataset / a hub id into canonical columns.

    >>> v = curate.import_data("../shared/data/gsm8k/test.jsonl", name="gsm8k")   # doctest: +SKIP
    >>> len(v), v.columns[:4]                                                   # doctest: +SKIP
    (1319, ['id', 'messages', 'prompt', 'answer'])
    """
    from curate.io import read_source
    from curate.records import normalise, parse_mapping
    from curate.store import validate_name

    s = get_store(store)
    validate_name(name)
    if format not in (None, "jsonl", "parquet"):
        from curate.exports import import_format

        return import_format(source, format=format, name=name, store=s, data_source=data_source, split=split)
    t0 = time.perf_counter()
    src = read_source(source, split=split)
    # A lone "canonical=source" string is one rename, not a sequence of one-character items.
    m = mapping if isinstance(mapping, dict) else parse_mapping([mapping] if isinstance(mapping, str) else mapping)
    op = {
        "name": "import",
        "source": src.name,
        "kind": src.kind,
        "digest": src.digest,
        "map": m,
        "split": split if src.kind in ("hf-disk", "hub") else None,
        "data_source": data_source,
    }
    if (hit := s.lookup(name, [], op)) is not None:
        return hit
    table, layout = normalise(src.rows, source=source, mapping=m, data_source=data_source or name, lines=src.lines)
    read_s = time.perf_counter() - t0
    return s.commit(
        table,
        name=name,
        op=op,
        stats={"layout": layout, "rows": table.num_rows},
        timings={"read_normalise_s": round(read_s, 4)},
    )


def sample(
    which: str, *, name: str | None = None, n: int = 500, seed: int = 0, store: Store | str | None = None
) -> Version:
    """Write a built-in sample dataset (``sample-sft`` or ``sample-math``) into the store."""
    from curate.records import to_table
    from curate.samples import SAMPLES

    if which not in SAMPLES:
        raise InputError(f"unknown sample {which!r} (available: {', '.join(SAMPLES)})")
    if not isinstance(n, int) or n < 1:
        raise InputError(f"--n must be a positive integer, got {n!r}")
    s = get_store(store)
    name = name or which
    op = {"name": "sample", "sample": which, "n": n, "seed": seed}
    if (hit := s.lookup(name, [], op)) is not None:
        return hit
    table = to_table(SAMPLES[which](n, seed=seed), source=which)
    return s.commit(table, name=name, op=op, stats={"rows": table.num_rows})


def diff(a: str | Version, b: str | Version, *, store: Store | str | None = None) -> dict[str, Any]:
    """Rows added / removed / changed (by ``id``) and column changes from ``a`` to ``b``."""
    s = get_store(store)
    va, vb = s.load(a), s.load(b)
    ta, tb = va.to_arrow(), vb.to_arrow()
    sa = {f.name: str(f.type) for f in ta.schema}
    sb = {f.name: str(f.type) for f in tb.schema}
    common = [c for c in sa if c in sb and c != "id"]
    rows_a = {r["id"]: canonical_json({c: r[c] for c in common}) for r in ta.select(["id", *common]).to_pylist()}
    rows_b = {r["id"]: canonical_json({c: r[c] for c in common}) for r in tb.select(["id", *common]).to_pylist()}
    return {
        "a": va.ref,
        "b": vb.ref,
        "added": sorted(set(rows_b) - set(rows_a)),
        "removed": sorted(set(rows_a) - set(rows_b)),
        "changed": sorted(k for k in set(rows_a) & set(rows_b) if rows_a[k] != rows_b[k]),
        "columns_added": [c for c in sb if c not in sa],
        "columns_removed": [c for c in sa if c not in sb],
        "columns_retyped": {c: [sa[c], sb[c]] for c in common if sa[c] != sb[c]},
    }


def export(
    ref: str | Version, *, format: str, out: str | Path, store: Store | str | None = None, **options: Any
) -> Any:
    """Export a version for a trainer (``curate.exports.EXPORTERS``) or as plain jsonl / parquet.

    Returns a ``curate.exports.ExportResult``: ``out_dir``, ``files`` and the ``note`` the CLI prints.

    >>> r = curate.export("math-curriculum", format="verl", out="exports/verl")   # doctest: +SKIP
    >>> print(r.note)                                                             # doctest: +SKIP
    """
    from curate.exports import export_version

    return export_version(get_store(store).load(ref), format=format, out=out, **options)
