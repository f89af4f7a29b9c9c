"""CLI conventions: ``--json`` on every command that makes or shows something (one object on stdout), one-line usage
errors with exit 2, ``--version``, ``-q``, progress lines when stderr is no terminal, Ctrl-C's one line and exit 130,
``show --columns`` / ``--width``, key columns that survive a narrow terminal, and ``verify`` on a missing store.

Most commands run in-process through typer's ``CliRunner`` (fast); progress and Ctrl-C need a real process."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

import curate.ops
import curate.progress
import curate.store
from curate import views
from curate._version import __version__
from curate.cli import build_app, main
from curate.errors import CurateError
from tests.cli_helpers import CLI

RUNNER = CliRunner()


@pytest.fixture(autouse=True)
def _restore_globals(monkeypatch):
    # `--store` and `-q` set process-wide defaults (set_store, set_quiet): put them back for the next test.
    monkeypatch.setattr(curate.store, "_default", curate.store._default)
    monkeypatch.setattr(curate.progress, "_quiet", curate.progress._quiet)


def cli(store, *args: str, code: int = 0, env: dict[str, str] | None = None):
    result = RUNNER.invoke(build_app(), ["--store", str(store), *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
    return result


def as_json(store, *args: str) -> dict:
    """The command's stdout, which must be exactly one JSON object."""
    out = cli(store, *args, "--json").stdout
    obj = json.loads(out)
    assert isinstance(obj, dict), out
    return obj


def test_every_command_prints_one_json_object(tmp_path, tiny_model_path, one_thread):
    s = tmp_path / "store"
    src = tmp_path / "chat.jsonl"
    chats = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(4)]
    src.write_text("".join(json.dumps({"messages": m}) + "\n" for m in chats))

    imported = as_json(s, "import", str(src), "--name", "chat")
    assert imported["ref"] == "chat@v1" and imported["rows"] == 4 and len(imported["id"]) == 16
    sampled = as_json(s, "sample", "sample-sft", "--n", "6")
    assert sampled["ref"] == "sample-sft@v1" and sampled["rows"] == 6
    picked = as_json(s, "select", "sample-sft", "--method", "random", "--budget", "3", "--name", "r3")
    assert picked["ref"] == "r3@v1" and picked["rows"] == 3 and picked["stats"]["kept"] == 3
    # The id a maker prints is the one the store resolves: scripts chain on it.
    assert as_json(s, "show", f"r3@{picked['id']}", "--rows", "1")["ref"] == "r3@v1"

    as_json(s, "sample", "sample-math", "--n", "2")
    # tiny random model, 2 completions of 4 tokens: only the plumbing is under test
    ro_args = ["--n", "2", "--model", tiny_model_path, "--max-tokens", "4", "--reward", "contains", "--name", "ro"]
    ro = as_json(s, "rollout", "sample-math", *ro_args)
    assert ro["ref"] == "ro@v1" and ro["rows"] == 4

    run_dir = tmp_path / "run"
    sft = [
        "--model",
        tiny_model_path,
        "--out",
        str(run_dir),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--max-len",
        "64",
    ]
    trained = as_json(s, "train", "sft", "r3", *sft)
    assert trained["out"] == str(run_dir) and "loss" in trained["metrics"]

    exported = as_json(s, "export", "r3", "--format", "jsonl", "--out", str(tmp_path / "exp"))
    assert exported["out"] == str(tmp_path / "exp") and any(f.endswith(".jsonl") for f in exported["files"])

    as_json(s, "sample", "sample-sft", "--n", "3", "--seed", "7", "--name", "heldout")
    # one arm, one seed, one step: the smallest comparison that still trains and scores
    cmp_args = ["--arms", "length", "--budget", "3", "--seeds", "1", "--eval", "heldout", "--model", tiny_model_path]
    compared = as_json(s, "compare", "sample-sft", *cmp_args, "--max-steps", "1", "--batch-size", "2", "--name", "cmp")
    assert compared["ref"] == "cmp@v1" and [r["arm"] for r in compared["runs"]] == ["length"]

    listing = as_json(s, "ls")
    names = {"chat", "sample-sft", "r3", "sample-math", "ro", "heldout", "cmp", "cmp-length"}
    assert {d["name"] for d in listing["datasets"]} == names
    versions = as_json(s, "ls", "r3")["versions"]
    assert [(v["ref"], v["id"]) for v in versions] == [("r3@v1", picked["id"])]
    log = as_json(s, "log", "r3")
    assert log["ref"] == "r3@v1" and log["parents"][0]["ref"] == "sample-sft@v1"
    shown = as_json(s, "show", "r3", "--rows", "2")
    assert shown["id"] == picked["id"] and len(shown["rows"]) == 2
    d = as_json(s, "diff", "sample-sft", "r3")
    assert len(d["removed"]) == 3 and d["columns_added"] == ["random_score", "random_rank"]
    assert as_json(s, "tag", "r3", "small") == {
        "ref": "r3@small",
        "name": "r3",
        "id": picked["id"],
        "version": "r3@v1",
    }
    assert as_json(s, "verify") == {"store": str(s), "ok": True, "problems": []}
    assert as_json(s, "gc") == {"leftovers": [], "removed": False}
    assert "random" in as_json(s, "methods")["methods"]
    assert any(m["alias"] == "smollm2-135m" for m in as_json(s, "models")["models"])
    page = tmp_path / "r.html"
    assert as_json(s, "report", "r3", "--out", str(page)) == {"ref": "r3", "out": str(page)}


