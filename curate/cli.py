"""The ``curate`` command line: parse flags, call the API, print with rich. No logic lives here.

Options of ``select``, ``rollout``, ``train`` and ``synth`` derive from the selector's ``__init__`` or the op's
config dataclass (``keep_per_prompt`` -> ``--keep-per-prompt``), so the CLI, the Python API and the YAML
pipelines can never disagree. ``curate methods`` lists every selector with its options, ``curate select --method
NAME --help`` one selector's; ``--help`` on ``rollout``, ``train sft|grpo`` and ``synth condor`` lists theirs, with
each field's docstring.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from curate.errors import CurateError

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Curate post-training data for LLMs.", context_settings=HELP
)
train_app = typer.Typer(no_args_is_help=True, help="Train on a store version: sft or grpo.", context_settings=HELP)
synth_app = typer.Typer(no_args_is_help=True, help="Synthesise data: condor.", context_settings=HELP)
app.add_typer(train_app, name="train")
app.add_typer(synth_app, name="synth")
out = Console()
err = Console(stderr=True)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _main(
    store: str | None = typer.Option(
        None,
        "--store",
        envvar="CURATE_STORE",  # noqa: UP045
        help="Store root (default ./.curate).",
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Let model folders run the Python code they ship (auto_map); off by default. Env: "
        "CURATE_TRUST_REMOTE_CODE=1.",
    ),
):
    from curate.api import set_store

    set_store(store)
    if trust_remote_code:  # unset leaves CURATE_TRUST_REMOTE_CODE in charge
        from curate.models import set_trust_remote_code

        set_trust_remote_code(True)


# ------------------------------------------------------------------------------------------ option parsing
def _coerce(value: str | None, annotation: Any, flag: str) -> Any:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if value is None or value.lower() in ("none", "null"):
            return None
        return _coerce(value, args[0], flag)
    if annotation is bool:
        return True if value is None else value.lower() in ("1", "true", "yes", "on")
    if value is None:
        raise CurateError(f"{flag} needs a value")
    try:
        if origin in (tuple, list):
            parts = [p for p in value.split(",") if p != ""]
            inner = args[0] if args else str
            return tuple(_coerce(p, inner, flag) for p in parts)
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
    except ValueError:
        raise CurateError(f"{flag}: cannot read {value!r} as {getattr(annotation, '__name__', annotation)}") from None
    return value


def parse_extra(extra: list[str], target: Any, *, what: str) -> dict[str, Any]:
    """``["--keep-per-prompt", "4", "--no-drop-zero-variance"]`` -> kwargs, typed by ``target``'s signature."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        names = [f.name for f in dataclasses.fields(target)]
    else:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        names = [p for p in inspect.signature(target).parameters if p not in ("self", "version", "ref")]
    kwargs: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise CurateError(f"unexpected argument {tok!r}")
        key, eq, inline = tok[2:].partition("=")
        negate = key.startswith("no-") and key[3:].replace("-", "_") in names
        field = (key[3:] if negate else key).replace("-", "_")
        if field not in names:
            raise CurateError(
                f"{what}: unknown option --{key} (options: {', '.join('--' + n.replace('_', '-') for n in names)})"
            )
        ann = hints.get(field, str)
        is_bool = ann is bool or (
            typing.get_origin(ann) in (typing.Union, types.UnionType) and bool in typing.get_args(ann)
        )
        if negate:
            kwargs[field] = False
        elif is_bool and not eq and (i + 1 >= len(extra) or extra[i + 1].startswith("--")):
            kwargs[field] = True
        else:
            if eq:
                value = inline
            else:
                if i + 1 >= len(extra):
                    raise CurateError(f"--{key} needs a value")
                value = extra[i + 1]
                i += 1
            kwargs[field] = _coerce(value, ann, f"--{key}")
        i += 1
    return kwargs


def _params_doc(target: Any) -> list[tuple[str, str, str]]:
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        return [
            (
                "--" + f.name.replace("_", "-"),
                _type_name(hints[f.name]),
                repr(f.default) if f.default is not dataclasses.MISSING else "",
            )
            for f in dataclasses.fields(target)
        ]
    hints = typing.get_type_hints(target.__init__)
    sig = inspect.signature(target)
    return [
        ("--" + n.replace("_", "-"), _type_name(hints.get(n, str)), repr(p.default))
        for n, p in sig.parameters.items()
        if n != "self"
    ]


