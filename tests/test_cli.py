"""The CLI as a user runs it: real processes, exit codes, one-line errors, kills and concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_import import GSM8K, snapshot

CLI = [sys.executable, "-m", "curate.cli"]


def run(store: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [*CLI, "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and p.returncode != 0:
        raise AssertionError(f"curate {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def test_tour(tmp_path):
    s = tmp_path / "store"
    assert "gsm8k@v1" in run(s, "import", str(GSM8K / "test.jsonl"), "--name", "gsm8k").stdout
    assert "gsm8k" in run(s, "ls").stdout
    shown = json.loads(run(s, "show", "gsm8k", "--rows", "2", "--json").stdout)
    assert shown["manifest"]["rows"] == 1319 and len(shown["rows"]) == 2
    assert "kept 20" in run(s, "select", "gsm8k", "--method", "random", "--budget", "20", "--name", "g20").stdout
    log = run(s, "log", "g20").stdout
    assert "g20@v1" in log and "gsm8k@v1" in log and "random" in log
    diff = json.loads(run(s, "diff", "gsm8k", "g20", "--json").stdout)
    assert len(diff["removed"]) == 1299 and diff["columns_added"] == ["random_score", "random_rank"]
    run(s, "tag", "g20", "small")
    assert "g20@v1" in run(s, "ls", "g20").stdout
    out = tmp_path / "g20.jsonl"
    run(s, "export", "g20@small", "--format", "jsonl", "--out", str(out))
    assert len(out.read_text().splitlines()) == 20
    assert "ok" in run(s, "verify").stdout
    assert "random" in run(s, "methods").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["show", "nope"],
        ["show", "gsm8k@v7"],
        ["import", "FILE", "--name", "a/b"],
        ["import", "FILE", "--name", ".."],
        ["import", "MISSING", "--name", "m"],
        ["select", "gsm8k", "--method", "nosuch", "--name", "x"],
        ["select", "gsm8k", "--method", "random", "--name", "x"],
        ["select", "gsm8k", "--method", "random", "--budget", "3", "--bogus", "1", "--name", "x"],
        ["synth", "condor", "--name", "x", "--engine", "dask"],
        ["synth", "condor", "--name", "x", "--num-workers", "2"],
    ],
)
def test_bad_input_exits_nonzero_with_one_line_and_no_change(tmp_path, args):
    s = tmp_path / "store"
    run(s, "import", str(GSM8K / "test.jsonl"), "--name", "gsm8k")
    before = snapshot(s)
    args = [
        str(GSM8K / "test.jsonl") if a == "FILE" else str(tmp_path / "missing.jsonl") if a == "MISSING" else a
        for a in args
    ]
    p = run(s, *args, check=False)
    assert p.returncode != 0
    lines = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert snapshot(s) == before


def test_verify_exit_code_names_bad_file(tmp_path):
    s = tmp_path / "store"
    run(s, "import", str(GSM8K / "test.jsonl"), "--name", "gsm8k")
    f = next(s.rglob("data-00000.parquet"))
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    p = run(s, "verify", check=False)
    assert p.returncode == 1 and str(f) in p.stderr.replace("\n", "")


def _big_jsonl(path: Path, n: int) -> Path:
    row = {
        "question": "How many apples are there if Sam has {i} apples and buys 3 more?" * 3,
        "answer": "He has {i} + 3 apples.\n#### 3",
    }
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({k: v.replace("{i}", str(i)) for k, v in row.items()}) + "\n")
    return path


def test_sigkill_mid_import_leaves_no_version(tmp_path):
    s = tmp_path / "store"
    run(s, "import", str(GSM8K / "test.jsonl"), "--name", "gsm8k")
    big = _big_jsonl(tmp_path / "big.jsonl", 150_000)
    proc = subprocess.Popen(
        [*CLI, "--store", str(s), "import", str(big), "--name", "big"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = s / "tmp"
    deadline = time.time() + 120
    # Kill as soon as the commit starts staging files: the worst moment for a non-atomic store.
    while time.time() < deadline and proc.poll() is None:
        if any(staging.glob("big-*/*")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "import finished before it could be killed: make the file bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (s / "datasets" / "big").exists() or not any((s / "datasets" / "big").glob("*/manifest.json"))
    assert "big" not in run(s, "ls").stdout
    assert run(s, "verify").returncode == 0


def test_two_concurrent_imports_both_land(tmp_path):
    s = tmp_path / "store"
    a = _big_jsonl(tmp_path / "a.jsonl", 3000)
    b = GSM8K / "test.jsonl"
    procs = [
        subprocess.Popen(
            [*CLI, "--store", str(s), "import", str(src), "--name", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for src, name in ((a, "first"), (b, "second"))
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    listing = run(s, "ls").stdout
    assert "first" in listing and "second" in listing
    assert run(s, "verify").returncode == 0


def test_rl_and_train_commands(tmp_path, tiny_model_path):
    s = tmp_path / "store"
    run(s, "sample", "sample-math", "--n", "4")
    out = run(
        s,
        "rollout",
        "sample-math",
        "--n",
        "2",
        "--model",
        tiny_model_path,
        "--max-tokens",
        "4",
        "--reward",
        "contains",
        "--name",
        "ro",
    ).stdout
    assert "ro@v1" in out and "rows=8" in out
    assert (
        "kept"
        in run(
            s,
            "select",
            "ro",
            "--method",
            "variance",
            "--keep-per-prompt",
            "1",
            "--no-drop-zero-variance",
            "--name",
            "ro-pods",
        ).stdout
    )
    assert len(json.loads(run(s, "show", "ro-pods", "--json").stdout)["rows"]) == 4
    run(s, "select", "ro", "--method", "difficulty", "--band", "0,1", "--stages", "2", "--name", "cur")
    run(s, "sample", "sample-sft", "--n", "6")
    runs = tmp_path / "runs"
    run(
        s,
        "train",
        "sft",
        "sample-sft",
        "--model",
        tiny_model_path,
        "--out",
        str(runs),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--eval",
        "sample-sft",
    )
    metrics = [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in m for m in metrics)
    assert (runs / "curate_train.json").exists()
    page = tmp_path / "r.html"
    run(s, "report", "cur", "--out", str(page))
    assert "Curriculum stages" in page.read_text()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("synth", "condor"), ["--engine", "--num-workers", "--no-FLAG (e.g. --no-refine)", "topic -> [tags]"]),
        (("rollout",), ["--n ", "--reward", "--engine", "--gpus-per-worker"]),
        (("train", "sft"), ["--grad-accum", "--max-steps", "Peak learning rate (AdamW)."]),
        (("train", "grpo"), ["--prompts-per-step", "--reward"]),
        (
            ("select", "--method", "variance"),
            ["Options (from VarianceSelector, SelectOptions)", "--no-drop-zero-variance", "--allow-empty"],
        ),
        (("select", "--method", "fisher"), ["--budget-tokens", "--gpus-per-worker"]),
        (("select",), ["Give --method NAME before --help", "token-clean"]),
    ],
)
def test_help_lists_the_options_derived_from_the_config(tmp_path, command, expected):
    # The flags come from the config dataclass, so --help reads them (and their docs) from there too.
    p = run(tmp_path / "s", *command, "--help")
    for text in expected:
        assert text in p.stdout, (text, p.stdout)
    assert "``" not in p.stdout


def test_help_in_plain_click_mode_keeps_the_options_after_the_usage(tmp_path):
    # TYPER_USE_RICH=0: click writes the help through its formatter; the derived options must follow, not precede.
    env = {**os.environ, "COLUMNS": "200", "TYPER_USE_RICH": "0"}
    cmd = [*CLI, "--store", str(tmp_path / "s"), "synth", "condor", "--help"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=True).stdout
    assert text.index("Usage:") < text.index("Options (from CondorConfig)") < text.index("--num-workers")