def test_synth_prints_one_json_object(tmp_path, monkeypatch):
    import curate.generation
    from tests.test_condor import TWO_TAGS, ScriptedGenerator, save_tree

    # The scripted generator of test_condor answers every stage: synth's own output, not a model's, is under test.
    monkeypatch.setattr(curate.generation, "make_generator", lambda backend, model, **kw: ScriptedGenerator())
    tree = save_tree(TWO_TAGS, tmp_path / "two.yaml")
    made = as_json(tmp_path / "store", "synth", "condor", "--tree", str(tree), "--tasks", "daily_chat", "--name", "cd")
    assert made["ref"] == "cd@v1" and made["rows"] > 0 and len(made["id"]) == 16


def _main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["diff", "x"], "Missing argument 'b'"),
        (["show"], "Missing argument 'ref'"),
        (["ls", "--bogus"], "No such option: --bogus"),
        (["--bogus"], "No such option: --bogus"),
        (["select", "x", "--method", "random", "--budget"], "--budget needs a value"),
        (["export", "x", "--out", "o"], "Missing option '--format'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code, out, err = _main(["--store", str(tmp_path / "s"), *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_help_and_version_exit_0(capsys):
    code, out, _ = _main(["--version"], capsys)
    assert (code, out) == (0, f"curate {__version__}\n")
    code, out, _ = _main(["-h"], capsys)
    assert code == 0 and "Usage" in out and "--quiet" in out and "--install-completion" in out


def test_verify_on_a_missing_store_says_so(tmp_path, capsys):
    missing = tmp_path / "no-such-store"
    code, out, err = _main(["--store", str(missing), "verify"], capsys)
    assert code == 2 and out == ""
    assert err.strip() == f"error: no store at {missing} (check --store / CURATE_STORE)"
    assert not missing.exists()  # verifying never creates it
    cli(tmp_path / "empty", "sample", "sample-sft", "--n", "2")
    assert cli(tmp_path / "empty", "verify").stdout.strip() == "ok"


def test_show_columns_order_and_ellipsis(tmp_path):
    s = tmp_path / "store"
    cli(s, "sample", "sample-sft", "--n", "4")
    cli(s, "select", "sample-sft", "--method", "random", "--budget", "2", "--name", "r2")
    full = curate.store.Store(s).load("r2").to_pylist()[0]

    rows = cli(s, "show", "r2", "--rows", "1", "--width", "12").stdout.split("--- row 0\n")[1].splitlines()
    # score and rank columns first and whole, then the rest cut to 12 characters with an ellipsis
    assert [line.split(":")[0].strip() for line in rows[:2]] == ["random_score", "random_rank"]
    assert rows[0] == f"  random_score: {json.dumps(full['random_score'])}"
    messages = next(line for line in rows if line.startswith("  messages: "))
    assert messages == "  messages: " + json.dumps(full["messages"], ensure_ascii=False)[:11] + "\u2026"

    picked = cli(s, "show", "r2", "--rows", "1", "--columns", "random_rank,id", "--width", "0").stdout
    assert picked.split("--- row 0\n")[1].splitlines() == [
        f"  random_rank: {full['random_rank']}",
        f"  id: {json.dumps(full['id'])}",
    ]
    whole = cli(s, "show", "r2", "--rows", "1", "--columns", "messages", "--width", "0").stdout
    assert "  messages: " + json.dumps(full["messages"], ensure_ascii=False) in whole.splitlines()
    shown = as_json(s, "show", "r2", "--rows", "1", "--columns", "id,random_rank")
    assert shown["rows"] == [{"id": full["id"], "random_rank": full["random_rank"]}]

    result = RUNNER.invoke(build_app(), ["--store", str(s), "show", "r2", "--columns", "id,nope"])
    assert "has no column 'nope'" in str(result.exception)


def test_ls_key_column_is_never_cut(tmp_path):
    s = tmp_path / "store"
    long = "a-rather-long-dataset-name"  # with "@v1": 29 characters of a 40-column terminal
    cli(s, "sample", "sample-sft", "--n", "2", "--name", long)
    # piped (CliRunner's stdout is no terminal) at COLUMNS=40: plain lines, nothing cut
    lines = cli(s, "ls", env={"COLUMNS": "40"}).stdout.splitlines()
    assert lines[1].split() == [long, "1", f"{long}@v1", "2", "sample"]
    assert cli(s, "ls", long, env={"COLUMNS": "40"}).stdout.splitlines()[1].startswith(f"{long}@v1  ")
    # a 40-column terminal: the key column keeps its whole value, the others fold
    term = Console(file=io.StringIO(), width=40, force_terminal=True, color_system=None)
    views.print_table(["ref", "id", "rows"], [[f"{long}@v1", "0123456789abcdef", "2"]], console=term)
    assert f"{long}@v1" in term.file.getvalue()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CURATE_QUIET"}  # conftest silences progress
    return {**env, "COLUMNS": "200", **extra}


@pytest.mark.slow  # a process that loads a model: ~20 s on a busy 2-core box
def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, tiny_model_path):
    s = str(tmp_path / "store")
    curate.ops.sample("sample-sft", n=4, store=s)
    select = [*CLI, "--store", s, "select", "sample-sft", "--method", "fisher", "--model", tiny_model_path]
    env = _env(CURATE_PROGRESS_SECONDS="0")  # 0: a line per advance, so even this tiny run prints some
    p = subprocess.run(
        [*select, "--budget", "2", "--name", "f2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("features: ")]
    assert lines[0].startswith("features: 1/4 (25%), ") and " ETA " in lines[0]
    assert lines[-1].startswith("features: 4/4 done in ")
    assert p.stdout.startswith("f2@v1 ")


PLUGIN = '''
import time
from dataclasses import dataclass

from curate import ops
from curate.progress import progress


@dataclass
class CrawlConfig:
    """Options of crawl."""

    steps: int = 100_000
    """Units of work, 10 ms each."""


def crawl(**params):
    config = CrawlConfig(**params)
    with progress("crawling", config.steps) as advance:
        for _ in range(config.steps):
            time.sleep(0.01)
            advance(1)
    return config.steps


ops.register(
    ops.Op(
        "crawl",
        crawl,
        "Work slowly.",
        input=None,
        target=lambda entry: CrawlConfig,
        makes_version=False,
        as_json=lambda steps: {"steps": steps},
    )
)
'''


def test_ctrl_c_says_how_far_it_got_and_exits_130(tmp_path):
    (tmp_path / "crawl_plugin.py").write_text(PLUGIN)
    env = _env(CURATE_PLUGINS="crawl_plugin", CURATE_PROGRESS_SECONDS="0.2", PYTHONPATH=str(tmp_path))
    cmd = [*CLI, "--store", str(tmp_path / "store"), "crawl"]
    # A shell that starts jobs in the background (CI runners can) leaves SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Wait for the first progress line: the work is under way (and the interpreter has its SIGINT handler).
    ready, _, _ = select.select([proc.stderr], [], [], 120)
    first = proc.stderr.readline() if ready else ""
    assert first.startswith("crawling: "), first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == ""
    last = err.splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith("interrupted: crawling stopped at ") and "/100000; " in last
    assert "re-run the same command to resume (cached rows are reused" in last
    assert all(line.startswith("crawling: ") for line in err.splitlines()[:-1])


def test_progress_interval_env_is_checked(monkeypatch):
    monkeypatch.setenv(curate.progress.INTERVAL_ENV, "soon")
    monkeypatch.setattr(curate.progress, "_quiet", False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with (
        pytest.raises(CurateError, match="CURATE_PROGRESS_SECONDS must be a number"),
        curate.progress.progress("x", 1),
    ):
        pass


@pytest.fixture
def crawl(tmp_path, monkeypatch):
    """The crawl plugin, imported in this process (and unregistered afterwards)."""
    (tmp_path / "crawl_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "crawl_plugin", raising=False)
    import crawl_plugin  # noqa: F401

    yield
    curate.ops.OPS.pop("crawl", None)


def test_quiet_flag_and_env_silence_progress(tmp_path, crawl, monkeypatch):
    monkeypatch.delenv("CURATE_QUIET", raising=False)
    monkeypatch.setenv(curate.progress.INTERVAL_ENV, "0")
    s = tmp_path / "store"
    loud = RUNNER.invoke(build_app(), ["--store", str(s), "crawl", "--steps", "3"])
    assert loud.exit_code == 0 and loud.stderr.splitlines()[0].startswith("crawling: 1/3 (33%), ")
    assert loud.stderr.splitlines()[-1].startswith("crawling: 3/3 done in ")
    quiet = RUNNER.invoke(build_app(), ["--store", str(s), "-q", "crawl", "--steps", "3"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    env_quiet = RUNNER.invoke(build_app(), ["--store", str(s), "crawl", "--steps", "3"], env={"CURATE_QUIET": "1"})
    assert env_quiet.exit_code == 0 and env_quiet.stderr == ""
    assert json.loads(cli(s, "crawl", "--steps", "3", "--json").stdout) == {"steps": 3}


@pytest.mark.slow  # starts a Jupyter kernel
def test_notebook_gets_an_html_progress_bar_updated_in_place(monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.delenv("CURATE_QUIET", raising=False)  # the kernel inherits this environment
    code = (
        "from curate.progress import progress\nwith progress('scoring', 3) as advance:\n    advance(1)\n    advance(2)"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    [shown] = nb.cells[0].outputs  # one display, updated in place: no stream of lines in the cell
    assert re.fullmatch(r"scoring: 3/3 done in \d+s", shown["data"]["text/plain"])
    assert shown["data"]["text/html"].startswith('<div><progress value="3" max="3" ')


def test_run_prints_one_json_object(tmp_path):
    s = tmp_path / "store"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "steps:\n"
        "  - sample: {which: sample-sft, n: 6, name: pool}\n"
        "  - select: {method: random, budget: 2, name: two}\n"
        f"  - export: {{format: jsonl, out: {tmp_path / 'exp'}}}\n"
    )
    plan = as_json(s, "run", str(recipe), "--dry-run")
    assert plan["dry_run"] is True and [p["kind"] for p in plan["steps"]] == ["sample", "select", "export"]
    assert [p["stored"] for p in plan["steps"]] == [False, False, False] and plan["steps"][0]["name"] == "pool"
    ran = cli(s, "run", str(recipe), "--json")
    assert "step 0 sample" in ran.stderr  # the step lines, off stdout
    first = json.loads(ran.stdout)
    assert [r["kind"] for r in first["steps"]] == ["sample", "select", "export"]
    assert not any(r["skipped"] for r in first["steps"])
    pool, two = first["steps"][0], first["steps"][1]
    assert pool["output"] == "pool@v1" and two["output"] == "two@v1" and "id" not in first["steps"][2]
    assert two["id"] == as_json(s, "show", "two")["id"] and pool["id"] == plan["steps"][0]["id"]
    again = as_json(s, "run", str(recipe))  # done steps are found in the store, under the same ids
    assert [r["skipped"] for r in again["steps"][:2]] == [True, True]
    assert [r.get("id") for r in again["steps"]] == [r.get("id") for r in first["steps"]]
    assert [p["stored"] for p in as_json(s, "run", str(recipe), "--dry-run")["steps"][:2]] == [True, True]