def _type_name(t: Any) -> str:
    return str(t).replace("typing.", "") if not isinstance(t, type) else t.__name__


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass, first paragraph, on one line."""
    import ast
    import textwrap

    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    except (OSError, TypeError, IndexError, AttributeError):
        return {}
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split("\n\n")[0].split())
    return docs


def _options_command(target: str | Callable[[Any], Any]) -> type:
    """A command class whose ``--help`` also lists the flags derived from ``target``: ``"module:Config"``, or a
    function of the click context giving the class (``None``: nothing to add)."""
    from typer.core import TyperCommand

    class DerivedOptions(TyperCommand):
        def format_help(self, ctx: Any, formatter: Any) -> None:
            import importlib
            import io
            import shutil

            import typer.core

            super().format_help(ctx, formatter)
            if isinstance(target, str):
                module, name = target.split(":")
                cls = getattr(importlib.import_module(module), name)
            else:
                cls = target(ctx)
            rich_help = typer.core.HAS_RICH and self.rich_markup_mode is not None
            # Rich help is printed as it is made; plain click help is buffered in the formatter, so join it there.
            console = Console() if rich_help else Console(file=io.StringIO(), width=shutil.get_terminal_size().columns)
            if isinstance(cls, str):
                console.print(cls, markup=False)
            elif cls is not None:
                _print_options(console, cls)
            if not rich_help:
                formatter.write("\n" + console.file.getvalue())

    return DerivedOptions


def _print_options(console: Console, cls: type) -> None:
    """A table of ``cls``'s flags (a config dataclass's fields or a selector's ``__init__``), with their docs."""
    params = _params_doc(cls)
    if dataclasses.is_dataclass(cls):
        docs = _field_docs(cls)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    else:
        docs = {}
        defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items()}
    columns = ("option", "type", "default", "what it does") if docs else ("option", "type", "default")
    t = Table(*columns, title=f"Options (from {cls.__name__})")
    for flag, typ, default in params:
        field = flag[2:].replace("-", "_")
        if isinstance(defaults.get(field), tuple):  # as typed on the command line
            default = ",".join(map(str, defaults[field]))
        cells = (flag, typ, default, docs.get(field, "").replace("``", ""))[: len(columns)]
        t.add_row(*map(escape, cells))  # the docs hold brackets ("[tags]") that are not rich markup
    console.print(t)
    if switches := [flag for flag, typ, _ in params if typ == "bool"]:
        console.print(f"Switch a boolean off with --no-FLAG (e.g. --no-{switches[0][2:]}).", markup=False)


def _selector_for_help(ctx: Any) -> Any:
    # --method is eager, so `curate select --method fisher --help` has it here (given after --help, it is not).
    from curate.selectors import SELECTORS

    method = ctx.params.get("method")
    if method in SELECTORS:
        return SELECTORS[method]
    return f"Give --method NAME before --help for a method's options ({', '.join(sorted(SELECTORS))})."


# ------------------------------------------------------------------------------------------ data commands
@app.command("import")
def import_cmd(
    source: str = typer.Argument(..., help="jsonl / json / parquet / csv file, saved HF dataset dir, or hub id."),
    name: str = typer.Option(..., "--name", help="Dataset name in the store."),
    map_: list[str] = typer.Option(None, "--map", help="canonical=source field renames, repeatable."),
    split: str = typer.Option("train", help="Split for HF datasets."),
    format_: Optional[str] = typer.Option(None, "--format", help="Read a trainer export (trl-sft, verl, ...)."),  # noqa: UP045
):
    """Import data into canonical columns as a new version."""
    from curate.api import import_data

    v = import_data(source, name=name, mapping=map_ or None, split=split, format=format_)
    out.print(f"[green]{v.ref}[/] id={v.id} rows={len(v)} layout={v.manifest['stats'].get('layout')}")


@app.command("sample")
def sample_cmd(
    which: str = typer.Argument(..., help="sample-sft or sample-math"),
    name: Optional[str] = typer.Option(None, help="Dataset name (default: the sample's name)."),  # noqa: UP045
    n: int = typer.Option(500, help="Rows."),
    seed: int = typer.Option(0, help="Seed."),
):
    """Write a built-in sample dataset into the store."""
    from curate.api import sample

    v = sample(which, name=name, n=n, seed=seed)
    out.print(f"[green]{v.ref}[/] id={v.id} rows={len(v)}")


