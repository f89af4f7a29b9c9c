"""Every operation, defined once: the ``OPS`` table the CLI, the recipes and the Python API are built from.

An ``Op`` names its input (a ref, a source file, a sample name or nothing), its own step keys (``--name``,
``--out``), how it picks a variant (``--method`` from ``SELECTORS``, ``train sft|grpo`` from ``TRAINERS``, ``--format``
from ``FORMATS``), the target whose parameters are its options (``curate.options``), and the function that runs it.
Each function finds an existing version, or computes and commits one with its lineage, through
``Store.materialise``. ``curate/cli.py`` makes one command per entry, ``curate/pipeline.py`` runs a step by
looking its kind up here, and ``curate/__init__.py`` exposes the functions.

Adding an operation is one file that defines its function and calls ``register(Op(...))``; see
``docs/architecture.md``.

    >>> import curate
    >>> v = curate.select("gsm8k", method="fisher", budget=50, name="gsm8k-fisher")   # doctest: +SKIP
    >>> curate.ops.run("select", "gsm8k", method="random", budget=5)                 # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate import options
from curate.errors import CurateError, InputError
from curate.store import Store, Version, canonical_json, get_store, table_digest, validate_name


@dataclass(frozen=True)
class Key:
    """A step key an op reads itself (not an option of its target): ``--name``, ``--out``."""

    name: str
    type: Any
    default: Any = None
    help: str = ""
    required: bool = False


@dataclass(frozen=True)
class Variant:
    """How an op picks one of several implementations: the key (``method``), the registry, its default, and
    whether the CLI spells it as a subcommand (``curate train sft``) or an option (``--method fisher``)."""

    key: str
    registry: Callable[[], Mapping[str, Any]]
    default: str | None = None
    subcommand: bool = False
    label: str = ""  # what an unknown name is called in the error ("export format")

    def get(self, value: str | None, where: str = "") -> Any:
        reg = self.registry()
        value = self.default if value is None else value
        if value not in reg:
            prefix = f"{where}: " if where else ""
            what = self.label or self.key
            raise CurateError(f"{prefix}unknown {what} {value!r} (available: {', '.join(sorted(reg))})")
        return reg[value]


@dataclass(frozen=True)
class Op:
    """One operation. ``fn(input, *, store, **keys, **variant, **params)`` runs it; ``target(entry)`` is what its
    options derive from (``entry`` is the variant's registry entry, or None)."""

    name: str
    fn: Callable[..., Any]
    help: str
    input: str | None = "ref"  # the positional input: "ref", "source", "which", or None
    keys: tuple[Key, ...] = ()
    variant: Variant | None = None
    target: Callable[[Any], Any] = lambda entry: None
    aliases: Mapping[str, str] = field(default_factory=dict)  # CLI spelling -> parameter
    makes_version: bool = True  # its output is a version the next recipe step reads
    summary: Callable[[Any, dict[str, Any]], str] = lambda result, params: str(result)
    #: what a recipe step reports as its output: a version's ref, a run or export folder
    output: Callable[[Any], str] = lambda result: result.ref
    #: what ``--json`` prints
    as_json: Callable[[Any], dict[str, Any]] = lambda result: _version_json(result)
    #: a recipe step's finished result, if one is there (e.g. a trainer's run folder): the step is then skipped
    done: Callable[[Store, list[Any], Any, dict[str, Any]], str | None] | None = None
    #: what a recipe step adds to its parameters (e.g. an export step owns its folder: it may overwrite it)
    recipe: Callable[[dict[str, Any], str | None, dict[str, Any]], dict[str, Any]] | None = None
    #: the version a step would make, without running it (``curate run --dry-run``): ``(name, parent ids, op)``
    #: from the store, the positional input, the input version's ``(name, id)`` (None unless the input is a
    #: version), the keys and the options; None where only running the step can tell (it reads the source)
    plan: Callable[..., tuple[str, list[str], dict[str, Any]] | None] | None = None


OPS: dict[str, Op] = {}


def register(op: Op, *, replace: bool = False) -> Op:
    """Add ``op`` to ``OPS``: it becomes a CLI command, a recipe step kind and ``curate.ops.run(op.name, ...)``."""
    if op.name in OPS and not replace:
        raise CurateError(f"operation {op.name!r} is already registered")
    OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    if name not in OPS:
        raise CurateError(f"unknown operation {name!r} (available: {', '.join(OPS)})")
    return OPS[name]


def run(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run a registered operation by name, as the Python API: ``run("select", "gsm8k", method="random", budget=5)``."""
    return get_op(name).fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------ version summaries
def _version_json(v: Version) -> dict[str, Any]:
    return {"ref": v.ref, "name": v.name, "id": v.id, "rows": len(v), "stats": v.manifest.get("stats", {})}


def _compare_json(v: Version) -> dict[str, Any]:
    keep = (
        "arm",
        "seed",
        "rows",
        "trained_tokens",
        "heldout_loss",
        "accuracy",
        "heldout_reward",
        "select_s",
        "train_s",
        "score_s",
    )
    runs = [{k: r[k] for k in keep if r.get(k) is not None} for r in v.to_pylist()]
    return {"ref": v.ref, "id": v.id, "runs": runs, "summary": v.manifest.get("stats", {}).get("summary", [])}


def _version_line(v: Version, params: dict[str, Any]) -> str:
    st = v.manifest.get("stats", {})
    if "layout" in st:
        return f"{v.ref} id={v.id} rows={len(v)} layout={st['layout']}"
    extra = f" stats={json.dumps(st)[:300]}" if st and set(st) != {"rows"} else ""
    return f"{v.ref} id={v.id} rows={len(v)}{extra}"


def _select_line(v: Version, params: dict[str, Any]) -> str:
    from curate.selectors import get_selector

    st = v.manifest.get("stats", {})
    line = f"{v.ref} id={v.id} kept {st.get('kept', len(v))}, dropped {st.get('dropped', 0)} {st.get('reasons', '')}"
    return "\n".join([line, *get_selector(v.op["method"]).summary_lines(st, params)])


# ------------------------------------------------------------------------------------------ import / sample / save
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
    """Import jsonl / json / parquet / csv / a saved HF dataset / a hub id / a trainer export into canonical columns.

    >>> v = curate.import_data("../shared/data/gsm8k/test.jsonl", name="gsm8k")   # doctest: +SKIP
    >>> len(v), v.columns[:4]                                                   # doctest: +SKIP
    (1319, ['id', 'messages', 'prompt', 'answer'])
    """
    from curate.formats import get_format, read_import
    from curate.io import read_source
    from curate.records import normalise_stream, parse_mapping

    s = get_store(store)
    validate_name(name)
    if format is not None and not get_format(format).plain_import:
        table, op = read_import(source, format=format, data_source=data_source, split=split)
        return s.materialise(name, [], op, lambda: {"table": table, "stats": {"layout": format, "rows": len(table)}})
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

    def compute() -> dict[str, Any]:
        # Every row is read and checked here; a large file comes back as chunks the store writes as they come.
        tables, layout, rows = normalise_stream(
            src.chunks, source=source, mapping=m, data_source=name, set_data_source=data_source
        )
        read_s = round(time.perf_counter() - t0, 4)
        return {
            "table": tables,
            "stats": {"layout": layout, "rows": rows},
            "timings": {"read_normalise_s": read_s},
        }

    return s.materialise(name, [], op, compute)


def sample(
    which: str, *, name: str | None = None, n: int = 500, seed: int = 0, store: Store | str | None = None
) -> Version:
    """Write a built-in sample dataset (``sample-sft`` or ``sample-math``) into the store."""
    from curate.records import to_table
    from curate.samples import SAMPLES

    if which not in SAMPLES:
        raise InputError(f"unknown sample {which!r} (available: {', '.join(SAMPLES)})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"--n must be a positive integer, got {n!r}")
    s = get_store(store)

    def compute() -> dict[str, Any]:
        table = to_table(SAMPLES[which](n, seed=seed), source=which)
        return {"table": table, "stats": {"rows": table.num_rows}}

    return s.materialise(name or which, [], {"name": "sample", "sample": which, "n": n, "seed": seed}, compute)


def save(
    data: Any,
    *,
    name: str,
    parents: Sequence[str | Version] = (),
    op: dict[str, Any] | None = None,
    store: Store | str | None = None,
) -> Version:
    """Commit a table as a new version of ``name`` with its lineage; saving the same table twice is a no-op.

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


def load(ref: str | Version, *, store: Store | str | None = None) -> Version:
    """A version by ref: ``name``, ``name@latest``, ``name@v3``, ``name@<id-prefix>``, ``name@<tag>``."""
    return get_store(store).load(ref)


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


# ------------------------------------------------------------------------------------------ select / rollout / synth
def _services() -> dict[str, Any]:
    """What a selector may ask the operations layer for (``Selector.uses``): selectors never import the trainers."""
    from curate.train import sft

    return {"train_sft": sft}


@dataclass(frozen=True)
class SelectOptions:
    """Options of ``select`` whatever the method: what is accepted, never what is computed, so they stay out of
    the recipe and the version id."""

    allow_empty: bool = False
    """Accept a selection that keeps no row of a non-empty input (a budget of 0, a fraction of a few rows)."""


def select(
    ref: str | Version,
    *,
    method: str,
    name: str | None = None,
    store: Store | str | None = None,
    allow_empty: bool = True,
    **params,
):
    """Run a selector (``curate.selectors.SELECTORS``) on ``ref`` and commit the kept rows with their decisions.

    ``allow_empty=False`` (what ``curate select`` and recipe steps do unless told ``--allow-empty``) makes a
    selection that keeps no row of a non-empty input an error; in Python an empty result is a version like any other.

    >>> v = curate.select("sample-sft", method="random", budget=50, name="sft-rand")   # doctest: +SKIP
    """
    from curate.selectors import empty_selection, run_selector

    v = run_selector(
        ref, method=method, name=name, store=store, services=_services(), allow_empty=allow_empty, **params
    )
    if len(v) == 0 and not allow_empty and (rows := len(get_store(store).load(ref))):
        # an empty version committed earlier (with --allow-empty) and found again: refused the same way
        raise empty_selection(method, rows, v.manifest.get("stats", {}), v.ref)
    return v


def _select_step(ref: str | Version, *, allow_empty: bool = False, **kwargs: Any) -> Version:
    """``select`` as ``curate select`` and a recipe step run it: keeping no row is an error unless allowed."""
    return select(ref, allow_empty=allow_empty, **kwargs)


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {p.name: p.default for p in options.params_of(fn) if p.default is not inspect.Parameter.empty}


def _plan_sample(store: Store, which: str, parent: Any, keys: dict[str, Any], params: dict[str, Any]):
    p = {**_defaults(sample), **params}
    return keys.get("name") or which, [], {"name": "sample", "sample": which, "n": p["n"], "seed": p["seed"]}


def _plan_select(store: Store, ref: str, parent: tuple[str, str] | None, keys: dict[str, Any], params: dict[str, Any]):
    from curate.selectors import make_selector

    if parent is None:
        return None
    method = keys["method"]
    params = {k: v for k, v in params.items() if k not in {p.name for p in options.params_of(SelectOptions)}}
    selector = make_selector(method, **params)
    op = {"name": "select", "method": method, "params": selector.get_params()}  # as run_selector makes it
    try:
        op.update(selector.identity())  # resolves the models: one that is not there yet is fetched by the run
        extra = [store.load(p).id for p in selector.extra_parents()]
    except CurateError:
        return None
    return keys.get("name") or f"{parent[0]}-{method}", [parent[1], *extra], op


def _config(cls: type, config: Any, params: dict[str, Any], what: str) -> Any:
    return options.build(cls, options.check_params(params, cls, what), base=config)


def rollout(ref: str | Version, *, name: str | None = None, store: Store | str | None = None, config=None, **params):
    """Sample ``n`` completions per prompt of ``ref`` with rewards (``RolloutConfig`` fields as keywords).

    >>> v = curate.rollout("sample-math", n=8, max_tokens=128, name="math-rollouts")   # doctest: +SKIP
    """
    from curate.rollouts import RolloutConfig
    from curate.rollouts import rollout as run_rollout

    return run_rollout(ref, _config(RolloutConfig, config, params, "rollout"), name=name, store=store)


def synth(method: str = "condor", *, name: str, store: Store | str | None = None, config=None, **params) -> Version:
    """Synthesise a dataset with a synthesizer (``curate.synthesizers.SYNTHESIZERS``), config fields as keywords.

    >>> v = curate.synth("condor", name="condor-demo", limit=4, tasks=("daily_chat",))   # doctest: +SKIP
    """
    entry = _SYNTH.get(method)
    return entry.run(_config(entry.config, config, params, f"synth {method}"), name=name, store=store)


def train(ref: Any, *, kind: str = "sft", store: Store | str | None = None, config=None, **params) -> Any:
    """Train on a version, a ref or a table with a trainer (``curate.train.TRAINERS``), config fields as keywords."""
    entry = _TRAIN.get(kind)
    return entry.run(ref, _config(entry.config, config, params, f"train {kind}"), store=store)


def train_sft(ref: Any, *, store: Store | str | None = None, config=None, **params) -> Any:
    """Supervised fine-tuning (``SFTConfig`` fields as keywords): ``curate.train_sft("gsm8k", max_steps=10)``."""
    return train(ref, kind="sft", store=store, config=config, **params)


def train_grpo(ref: Any, *, store: Store | str | None = None, config=None, **params) -> Any:
    """GRPO on a prompts version (``GRPOConfig`` fields as keywords)."""
    return train(ref, kind="grpo", store=store, config=config, **params)


def compare(ref: str | Version, *, name: str, store: Store | str | None = None, config=None, **params) -> Version:
    """Did a selection help? Select, fine-tune per seed and score held-out NLL per arm (``curate.comparison``).

    >>> v = curate.compare("pool", eval_ref="heldout", arms=("fisher", "random"), name="cmp")  # doctest: +SKIP
    """
    from curate.comparison import CompareConfig
    from curate.comparison import compare as run_compare

    config = _config(CompareConfig, config, params, "compare")
    return run_compare(ref, config, name=name, store=store, services=_services())


def _compare_line(v: Version, params: dict[str, Any]) -> str:
    from curate.comparison import verdict

    said = {
        "heldout_loss": "heldout_loss: token-mean NLL, lower is better",
        "accuracy": "accuracy: greedy answers correct, higher is better",
        "heldout_reward": "heldout_reward: mean reward of greedy answers, higher is better",
    }
    summary = v.manifest.get("stats", {}).get("summary", [])
    metrics = "; ".join(said.get(m, m) for m in dict.fromkeys(row["metric"] for row in summary))
    lines = [f"{v.ref} id={v.id} runs={len(v)}  ({metrics}; 95% intervals)"]
    for row in summary:
        line = f"  {row['metric']:<12} {row['arm']:<24} {row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
        if "vs_random" in row:
            d = row["vs_random"]
            line += f"  vs random {d['diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] {verdict(row)}"
        lines.append(line)
    return "\n".join(lines)


@dataclass
class ExportOptions:
    """Options of every export format."""

    drop_labels: bool = False
    """Leave token-level labels out (formats that cannot hold them refuse a labelled version otherwise)."""
    overwrite: bool = False
    """Write into a non-empty --out folder (or over an existing --out file)."""


def export(ref: str | Version, *, format: str, out: str | Path, store: Store | str | None = None, **opts: Any):
    """Export a version for a trainer (``curate.formats.FORMATS``) or as plain jsonl / parquet.

    Returns a ``curate.formats.ExportResult``: ``out_dir``, ``files`` and the ``note`` the CLI prints.

    >>> r = curate.export("math-curriculum", format="verl", out="exports/verl")   # doctest: +SKIP
    """
    from curate.formats import export_version

    _FORMAT.get(format)
    return export_version(get_store(store).load(ref), format=format, out=out, **opts)


# ------------------------------------------------------------------------------------------ the table
def _selectors() -> Mapping[str, Any]:
    from curate.selectors import SELECTORS

    return SELECTORS


def _trainers() -> Mapping[str, Any]:
    from curate.train import TRAINERS

    return TRAINERS


def _synthesizers() -> Mapping[str, Any]:
    from curate.synthesizers import SYNTHESIZERS

    return SYNTHESIZERS


def _formats() -> Mapping[str, Any]:
    from curate.formats import FORMATS

    return FORMATS


def _export_in_recipe(keys: dict[str, Any], fmt: str | None, params: dict[str, Any]) -> dict[str, Any]:
    from curate.formats import holds_export

    # The recipe owns its export folder: after a changed step, its own earlier export there is replaced.
    return {"overwrite": holds_export(keys["out"], fmt), **params}


def _compare_config() -> type:
    from curate.comparison import CompareConfig

    return CompareConfig


def _rollout_config() -> type:
    from curate.rollouts import RolloutConfig

    return RolloutConfig


_SELECT = Variant("method", _selectors)
_TRAIN = Variant("kind", _trainers, default="sft", subcommand=True, label="trainer")
_SYNTH = Variant("method", _synthesizers, default="condor", subcommand=True, label="synthesizer")
_FORMAT = Variant("format", _formats, label="export format")
_NAME = Key("name", str | None, help="Output dataset name.")


register(
    Op(
        "import",
        import_data,
        "Import data into canonical columns as a new version.",
        input="source",
        keys=(Key("name", str, help="Dataset name in the store.", required=True),),
        target=lambda entry: import_data,
        aliases={"map": "mapping"},
        summary=_version_line,
    )
)
register(
    Op(
        "sample",
        sample,
        "Write a built-in sample dataset (sample-sft or sample-math) into the store.",
        input="which",
        keys=(Key("name", str | None, help="Dataset name (default: the sample's name)."),),
        target=lambda entry: sample,
        summary=_version_line,
        plan=_plan_sample,
    )
)
register(
    Op(
        "select",
        _select_step,
        "Score and select rows: curate select REF --method NAME --name OUT [--budget K | --fraction F | ...].",
        keys=(_NAME,),
        variant=_SELECT,
        target=lambda cls: (cls, SelectOptions),
        summary=_select_line,
        plan=_plan_select,
    )
)
register(
    Op(
        "rollout",
        rollout,
        "Sample completions with rewards: curate rollout REF --n 8 --name OUT [--model M --backend B ...].",
        keys=(_NAME,),
        target=lambda entry: _rollout_config(),
        summary=_version_line,
    )
)
register(
    Op(
        "synth",
        synth,
        "Synthesise data: condor.",
        input=None,
        keys=(Key("name", str, help="Output dataset name.", required=True),),
        variant=_SYNTH,
        target=lambda entry: entry.config,
        summary=_version_line,
    )
)
register(
    Op(
        "train",
        train,
        "Train on a store version: sft or grpo.",
        variant=_TRAIN,
        target=lambda entry: entry.config,
        aliases={"eval": "eval_ref"},
        makes_version=False,
        summary=lambda result, params: f"done {result}",
        as_json=lambda result: {"out": str(result.out), "metrics": result.metrics},
        output=lambda result: str(result.out),
        done=lambda store, args, entry, params: entry.finished(
            store.load(args[0]), _config(entry.config, None, params, "train")
        ),
    )
)


def _export_summary(result: Any, params: dict[str, Any]) -> str:
    # --out -: stdout carries the jsonl alone, so the trainer note goes to stderr
    if result.text is not None:
        import sys

        print(result.note, file=sys.stderr)
        return result.text.removesuffix("\n")
    return f"wrote {result.out_dir}\n{result.note}"


register(
    Op(
        "export",
        export,
        "Export a version for a trainer, with the lines that trainer needs; or as plain jsonl / parquet.",
        keys=(
            Key("out", str, help="Output directory, a .jsonl / .parquet file, or - (jsonl on stdout).", required=True),
        ),
        variant=_FORMAT,
        target=lambda fmt: (ExportOptions, fmt.options),
        recipe=_export_in_recipe,
        makes_version=False,
        summary=_export_summary,
        as_json=lambda result: {"out": str(result.out_dir), "files": [str(f) for f in result.files]},
        output=lambda result: str(result.out_dir),
    )
)


register(
    Op(
        "compare",
        compare,
        "Did the selection help? curate compare POOL --arms fisher,random --budget 32 --seeds 3 --eval HELDOUT.",
        keys=(Key("name", str, help="Output dataset name (one row per arm and seed).", required=True),),
        target=lambda entry: _compare_config(),
        aliases={"eval": "eval_ref", "set": "arm_options"},
        summary=_compare_line,
        as_json=_compare_json,
    )
)


# ------------------------------------------------------------------------------------------ one recipe step
@dataclass
class StepResult:
    index: int
    kind: str
    output: str  # a ref or an output path
    skipped: bool  # True when the store (or the run folder) already had the result
    seconds: float


def split_step(op: Op, raw: dict[str, Any], where: str) -> tuple[dict[str, Any], str | None, Any, dict[str, Any]]:
    """A recipe step's parameters as ``(keys, variant name, variant entry, options)``, every one checked: an
    unknown or misspelled name, a value of the wrong type, a missing required key is refused here, before any
    step of the recipe runs."""
    raw = dict(raw)
    keys = {}
    own = {k.name: k for k in op.keys}
    if op.input:
        own[op.input] = Key(op.input, str | None)
    for k in own.values():
        if k.name in raw:
            options.check_type(k.name, raw[k.name], k.type, where)
            keys[k.name] = raw.pop(k.name)
        elif k.required:
            raise CurateError(f"{where}: '{k.name}' is required")
    choice, entry = None, None
    if op.variant is not None:
        choice = raw.pop(op.variant.key, None)
        if choice is None and op.variant.default is None:
            raise CurateError(f"{where}: '{op.variant.key}' is required")
        options.check_type(op.variant.key, choice, str | None, where)
        entry = op.variant.get(choice, where)
        choice = choice or op.variant.default
    return keys, choice, entry, options.check_params(raw, op.target(entry), where)


def run_step(index: int, kind: str, raw: dict[str, Any], previous: str | None, store: Store, where: str) -> StepResult:
    """Run one recipe step through its op; ``previous`` is the input when the step names no ``ref``."""
    op = get_op(kind)
    keys, choice, entry, params = split_step(op, raw, where)
    args = []
    if op.input is not None:
        value = keys.pop(op.input, None) or (previous if op.input == "ref" else None)
        if value is None:
            raise CurateError(f"{where}: no input {op.input} (give '{op.input}:' or put a data step before it)")
        args.append(value)
    if op.variant is not None:
        keys[op.variant.key] = choice
    if op.recipe is not None:
        params = op.recipe(keys, choice, params)
    t0 = time.perf_counter()
    written = store.written
    if op.done is not None and (finished := op.done(store, args, entry, params)) is not None:
        return StepResult(index, kind, finished, True, round(time.perf_counter() - t0, 3))
    result = op.fn(*args, store=store, **keys, **params)
    output = op.output(result)
    skipped = op.makes_version and store.written == written
    return StepResult(index, kind, output, skipped, round(time.perf_counter() - t0, 3))


__all__ = [
    "OPS",
    "Key",
    "Op",
    "SelectOptions",
    "StepResult",
    "Variant",
    "as_table",
    "compare",
    "diff",
    "export",
    "get_op",
    "import_data",
    "load",
    "register",
    "rollout",
    "run",
    "run_step",
    "sample",
    "save",
    "select",
    "split_step",
    "synth",
    "train",
    "train_grpo",
    "train_sft",
]
