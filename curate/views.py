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
from curate.errors import CurateError

PLAIN = {"markup": False, "highlight": False}  # data (values, names, reasons) is never rich markup
out = Console()
err = Console(stderr=True)


def ls_cmd(
    name: Optional[str] = typer.Argument(None, help="List the versions of one dataset."),  # noqa: UP045
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
):
    """List datasets, or one dataset's versions and tags."""
    from curate.store import get_store

    s = get_store()
    if name is None:
        found = []
        for ds in s.datasets():
            vs = s.versions(ds)
            last = vs[-1]
            found.append(
                {
                    "name": ds,
                    "versions": len(vs),
                    "latest": last.ref,
                    "id": last.id,
                    "rows": len(last),
                    "op": last.op.get("name", ""),
                }
            )
        if as_json:
            _print_json({"datasets": found})
            return
        header = ["dataset", "versions", "latest", "rows", "op"]
        print_table(header, [[d["name"], str(d["versions"]), d["latest"], str(d["rows"]), d["op"]] for d in found])
        return
    tags = s.tags(name)
    versions = [
        {
            "ref": v.ref,
            "id": v.id,
            "rows": len(v),
            "op": _op_summary(v.op),
            "tags": sorted(k for k, x in tags.items() if x == v.id),
            "created": v.manifest.get("created", ""),
        }
        for v in s.versions(name)
    ]
    if as_json:
        _print_json({"name": name, "versions": versions, "tags": tags})
        return
    rows = [[v["ref"], v["id"], str(v["rows"]), v["op"], ",".join(v["tags"]), v["created"]] for v in versions]
    print_table(["ref", "id", "rows", "op", "tags", "created"], rows)


def _print_json(obj: Any) -> None:
    # One object on stdout, plain print: rich would wrap long lines and colour the text.
    print(json.dumps(obj, default=str, ensure_ascii=False))


def print_table(header: list[str], rows: list[list[str]], console: Console | None = None) -> None:
    """A table whose first column (the key: a ref, a name) is never cut: on a terminal a rich table whose columns
    fold rather than ellipsize, the key column as wide as its longest value; piped, plain aligned lines."""
    console = console or out
    if not console.is_terminal:
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            line = "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()
            console.print(line, soft_wrap=True, **PLAIN)
        return
    key_width = max((len(r[0]) for r in rows), default=len(header[0]))
    t = Table(*header)
    for i, column in enumerate(t.columns):
        column.overflow = "fold"
        if i == 0:
            column.min_width = min(max(key_width, len(header[0])), max(console.width - 8, 10))
    for r in rows:
        t.add_row(*map(escape, r))
    console.print(t)


def _op_summary(op: dict[str, Any]) -> str:
    return " ".join(str(op[k]) for k in ("name", "method") if op.get(k))


#: Columns ``show`` prints first and never cuts: what a selection, a rollout or a report is read for.
SCORE_SUFFIXES = ("score", "rank", "gain", "reward", "_std", "pass_rate")


def _show_columns(names: list[str], chosen: str | None, ref: str) -> list[str]:
    if chosen:
        picked = [c.strip() for c in chosen.split(",") if c.strip()]
        if unknown := [c for c in picked if c not in names]:
            raise CurateError(
                f"--columns: {ref} has no column {', '.join(map(repr, unknown))} (has: {', '.join(names)})"
            )
        return picked
    scores = [c for c in names if c.endswith(SCORE_SUFFIXES)]
    return scores + [c for c in names if c not in scores]


def _show_value(value: Any, width: int, whole: bool) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)  # strings quoted, newlines escaped: one line a value
    if whole or width <= 0 or len(text) <= width:
        return text
    return text[: width - 1] + "\u2026"  # an ellipsis: the value goes on