@app.command("ls")
def ls_cmd(name: Optional[str] = typer.Argument(None, help="List the versions of one dataset.")):  # noqa: UP045
    """List datasets, or one dataset's versions and tags."""
    from curate.api import get_store

    s = get_store()
    if name is None:
        t = Table("dataset", "versions", "latest", "rows", "op")
        for ds in s.datasets():
            vs = s.versions(ds)
            last = vs[-1]
            t.add_row(ds, str(len(vs)), last.ref, str(len(last)), last.op.get("name", ""))
        out.print(t)
        return
    tags = s.tags(name)
    t = Table("ref", "id", "rows", "op", "tags", "created")
    for v in s.versions(name):
        t.add_row(
            v.ref,
            v.id,
            str(len(v)),
            _op_summary(v.op),
            ",".join(k for k, x in tags.items() if x == v.id),
            v.manifest.get("created", ""),
        )
    out.print(t)


def _op_summary(op: dict[str, Any]) -> str:
    name = op.get("name", "")
    if name == "select":
        return f"select {op.get('method')}"
    return name


@app.command("show")
def show_cmd(
    ref: str,
    rows: int = typer.Option(5, "--rows", help="Rows to print."),
    as_json: bool = typer.Option(False, "--json", help="Print manifest and rows as JSON."),
):
    """Show a version: manifest summary and the first rows."""
    from curate.api import load

    v = load(ref)
    head = v.to_arrow().slice(0, rows).to_pylist()
    if as_json:
        print(json.dumps({"ref": v.ref, "manifest": v.manifest, "rows": head}, indent=1, default=str))
        return
    out.print(f"[bold]{v.ref}[/] id={v.id} rows={len(v)} op={_op_summary(v.op)}")
    # Data (column names, values, stats) is printed as it is: never read as rich markup.
    plain = {"markup": False, "highlight": False}
    out.print("columns: " + ", ".join(f"{c['name']}:{c['type']}" for c in v.manifest["schema"]), **plain)
    if v.manifest.get("stats"):
        out.print("stats: " + json.dumps(v.manifest["stats"], default=str)[:400], **plain)
    for r in head:
        out.print(json.dumps(r, ensure_ascii=False, default=str)[:600], **plain)


@app.command("log")
def log_cmd(ref: str):
    """The lineage tree of a version, with each op and its parameters."""
    from curate.api import lineage

    def add(node: Tree, info: dict[str, Any]) -> None:
        op = dict(info["op"])
        label = f"[bold]{info['ref']}[/] ({info['rows']} rows) [cyan]{op.pop('name', '?')}[/]"
        if op:
            label += " " + escape(json.dumps(op, default=str)[:300])
        child = node.add(label)
        for p in info["parents"]:
            add(child, p)

    info = lineage(ref)
    root = Tree("lineage")
    add(root, info)
    out.print(root)


@app.command("diff")
def diff_cmd(a: str, b: str, as_json: bool = typer.Option(False, "--json")):
    """Rows added / removed / changed (by id) and column changes from A to B."""
    from curate.api import diff

    d = diff(a, b)
    if as_json:
        print(json.dumps(d, indent=1))
        return
    out.print(
        f"{d['a']} -> {d['b']}: +{len(d['added'])} added, -{len(d['removed'])} removed, ~{len(d['changed'])} changed"
    )
    for k in ("columns_added", "columns_removed", "columns_retyped"):
        if d[k]:
            out.print(f"{k.replace('_', ' ')}: {d[k]}", markup=False, highlight=False)


