"""The ``curate`` command line, built from ``curate.ops.OPS``: one command per operation, plus the views of the
store (ls, show, log, diff, verify, gc, tag, models, methods, report) and ``run``. No logic lives here.

An op's options derive from its target (``curate.options``): a selector's ``__init__`` or a config dataclass
(``keep_per_prompt`` -> ``--keep-per-prompt``), so the CLI, the Python API and the recipes can never disagree.
``curate select --method NAME --help`` lists one selector's options; ``--help`` on ``rollout``, ``train sft|grpo``,
``synth condor`` and ``export --format F`` lists theirs, with each field's docstring. Modules named in
``$CURATE_PLUGINS`` (comma-separated, dotted) are imported first, so the operations, selectors and formats they
register get commands too.

Conventions: every command that makes or shows something takes ``--json`` (one object on stdout, with the new ref
and id for a maker); ``-q`` silences progress; usage errors are one line and exit 2; Ctrl-C is one line and exit
130; ``--version``; ``curate --install-completion`` sets up shell completion.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curate import options, views
from curate.errors import CurateError

HELP = {"help_option_names": ["-h", "--help"]}
EXTRA = {**HELP, "allow_extra_args": True, "ignore_unknown_options": True}
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from curate._version import __version__

        print(f"curate {__version__}")
        raise typer.Exit()


def _main(
    store: str | None = typer.Option(None, "--store", envvar="CURATE_STORE", help="Store root (default ./.curate)."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress output (results still print). Env: CURATE_QUIET=1."
    ),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Let model folders run the Python code they ship (auto_map); off by "
        "default. Env: CURATE_TRUST_REMOTE_CODE=1.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
):
    from curate.progress import set_quiet
    from curate.store import set_store

    set_store(store)
    set_quiet(True if quiet else None)  # not given: CURATE_QUIET decides
    if trust_remote_code:  # unset leaves CURATE_TRUST_REMOTE_CODE in charge
        from curate.models import set_trust_remote_code

        set_trust_remote_code(True)


# ------------------------------------------------------------------------------------------ op commands
def _print_options(console: Console, target: Any) -> None:
    parts = target if isinstance(target, tuple) else (target,)
    title = ", ".join(getattr(t, "__name__", str(t)) for t in parts if t is not None)
    rows = options.help_rows(target)
    t = Table("option", "type", "default", "what it does", title=f"Options (from {title})")
    for row in rows:
        t.add_row(*map(escape, row))  # docs hold brackets ("[tags]") that are not rich markup
    console.print(t)
    if switches := [flag for flag, typ, _, _ in rows if typ == "bool"]:
        console.print(f"Switch a boolean off with --no-FLAG (e.g. --no-{switches[0][2:]}).", markup=False)


class _OpCommand(typer.core.TyperCommand):
    """A command whose ``--help`` also lists the options its op derives from its target."""

    op: Any = None
    choice: str | None = None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        import io
        import shutil

        super().format_help(ctx, formatter)
        rich_help = typer.core.HAS_RICH and self.rich_markup_mode is not None
        # Rich help is printed as it is made; plain click help is buffered in the formatter, so join it there.
        console = Console() if rich_help else Console(file=io.StringIO(), width=shutil.get_terminal_size().columns)
        variant = self.op.variant
        choice = self.choice or (ctx.params.get(variant.key) if variant else None)
        if variant is not None and choice not in variant.registry():
            names = ", ".join(sorted(variant.registry()))
            console.print(f"Give --{variant.key} NAME before --help for its options ({names}).", markup=False)
        else:
            entry = variant.get(choice) if variant else None
            _print_options(console, self.op.target(entry))
        if not rich_help:
            formatter.write("\n" + console.file.getvalue())


def _op_command(group: typer.Typer, op: Any, choice: str | None = None) -> None:
    """Add ``op``'s command to ``group`` (``choice``: the variant a subcommand stands for): its input argument,
    its own keys and variant as options, and every other flag parsed against the op's target."""

    def callback(ctx: typer.Context, **kw: Any) -> None:
        variant = op.variant
        if variant is not None:
            kw[variant.key] = choice or kw[variant.key]
        entry = variant.get(kw[variant.key]) if variant else None
        what = (f"{op.name} {choice}" if choice else f"--{variant.key} {kw[variant.key]}") if variant else op.name
        params = options.parse_flags(ctx.args, op.target(entry), what=what, aliases=dict(op.aliases))
        args = [kw.pop(op.input)] if op.input else []
        as_json = kw.pop("as_json")
        if as_json and "-" in (kw.get("out"), params.get("out")):
            raise CurateError("--json and --out - both write to stdout: pick one")
        result = op.fn(*args, **{k: v for k, v in kw.items() if v is not None}, **params)
        if as_json:  # one object on stdout, so scripts can chain
            print(json.dumps(op.as_json(result), default=str))
        else:
            print(op.summary(result, params))  # plain: data and trainer commands stay copy-pasteable

    P = inspect.Parameter
    sig = [P("ctx", P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    if op.input:
        sig.append(P(op.input, P.KEYWORD_ONLY, annotation=str, default=typer.Argument(..., metavar=op.input.upper())))
    for k in op.keys:
        default = typer.Option(... if k.required else None, "--" + k.name.replace("_", "-"), help=k.help)
        sig.append(P(k.name, P.KEYWORD_ONLY, annotation=str if k.required else str | None, default=default))
    if op.variant is not None and choice is None:
        key = op.variant.key
        option = typer.Option(..., f"--{key}", is_eager=True, help=f"The {key} (see `curate methods`).")
        sig.append(P(key, P.KEYWORD_ONLY, annotation=str, default=option))
    as_json = typer.Option(False, "--json", help="Print one JSON object (the new ref and id, ...) instead.")
    sig.append(P("as_json", P.KEYWORD_ONLY, annotation=bool, default=as_json))
    callback.__signature__ = inspect.Signature(sig)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in sig}
    # A subcommand's help is its implementation's own first docstring line (``sft``: "Fine-tune ...").
    if choice is not None:
        entry = op.variant.get(choice)
        helptext = (inspect.getdoc(getattr(entry, "run", entry)) or op.help).split("\n")[0].replace("``", "")
    else:
        helptext = op.help
    cls = type("OpCommand", (_OpCommand,), {"op": op, "choice": choice})
    group.command(choice or op.name, cls=cls, context_settings=EXTRA, help=helptext)(callback)


def build_app() -> typer.Typer:
    """The CLI of what ``OPS`` holds now: the store views, then one command (or group) per operation."""
    from curate.ops import OPS

    cli = typer.Typer(no_args_is_help=True, help="Curate post-training data for LLMs.", context_settings=HELP)
    cli.callback()(_main)
    for name, fn in views.COMMANDS.items():
        cli.command(name)(fn)
    for op in OPS.values():
        if op.variant is not None and op.variant.subcommand:
            sub = typer.Typer(name=op.name, no_args_is_help=True, help=op.help, context_settings=HELP)
            for choice in op.variant.registry():
                _op_command(sub, op, choice)
            cli.add_typer(sub, name=op.name)
        else:
            _op_command(cli, op)
    return cli


# ------------------------------------------------------------------------------------------ entry point
def _error_line(message: str) -> None:
    # One line whatever the message holds: no markup (messages quote brackets), no wrapping, no newlines.
    line = " ".join(str(message).splitlines()) or "(no message)"
    err.print(Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True)


INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _interrupted_line() -> None:
    """One line after Ctrl-C: how far the work got, and that re-running the same command resumes it."""
    from curate.progress import take_interrupted

    task = take_interrupted()
    where = f"{task.description} stopped at {task.progress_text()}; " if task is not None else ""
    err.print(
        f"interrupted: {where}finished work is cached, so re-run the same command to resume (cached rows are "
        "reused; a trainer resumes from its last checkpoint with --resume)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of command-line parsing: typer's own (it vendors click), and click's."""
    kinds: list[type[BaseException]] = [typer.TyperException]
    try:
        import click

        kinds.append(click.exceptions.ClickException)
    except ImportError:  # typer >= 0.20 no longer needs click
        pass
    return tuple(kinds)


def load_plugins() -> None:
    """Import the modules named in ``$CURATE_PLUGINS``: explicit dotted paths the user chose, nothing else."""
    for name in filter(None, (p.strip() for p in os.environ.get("CURATE_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise CurateError(f"CURATE_PLUGINS: cannot import {name!r} ({e})") from None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a ``CurateError`` or a command-line usage error becomes one line on stderr and exit
    code 2; ``--help`` / ``-h`` / ``--version`` exit 0; Ctrl-C says how far the work got and exits 130. Anything
    else is a bug and keeps its traceback."""
    try:
        load_plugins()
        rc = build_app()(args=argv, prog_name="curate", standalone_mode=False)
    except CurateError as e:
        _error_line(str(e))
        sys.exit(2)
    except _usage_errors() as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            # Rich help was printed while the error was made; plain click help is the message itself.
            if not typer.core.HAS_RICH:
                print(e.format_message())
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (try: {ctx.command_path} --help)" if ctx is not None else ""
        _error_line(e.format_message() + hint)
        sys.exit(2 if hasattr(e, "ctx") else getattr(e, "exit_code", 1) or 1)
    except (typer.Abort, KeyboardInterrupt):
        rc = INTERRUPTED
    if rc == INTERRUPTED:  # typer turns a KeyboardInterrupt inside a command into this exit code
        _interrupted_line()
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
