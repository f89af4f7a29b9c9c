"""The read-only commands of the CLI: views of the store (ls, show, log, diff, verify, gc, tag), the model and
method listings, reports and ``run``. ``curate/cli.py`` registers them next to the commands it builds from
``curate.ops.OPS``; each prints what a library call returns and holds no logic of its own.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from curate import options

PLAIN = {"markup": False, "highlight": False}  # data (values, names, reasons) is never rich markup
out = Console()
err = Console(stderr=True)


def ls_cmd(name: Optional[str] = typer.Argument(None, help="List the versions of one dataset.")):  # noqa: UP045
    """List datasets, or one dataset's versions and tags."""
    from curate.store import get_store

    s = get_store()
    if name is None:
        t = Table("dataset", "versions", "latest", "rows", "op")
        for ds in s.datasets():
            vs = s.versions(ds)
            t.add_row(ds, str(len(vs)), vs[-1].ref, str(len(vs[-1])), vs[-1].op.get("name", ""))
        out.print(t)
        return
    tags = s.tags(name)
    t = Table("ref", "id", "rows", "op", "tags", "created")
    for v in s.versions(name):
        tagged = ",".join(k for k, x in tags.items() if x == v.id)
        t.add_row(v.ref, v.id, str(len(v)), _op_summary(v.op), tagged, v.manifest.get("created", ""))
    out.print(t)


def _op_summary(op: dict[str, Any]) -> str:
    return " ".join(str(op[k]) for k in ("name", "method") if op.get(k))


def show_cmd(
    ref: str,
    rows: int = typer.Option(5, "--rows", help="Rows to print."),
    as_json: bool = typer.Option(False, "--json", help="Print manifest and rows as JSON."),
):
    """Show a version: manifest summary and the first rows."""
    from curate.store import get_store

    v = get_store().load(ref)
    head = v.to_arrow().slice(0, rows).to_pylist()
    if as_json:
        print(json.dumps({"ref": v.ref, "manifest": v.manifest, "rows": head}, indent=1, default=str))
        return
    out.print(f"{v.ref} id={v.id} rows={len(v)} op={_op_summary(v.op)}", **PLAIN)
    out.print("columns: " + ", ".join(f"{c['name']}:{c['type']}" for c in v.manifest["schema"]), **PLAIN)
    if v.manifest.get("stats"):
        out.print("stats: " + json.dumps(v.manifest["stats"], default=str)[:400], **PLAIN)
    for r in head:
        out.print(json.dumps(r, ensure_ascii=False, default=str)[:600], **PLAIN)


def log_cmd(ref: str):
    """The lineage tree of a version, with each op and its parameters."""
    from curate.store import lineage

    def add(node: Tree, info: dict[str, Any]) -> None:
        op = dict(info["op"])
        label = f"[bold]{escape(info['ref'])}[/] ({info['rows']} rows) [cyan]{escape(str(op.pop('name', '?')))}[/]"
        child = node.add(label + (" " + escape(json.dumps(op, default=str)[:300]) if op else ""))
        for p in info["parents"]:
            add(child, p)

    root = Tree("lineage")
    add(root, lineage(ref))
    out.print(root)


def diff_cmd(a: str, b: str, as_json: bool = typer.Option(False, "--json")):
    """Rows added / removed / changed (by id) and column changes from A to B."""
    from curate.ops import diff

    d = diff(a, b)
    if as_json:
        print(json.dumps(d, indent=1))
        return
    n = {k: len(d[k]) for k in ("added", "removed", "changed")}
    out.print(f"{d['a']} -> {d['b']}: +{n['added']} added, -{n['removed']} removed, ~{n['changed']} changed", **PLAIN)
    for k in ("columns_added", "columns_removed", "columns_retyped"):
        if d[k]:
            out.print(f"{k.replace('_', ' ')}: {d[k]}", **PLAIN)