def show_cmd(
    ref: str,
    rows: int = typer.Option(5, "--rows", help="Rows to print."),
    columns: Optional[str] = typer.Option(  # noqa: UP045
        None, "--columns", help="Comma-separated columns to print, in that order (default: all, scores first)."
    ),
    width: int = typer.Option(
        200, "--width", help="Characters of a value to print; longer ones end in an ellipsis. 0: whole values."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print manifest and rows as JSON."),
):
    """Show a version: manifest summary and the first rows, score and rank columns first and whole."""
    from curate.store import get_store

    v = get_store().load(ref)
    names = _show_columns(v.columns, columns, v.ref)
    head = v.to_arrow(columns=names).slice(0, rows).to_pylist()
    if as_json:
        print(json.dumps({"ref": v.ref, "id": v.id, "manifest": v.manifest, "rows": head}, indent=1, default=str))
        return
    out.print(f"{v.ref} id={v.id} rows={len(v)} op={_op_summary(v.op)}", **PLAIN)
    schema = ", ".join(f"{c['name']}:{c['type']}" for c in v.manifest["schema"])
    out.print(f"columns: {schema}", soft_wrap=True, **PLAIN)
    if v.manifest.get("stats"):
        out.print("stats: " + _show_value(v.manifest["stats"], 2 * width, False), soft_wrap=True, **PLAIN)
    for i, r in enumerate(head):
        out.print(f"--- row {i}", **PLAIN)
        for c in names:
            text = _show_value(r[c], width, c.endswith(SCORE_SUFFIXES))
            out.print(f"  {c}: {text}", soft_wrap=True, **PLAIN)


def log_cmd(
    ref: str, as_json: bool = typer.Option(False, "--json", help="Print the lineage tree as one JSON object.")
):
    """The lineage tree of a version, with each op and its parameters."""
    from curate.store import lineage

    if as_json:
        _print_json(lineage(ref))
        return

    def add(node: Tree, info: dict[str, Any]) -> None:
        op = dict(info["op"])
        label = f"[bold]{escape(info['ref'])}[/] ({info['rows']} rows) [cyan]{escape(str(op.pop('name', '?')))}[/]"
        child = node.add(label + (" " + escape(json.dumps(op, default=str)[:300]) if op else ""))
        for p in info["parents"]:
            add(child, p)

    root = Tree("lineage")
    add(root, lineage(ref))
    out.print(root, soft_wrap=True)


def diff_cmd(a: str, b: str, as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead.")):
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
    as_json: bool = typer.Option(False, "--json", help='Print {"ok": ..., "problems": [...]} instead.'),
):
    """Check manifests, refs, row counts and every file's sha256 (and cache shards); exit 1 on any problem."""
    from curate.store import get_store

    s = get_store()
    if not s.root.exists():  # a mistyped --store would otherwise verify nothing and say ok
        raise CurateError(f"no store at {s.root} (check --store / CURATE_STORE)")
    problems = s.verify(ref, cache=cache)
    if as_json:
        _print_json({"store": str(s.root), "ok": not problems, "problems": problems})
    else:
        for p in problems:  # one line per problem, as printed: no markup (paths hold brackets), no wrapping
            err.print(p, style="red", soft_wrap=True, **PLAIN)
        if not problems:
            out.print("[green]ok[/]")
    if problems:
        raise typer.Exit(1)


def gc_cmd(
    remove: bool = typer.Option(False, "--remove", help="Delete what is listed (default: only list it)."),
    min_age: float = typer.Option(
        3600.0, "--min-age", help="Seconds: younger leftovers may belong to a command still running and are kept."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
):
    """List (with --remove, delete) leftovers: staging folders of killed commits, temp files, bad cache shards."""
    from curate.store import get_store

    found = get_store().gc(remove=remove, min_age_s=min_age)
    if as_json:
        _print_json({"leftovers": [str(p) for p in found], "removed": remove})
        return
    for p in found:
        out.print(p, soft_wrap=True, **PLAIN)
    if remove:
        out.print(f"removed {len(found)}")
    else:
        out.print(
            f"{len(found)} leftover(s); `curate gc --remove` deletes them" if found else "nothing to remove", **PLAIN
        )


def tag_cmd(ref: str, tag: str, as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead.")):
    """Point a tag at a version (name@tag)."""
    from curate.store import get_store

    v = get_store().tag(ref, tag)
    if as_json:
        _print_json({"ref": f"{v.name}@{tag}", "name": v.name, "id": v.id, "version": v.ref})
        return
    out.print(f"{v.name}@{tag} -> {v.id}", **PLAIN)


def models_cmd(
    prepare: bool = typer.Option(False, "--prepare", help="Convert the default LM once, now."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
):
    """List model aliases, where each resolves, and whether it is present."""
    from curate.models import DEFAULT_LM, models_table

    prepared = None
    if prepare:
        from curate.models import prepare as prepare_model

        prepared = prepare_model(DEFAULT_LM)
        if not as_json:
            out.print(f"{DEFAULT_LM}: {prepared}", **PLAIN)
    table = models_table()
    if as_json:
        _print_json({"models": table, **({"prepared": str(prepared)} if prepare else {})})
        return
    rows = []
    for r in table:
        converted = "n/a" if r.get("converted") is None else str(r["converted"])
        rows.append([r["alias"], r["package"], str(r["resolves_to"]), str(r["present"]), converted])
    print_table(["alias", "package", "resolves to", "present", "converted"], rows)


def methods_cmd(as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead.")):
    """Every selector method with its options (flags derive from the selector's parameters)."""
    import inspect

    from curate.selectors import SELECTORS

    if as_json:
        found = {}
        for name, cls in sorted(SELECTORS.items()):
            rows = options.help_rows(cls)
            doc = (inspect.getdoc(sys.modules[cls.__module__]) or "").splitlines()
            found[name] = {
                "doc": doc[0] if doc else "",
                "options": [{"flag": f, "type": t, "default": d, "help": h} for f, t, d, h in rows],
            }
        _print_json({"methods": found})
        return
    for name, cls in sorted(SELECTORS.items()):
        doc = (inspect.getdoc(sys.modules[cls.__module__]) or "").splitlines()[0]
        out.print(f"[bold]{name}[/]: {escape(doc)}")
        for flag, typ, default, doc in options.help_rows(cls):
            out.print(f"    {flag} ({typ}) default {default}" + (f": {doc}" if doc else ""), **PLAIN)


def report_cmd(
    ref: str,
    out_path: str = typer.Option("report.html", "--out", help="HTML file to write."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
):
    """One self-contained HTML page with plots of what an op did to a version."""
    from curate.report import write_report

    path = write_report(ref, out_path)
    if as_json:
        _print_json({"ref": ref, "out": str(path)})
        return
    out.print(f"[green]wrote[/] {escape(str(path))}")


def run_cmd(
    recipe: str = typer.Argument(..., help="A YAML recipe, e.g. pipelines/sft-fisher.yaml."),
    set_: list[str] = typer.Option(None, "--set", help="Override: VAR=value, KIND.param=value."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each step as it would run, and which are done."),
    as_json: bool = typer.Option(
        False, "--json", help='Print {"recipe", "steps": [...]} (step lines go to stderr) instead.'
    ),
):
    """Run a pipeline recipe step by step; finished steps are found in the store and skipped."""
    import dataclasses

    from curate.ops import OPS
    from curate.pipeline import plan_pipeline, run_pipeline
    from curate.store import get_store

    if dry_run:
        planned = plan_pipeline(recipe, overrides=set_ or ())
        if as_json:
            _print_json({"recipe": recipe, "dry_run": True, "steps": [dataclasses.asdict(p) for p in planned]})
            return
        for step in planned:
            print(step.line())
        return

    shown = err if as_json else out  # with --json, stdout holds the one object and nothing else

    def show(r):
        state = "[dim]skipped (done)[/]" if r.skipped else f"[green]done[/] in {r.seconds:.1f}s"
        shown.print(f"step {r.index} {r.kind}: {escape(r.output)} {state}")

    results = run_pipeline(recipe, overrides=set_ or (), on_step=show)
    if as_json:
        steps = []
        for r in results:
            step = dataclasses.asdict(r)
            if OPS[r.kind].makes_version:  # the version it made or found: its id, as every maker's --json gives
                step["id"] = get_store().load(r.output).id
            steps.append(step)
        _print_json({"recipe": recipe, "dry_run": False, "steps": steps})


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