@app.command("verify")
def verify_cmd(
    ref: Optional[str] = typer.Argument(None, help="One version (default: the whole store)."),  # noqa: UP045
    cache: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--cache/--no-cache", help="Re-hash every cache shard too (default: on for the whole store only)."
    ),
):
    """Check manifests, refs, row counts and every file's sha256 (and cache shards); exit 1 on any problem."""
    from curate.api import get_store

    problems = get_store().verify(ref, cache=cache)
    for p in problems:
        # One line per problem, as printed: no markup (paths hold brackets) and no wrapping.
        err.print(p, style="red", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print("[green]ok[/]")


@app.command("gc")
def gc_cmd(
    remove: bool = typer.Option(False, "--remove", help="Delete what is listed (default: only list it)."),
    min_age: float = typer.Option(
        3600.0, "--min-age", help="Seconds: younger leftovers may belong to a command still running and are kept."
    ),
):
    """List (with --remove, delete) leftovers: staging folders of killed commits, temp files, bad cache shards."""
    from curate.api import get_store

    found = get_store().gc(remove=remove, min_age_s=min_age)
    for p in found:
        out.print(p, markup=False, highlight=False, soft_wrap=True)
    if remove:
        out.print(f"removed {len(found)}")
    elif found:
        out.print(f"{len(found)} leftover(s); `curate gc --remove` deletes them", markup=False)
    else:
        out.print("nothing to remove")


@app.command("tag")
def tag_cmd(ref: str, tag: str):
    """Point a tag at a version (name@tag)."""
    from curate.api import get_store

    v = get_store().tag(ref, tag)
    out.print(f"{v.name}@{tag} -> {v.id}")


@app.command("export")
def export_cmd(
    ref: str,
    format_: str = typer.Option(
        ..., "--format", help="trl-sft, trl-grpo, verl, verl-sft, openrlhf, llamafactory, hf, jsonl or parquet."
    ),
    out_path: str = typer.Option(..., "--out", help="Output directory (or a .jsonl / .parquet file)."),
    style: Optional[str] = typer.Option(None, help="trl-sft: messages or prompt-completion."),  # noqa: UP045
    split: Optional[str] = typer.Option(None, help="verl: the split written into extra_info."),  # noqa: UP045
    ability: Optional[str] = typer.Option(None, help="verl: the ability tag."),  # noqa: UP045
    reward_style: Optional[str] = typer.Option(None, help="verl: rule or model."),  # noqa: UP045
    dataset_name: Optional[str] = typer.Option(None, help="llamafactory: the dataset_info.json key."),  # noqa: UP045
    drop_labels: bool = typer.Option(False, "--drop-labels", help="Leave token-level labels out."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into a non-empty --out folder (or over an existing --out file)."
    ),
):
    """Export a version for a trainer, with the lines that trainer needs; or as plain jsonl / parquet."""
    from curate.api import export

    given = {
        "style": style,
        "split": split,
        "ability": ability,
        "reward_style": reward_style,
        "dataset_name": dataset_name,
    }
    options = {k: v for k, v in given.items() if v is not None}
    if drop_labels:
        options["drop_labels"] = True
    result = export(ref, format=format_, out=out_path, overwrite=overwrite, **options)
    out.print(f"[green]wrote[/] {result.out_dir}")
    # Plain print: rich would wrap the trainer command lines, and they must stay copy-pasteable.
    print(result.note)


@app.command("models")
def models_cmd(prepare: bool = typer.Option(False, "--prepare", help="Convert the default LM once, now.")):
    """List model aliases, where each resolves, and whether it is present."""
    from curate.models import DEFAULT_LM, models_table

    if prepare:
        from curate.models import prepare as prepare_model

        out.print(f"{DEFAULT_LM}: {prepare_model(DEFAULT_LM)}")

    t = Table("alias", "package", "resolves to", "present", "converted")
    for r in models_table():
        converted = r.get("converted")
        t.add_row(
            r["alias"],
            r["package"],
            str(r["resolves_to"]),
            str(r["present"]),
            "n/a" if converted is None else str(converted),
        )
    out.print(t)


# ------------------------------------------------------------------------------------------ methods
@app.command("methods")
def methods_cmd():
    """Every selector method with its options (flags derive from the selector's parameters)."""
    from curate.selectors import SELECTORS

    for name, cls in sorted(SELECTORS.items()):
        doc = (inspect.getdoc(sys.modules[cls.__module__]) or "").splitlines()[0]
        out.print(f"[bold]{name}[/]: {doc}")
        for flag, typ, default in _params_doc(cls):
            out.print(f"    {flag} ({typ}) default {default}")


@app.command("select", context_settings=EXTRA, cls=_options_command(_selector_for_help))
def select_cmd(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Input version."),
    method: str = typer.Option(..., "--method", is_eager=True, help="Selector name (see `curate methods`)."),
    name: Optional[str] = typer.Option(None, "--name", help="Output dataset name."),  # noqa: UP045
):
    """Score and select rows: curate select REF --method NAME --name OUT [--budget K | --fraction F | ...]."""
    from curate.selectors import get_selector, run_selector

    params = parse_extra(ctx.args, get_selector(method), what=f"--method {method}")
    v = run_selector(ref, method=method, name=name, **params)
    st = v.manifest.get("stats", {})
    out.print(
        f"[green]{v.ref}[/] id={v.id} kept {st.get('kept', len(v))}, dropped {st.get('dropped', 0)} "
        f"{escape(str(st.get('reasons', '')))}"
    )
    if params.get("report") and "leaks" in st:  # decontam --report: every leaked benchmark item
        from curate.selectors.decontam import leak_lines

        print("\n".join(leak_lines(st["leaks"]) or ["no benchmark item leaked"]))


@app.command("rollout", context_settings=EXTRA, cls=_options_command("curate.rollout:RolloutConfig"))
def rollout_cmd(ctx: typer.Context, ref: str, name: Optional[str] = typer.Option(None, "--name")):  # noqa: UP045
    """Sample completions with rewards: curate rollout REF --n 8 --name OUT [--model M --backend B ...]."""
    from curate.rollout import RolloutConfig, rollout

    config = RolloutConfig(**parse_extra(ctx.args, RolloutConfig, what="rollout"))
    v = rollout(ref, config, name=name)
    stats = escape(json.dumps(v.manifest.get("stats", {}))[:300])
    out.print(f"[green]{v.ref}[/] id={v.id} rows={len(v)} stats={stats}")


@train_app.command("sft", context_settings=EXTRA, cls=_options_command("curate.train.sft:SFTConfig"))
def train_sft_cmd(ctx: typer.Context, ref: str):
    """Supervised fine-tuning on a store version: curate train sft REF --model M --out DIR."""
    from curate.train import sft
    from curate.train.sft import SFTConfig

    # `--eval REF` is the documented spelling; the config field is eval_ref.
    args = ["--eval-ref" if a == "--eval" else a.replace("--eval=", "--eval-ref=", 1) for a in ctx.args]
    result = sft(ref, SFTConfig(**parse_extra(args, SFTConfig, what="train sft")))
    out.print(f"[green]done[/] {result}")


@train_app.command("grpo", context_settings=EXTRA, cls=_options_command("curate.train.grpo:GRPOConfig"))
def train_grpo_cmd(ctx: typer.Context, ref: str):
    """GRPO on a prompts version: curate train grpo REF --model M --reward R --out DIR."""
    from curate.train import grpo
    from curate.train.grpo import GRPOConfig

    result = grpo(ref, GRPOConfig(**parse_extra(ctx.args, GRPOConfig, what="train grpo")))
    out.print(f"[green]done[/] {result}")


@synth_app.command("condor", context_settings=EXTRA, cls=_options_command("curate.synth.condor:CondorConfig"))
def synth_condor_cmd(ctx: typer.Context, name: str = typer.Option(..., "--name")):
    """Condor knowledge-tree synthesis with self-reflection refinement."""
    from curate.synth.condor import CondorConfig, synth_condor

    v = synth_condor(CondorConfig(**parse_extra(ctx.args, CondorConfig, what="synth condor")), name=name)
    stats = escape(json.dumps(v.manifest.get("stats", {}))[:300])
    out.print(f"[green]{v.ref}[/] id={v.id} rows={len(v)} stats={stats}")


@app.command("report")
def report_cmd(ref: str, out_path: str = typer.Option("report.html", "--out", help="HTML file to write.")):
    """One self-contained HTML page with plots of what an op did to a version."""
    from curate.report import write_report

    out.print(f"[green]wrote[/] {write_report(ref, out_path)}")


@app.command("run")
def run_cmd(
    recipe: str = typer.Argument(..., help="A YAML recipe, e.g. pipelines/sft-fisher.yaml."),
    set_: list[str] = typer.Option(None, "--set", help="Override: VAR=value, KIND.param=value."),
):
    """Run a pipeline recipe step by step; finished steps are found in the store and skipped."""
    from curate.pipeline import run_pipeline

    def show(r):
        state = "[dim]skipped (done)[/]" if r.skipped else f"[green]done[/] in {r.seconds:.1f}s"
        out.print(f"step {r.index} {r.kind}: {r.output} {state}")

    run_pipeline(recipe, overrides=set_ or (), on_step=show)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of command-line parsing: typer's own (it vendors click), and click's."""
    kinds: list[type[BaseException]] = [typer.TyperException]
    try:
        import click

        kinds.append(click.exceptions.ClickException)
    except ImportError:  # typer >= 0.20 no longer needs click
        pass
    return tuple(kinds)


def _error_line(message: str) -> None:
    # One line whatever the message holds: no markup (messages quote brackets), no wrapping, no newlines.
    line = " ".join(str(message).splitlines()) or "(no message)"
    err.print(Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a ``CurateError`` or a command-line usage error becomes one line on stderr and exit
    code 2; ``--help`` / ``-h`` exit 0. Anything else is a bug and keeps its traceback."""
    try:
        rc = app(args=argv, prog_name="curate", standalone_mode=False)
    except CurateError as e:
        _error_line(str(e))
        sys.exit(2)
    except _usage_errors() as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            # Rich help was printed while the error was made; plain click help is the message itself.
            if not typer.core.HAS_RICH:
                print(e.format_message())  # type: ignore[attr-defined]
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (try: {ctx.command_path} --help)" if ctx is not None else ""
        _error_line(e.format_message() + hint)  # type: ignore[attr-defined]
        sys.exit(2 if hasattr(e, "ctx") else getattr(e, "exit_code", 1) or 1)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