def verify_cmd(
    ref: Optional[str] = typer.Argument(None, help="One version (default: the whole store)."),  # noqa: UP045
    cache: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--cache/--no-cache", help="Re-hash every cache shard too (default: on for the whole store only)."
    ),
):
    """Check manifests, refs, row counts and every file's sha256 (and cache shards); exit 1 on any problem."""
    from curate.store import get_store

    problems = get_store().verify(ref, cache=cache)
    for p in problems:  # one line per problem, as printed: no markup (paths hold brackets), no wrapping
        err.print(p, style="red", soft_wrap=True, **PLAIN)
    if problems:
        raise typer.Exit(1)
    out.print("[green]ok[/]")


def gc_cmd(
    remove: bool = typer.Option(False, "--remove", help="Delete what is listed (default: only list it)."),
    min_age: float = typer.Option(
        3600.0, "--min-age", help="Seconds: younger leftovers may belong to a command still running and are kept."
    ),
):
    """List (with --remove, delete) leftovers: staging folders of killed commits, temp files, bad cache shards."""
    from curate.store import get_store

    found = get_store().gc(remove=remove, min_age_s=min_age)
    for p in found:
        out.print(p, soft_wrap=True, **PLAIN)
    if remove:
        out.print(f"removed {len(found)}")
    else:
        out.print(
            f"{len(found)} leftover(s); `curate gc --remove` deletes them" if found else "nothing to remove", **PLAIN
        )


def tag_cmd(ref: str, tag: str):
    """Point a tag at a version (name@tag)."""
    from curate.store import get_store

    v = get_store().tag(ref, tag)
    out.print(f"{v.name}@{tag} -> {v.id}", **PLAIN)


def models_cmd(prepare: bool = typer.Option(False, "--prepare", help="Convert the default LM once, now.")):
    """List model aliases, where each resolves, and whether it is present."""
    from curate.models import DEFAULT_LM, models_table

    if prepare:
        from curate.models import prepare as prepare_model

        out.print(f"{DEFAULT_LM}: {prepare_model(DEFAULT_LM)}")
    t = Table("alias", "package", "resolves to", "present", "converted")
    for r in models_table():
        converted = "n/a" if r.get("converted") is None else str(r["converted"])
        t.add_row(r["alias"], r["package"], str(r["resolves_to"]), str(r["present"]), converted)
    out.print(t)


def methods_cmd():
    """Every selector method with its options (flags derive from the selector's parameters)."""
    import inspect

    from curate.selectors import SELECTORS

    for name, cls in sorted(SELECTORS.items()):
        doc = (inspect.getdoc(sys.modules[cls.__module__]) or "").splitlines()[0]
        out.print(f"[bold]{name}[/]: {escape(doc)}")
        for flag, typ, default, _ in options.help_rows(cls):
            out.print(f"    {flag} ({typ}) default {default}", **PLAIN)


def report_cmd(ref: str, out_path: str = typer.Option("report.html", "--out", help="HTML file to write.")):
    """One self-contained HTML page with plots of what an op did to a version."""
    from curate.report import write_report

    out.print(f"[green]wrote[/] {write_report(ref, out_path)}")


def run_cmd(
    recipe: str = typer.Argument(..., help="A YAML recipe, e.g. pipelines/sft-fisher.yaml."),
    set_: list[str] = typer.Option(None, "--set", help="Override: VAR=value, KIND.param=value."),
):
    """Run a pipeline recipe step by step; finished steps are found in the store and skipped."""
    from curate.pipeline import run_pipeline

    def show(r):
        state = "[dim]skipped (done)[/]" if r.skipped else f"[green]done[/] in {r.seconds:.1f}s"
        out.print(f"step {r.index} {r.kind}: {escape(r.output)} {state}")

    run_pipeline(recipe, overrides=set_ or (), on_step=show)


COMMANDS = {
    "ls": ls_cmd,
    "show": show_cmd,
    "log": log_cmd,
    "diff": diff_cmd,
    "verify": verify_cmd,
    "gc": gc_cmd,
    "tag": tag_cmd,
    "models": models_cmd,
    "methods": methods_cmd,
    "report": report_cmd,
    "run": run_cmd,
}
