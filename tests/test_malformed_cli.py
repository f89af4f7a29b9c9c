"""The malformed-input battery: every bad input a user can hand the CLI gives one line on stderr, exit code 2, no
traceback, and leaves the store byte-for-byte as it was.

Each case runs ``python -m curate`` as a user would, on its own copy of one small store (5 GSM8K rows and 10
sample-math prompts), and compares a hash of every file under the store before and after. The cases are cheap on
purpose: nothing loads a model (a missing model path fails before any weights load), and the cases run a few at a
time, so the battery takes about a minute.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
QA = '{"question": "q%d", "answer": "#### %d"}\n'


def two_args(completion: str) -> float:
    """A reward with the wrong arity: curate calls fn(completion, answer, **row)."""
    return 0.0


def no_row(completion: str, answer: str) -> float:
    """A reward that takes no **row: every call would pass the row's columns as keywords."""
    return 0.0


def snapshot(root: Path) -> dict[str, str]:
    """Every path under the store: a file's sha256, a folder's "dir". Lock files come and go with any reader."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if not p.name.endswith(".lock")
    }


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    """5 rows of GSM8K test (``gsm8k``) and 10 sample-math prompts (``sample-math``)."""
    import curate
    from curate.store import Store

    root = tmp_path_factory.mktemp("battery") / "store"
    five = root.parent / "gsm8k5.jsonl"
    five.write_text("".join((GSM8K / "test.jsonl").read_text().splitlines(keepends=True)[:5]))
    store = Store(root)
    curate.import_data(str(five), name="gsm8k", store=store)
    curate.sample("sample-math", n=10, store=store)
    return root


# ------------------------------------------------------------------------------------------ inputs
# Each builder writes its file into the case's folder and returns the path to pass.
def _text(name: str, text: str) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        (d / name).write_text(text, encoding="utf-8")
        return str(d / name)

    return build


def _bytes(name: str, data: bytes) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        (d / name).write_bytes(data)
        return str(d / name)

    return build


def _hf_dir(name: str) -> Callable[[Path], str]:
    """A folder that claims to be a saved Hugging Face dataset and holds nothing else."""

    def build(d: Path) -> str:
        (d / name).mkdir()
        (d / name / "dataset_info.json").write_text("{}")
        (d / name / "state.json").write_text("{}")
        return str(d / name)

    return build


def _row(**row) -> str:
    return json.dumps(row) + "\n"


DEEP = "[" * 100_000 + "]" * 100_000
MSGS = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
# 9**7 leaves from 8 short lines (the step uses the last), which the ${var} substitution used to walk one by one
BOMB = "vars:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(6)
)
RECIPE = "steps:\n  - sample: {{which: sample-math, n: 3, name: rmath}}\n  - {step}\n"

# key: (builder, what the error line must say). The file name is in every import error; line and field where any.
FILES: dict[str, tuple[Callable[[Path], str], str]] = {
    "json-list-of-ints": (_text("ints.json", "[1, 2, 3]"), r"ints\.json: item 0: expected a JSON object, got int"),
    "json-scalar": (_text("scalar.json", "5"), r"scalar\.json: expected a list of objects, got int"),
    "json-deep": (_text("deep.json", DEEP), r"deep\.json: invalid JSON \(nested too deeply\)"),
    "jsonl-deep": (
        _text("deep.jsonl", '{"prompt": "x", "a": ' + DEEP + "}\n"),
        r"deep\.jsonl: line 1: invalid JSON \(nested too deeply\)",
    ),
    "jsonl-nested-40": (
        _text("nested.jsonl", '{"prompt": "x", "a": ' + "[" * 40 + "]" * 40 + "}\n"),
        r"nested\.jsonl: line 1: field 'a': nested more than 32 levels deep",
    ),
    "jsonl-lone-surrogate": (
        _text("sur.jsonl", '{"prompt": "x \\ud800 y"}\n'),
        r"sur\.jsonl: line 1: field 'prompt': text holds a lone surrogate",
    ),
    "jsonl-int-1e30-passthrough": (
        _text("big.jsonl", _row(prompt="x", n=10**30)),
        r"big\.jsonl: line 1: field 'n': an integer too large for 64 bits",
    ),
    "jsonl-int-1e30-canonical": (
        _text("bigc.jsonl", _row(prompt="x", sample=10**30)),
        r"bigc\.jsonl: line 1: field 'sample': an integer too large for 64 bits",
    ),
    "jsonl-invalid-line": (_text("bad.jsonl", QA % (1, 1) + "{not json}\n"), r"bad\.jsonl: line 2: invalid JSON"),
    "jsonl-array-line": (
        _text("arr.jsonl", QA % (1, 1) + "[1, 2]\n"),
        r"arr\.jsonl: line 2: expected a JSON object, got list",
    ),
    "jsonl-empty": (_text("empty.jsonl", "\n\n"), r"empty\.jsonl: empty file"),
    "jsonl-weight-text": (
        _text("w.jsonl", _row(messages=MSGS, weight="heavy")),
        r"w\.jsonl: line 1: field 'weight': expected a number, got str 'heavy'",
    ),
    "jsonl-reward-list": (
        _text("r.jsonl", _row(prompt="x", reward=[1])),
        r"r\.jsonl: line 1: field 'reward': expected a number, got list",
    ),
    "jsonl-input-ids-text": (
        _text("ids.jsonl", _row(messages=MSGS, input_ids=[1, "a"])),
        r"ids\.jsonl: line 1: field 'input_ids': expected a list of 32-bit integers",
    ),
    "jsonl-no-layout": (_text("nolayout.jsonl", _row(foo=1)), r"nolayout\.jsonl: cannot tell the layout"),
    "jsonl-duplicate-id": (
        _text("dup.jsonl", _row(id="a", prompt="x") + _row(id="a", prompt="y")),
        r"dup\.jsonl: line 2: field 'id': duplicate id 'a' \(first at line 1\)",
    ),
    "jsonl-id-object": (
        _text("idobj.jsonl", _row(id={"k": 1}, prompt="x")),
        r"idobj\.jsonl: line 1: field 'id': expected text or a number, got dict",
    ),
    "jsonl-not-utf8": (
        _bytes("latin.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1")),
        r"latin\.jsonl: line 1: not UTF-8 text \(byte 0xe9\)",
    ),
    "jsonl-gz-garbage": (_bytes("g.jsonl.gz", b"this is not gzip"), r"g\.jsonl\.gz: not a readable gzip file"),
    "jsonl-gz-truncated": (
        _bytes("t.jsonl.gz", gzip.compress((QA % (1, 1)).encode() * 50)[:30]),
        r"t\.jsonl\.gz: not a readable gzip file",
    ),
    "csv-not-utf8": (
        _bytes("latin.csv", "question,answer\ncaf\xe9,#### 1\n".encode("latin-1")),
        r"latin\.csv: line 2: not UTF-8 text \(byte 0xe9\)",
    ),
    "csv-extra-cell": (
        _text("wide.csv", "question,answer\nq,#### 1\nq2,#### 2,oops\n"),
        r"wide\.csv: line 3: 3 cells, but the header names 2",
    ),
    "csv-duplicate-header": (
        _text("duph.csv", "question,answer,answer\nq,#### 1,2\n"),
        r"duph\.csv: line 1: the header names column 'answer' twice",
    ),
    "unknown-suffix": (_text("data.txt", QA % (1, 1)), r"data\.txt: unknown file type '\.txt'"),
    "parquet-garbage": (_bytes("x.parquet", b"PAR1 not really"), r"x\.parquet: not a readable Parquet file"),
    "hf-dir-empty": (_hf_dir("saved"), r"saved: not a readable saved Hugging Face dataset"),
    "recipe-n-many": (
        _text("r.yaml", RECIPE.format(step="select: {method: random, budget: many}")),
        r"r\.yaml: steps\[1\] \(select\): budget: expected an integer or null, got str 'many'",
    ),
    "recipe-list-for-mapping": (
        _text("r.yaml", RECIPE.format(step="select: [method, random]")),
        r"r\.yaml: steps\[1\] \(select\): expected a mapping of parameters, got list",
    ),
    "recipe-mapping-for-scalar": (
        _text("r.yaml", RECIPE.format(step="select: {method: random, budget: {k: 3}}")),
        r"steps\[1\] \(select\): budget: expected an integer or null, got dict",
    ),
    "recipe-unknown-step": (
        _text("r.yaml", RECIPE.format(step="frobnicate: {}")),
        r"r\.yaml: steps\[1\]: unknown step 'frobnicate'",
    ),
    "recipe-unknown-param": (
        _text("r.yaml", RECIPE.format(step="select: {method: random, budget: 2, bogus: 1}")),
        r"steps\[1\] \(select\): unknown parameter\(s\) bogus",
    ),
    "recipe-unknown-method": (
        _text("r.yaml", RECIPE.format(step="select: {method: nosuch}")),
        r"steps\[1\] \(select\): unknown method 'nosuch'",
    ),
    "recipe-bad-last-step": (
        _text("r.yaml", RECIPE.format(step="export: {format: jsonl, out: o.jsonl, bogus: 1}")),
        r"steps\[1\] \(export\): unknown parameter\(s\) bogus",
    ),
    "recipe-undefined-var": (
        _text("r.yaml", RECIPE.format(step="select: {method: random, name: 'x-${nope}'}")),
        r"r\.yaml: \$\{nope\} is not defined in vars",
    ),
    "recipe-invalid-yaml": (
        _text("r.yaml", "steps:\n  - sample: {which: sample-math\n"),
        r"r\.yaml: invalid YAML \(line 3, column 1: ",
    ),
    "recipe-vars-list": (
        _text("r.yaml", "vars: [1, 2]\n" + RECIPE.format(step="select: {method: random}")),
        r"r\.yaml: 'vars' must be a mapping",
    ),
    "recipe-alias-bomb": (
        _text("r.yaml", BOMB + "steps:\n  - sample: {which: sample-math, n: 3, seed: *g}\n"),
        r"r\.yaml: invalid YAML \(line 3, column 10: alias \*a",
    ),
    "recipe-not-utf8": (_bytes("r.yaml", b"steps:\n  - sample: {which: \xff}\n"), r"r\.yaml: not UTF-8 text"),
    "recipe-ok": (_text("r.yaml", RECIPE.format(step="select: {method: random, budget: 2}")), ""),
}
BAD_NAME = r"invalid dataset name '{}': use letters"
UNKNOWN = r"unknown dataset 'nosuch' in store"
REWARD = "tests.test_malformed_cli:"

# (case id, CLI args, a regex the error line must match). FILE:<key> is replaced by the path FILES[key] writes,
# MISSING by a path that does not exist, OUT by an output path outside the store.
CASES: list[tuple[str, list[str], str]] = [
    # -- usage
    ("usage-unknown-command", ["bogus"], r"No such command 'bogus'\. \(try: curate --help\)"),
    ("usage-missing-argument", ["diff", "gsm8k"], r"Missing argument 'b'\. \(try: curate diff --help\)"),
    ("usage-bad-int", ["sample", "sample-math", "--n", "abc"], r"--n: cannot read 'abc' as int"),
    ("usage-unknown-flag", ["ls", "--bogus"], r"No such option: --bogus"),
    ("usage-select-without-method", ["select", "gsm8k", "--name", "x"], r"Missing option '--method'"),
    ("usage-train-unknown-kind", ["train", "ppo", "gsm8k"], r"No such command 'ppo'\. \(try: curate train --help\)"),
    # -- import
    *[
        (f"import-{key}", ["import", f"FILE:{key}", "--name", "bad"], expect)
        for key, (_, expect) in FILES.items()
        if not key.startswith("recipe")
    ],
    ("import-missing-file", ["import", "MISSING", "--name", "bad"], r"nothing\.jsonl: no such file or directory"),
    ("import-bad-name", ["import", f"{GSM8K}/test.jsonl", "--name", "a/b"], BAD_NAME.format("a/b")),
    ("import-bad-map", ["import", f"{GSM8K}/test.jsonl", "--name", "m", "--map", "prompt"], r"--map 'prompt'"),
    (
        "import-map-unknown-field",
        ["import", f"{GSM8K}/test.jsonl", "--name", "m", "--map", "prompt=nosuch"],
        r"test\.jsonl: --map names source field\(s\) not in the data: nosuch",
    ),
    ("import-unknown-sample", ["sample", "sample-nothing"], r"unknown sample 'sample-nothing'"),
    # -- select
    ("select-unknown-method", ["select", "gsm8k", "--method", "nosuch", "--name", "x"], r"unknown method 'nosuch'"),
    (
        "select-negative-budget",
        ["select", "gsm8k", "--method", "random", "--budget", "-1", "--name", "x"],
        r"--budget must be a non-negative integer, got -1",
    ),
    (
        "select-fraction-2",
        ["select", "gsm8k", "--method", "random", "--fraction", "2", "--name", "x"],
        r"--fraction must be in \[0, 1\], got 2",
    ),
    (
        "select-budget-text",
        ["select", "gsm8k", "--method", "random", "--budget", "many", "--name", "x"],
        r"--budget: cannot read 'many' as int",
    ),
    (
        "select-unknown-option",
        ["select", "gsm8k", "--method", "random", "--budget", "2", "--bogus", "1"],
        r"--method random: unknown option --bogus \(options: --budget",
    ),
    (
        "select-option-without-value",
        ["select", "gsm8k", "--method", "random", "--budget"],
        r"--budget needs a value",
    ),
    (
        "select-unknown-ref",
        ["select", "nosuch", "--method", "random", "--budget", "2", "--name", "x"],
        UNKNOWN,
    ),
    (
        "select-unknown-version",
        ["select", "gsm8k@v9", "--method", "random", "--budget", "2", "--name", "x"],
        r"gsm8k@v9",
    ),
    (
        "select-ref-traversal",
        ["select", "../x", "--method", "random", "--budget", "2", "--name", "x"],
        BAD_NAME.format(r"\.\./x"),
    ),
    (
        "select-bad-out-name",
        ["select", "gsm8k", "--method", "random", "--budget", "2", "--name", "../x"],
        BAD_NAME.format(r"\.\./x"),
    ),
    # -- show / diff / log / tag
    ("show-unknown-ref", ["show", "nosuch"], UNKNOWN),
    ("show-ref-traversal", ["show", "../../etc"], BAD_NAME.format(r"\.\./\.\./etc")),
    ("diff-unknown-ref", ["diff", "gsm8k", "nosuch"], UNKNOWN),
    ("log-unknown-ref", ["log", "gsm8k@nosuch"], r"gsm8k@nosuch"),
    ("tag-bad-tag", ["tag", "gsm8k", "a/b"], r"invalid tag 'a/b'"),
    # -- export
    (
        "export-unknown-format",
        ["export", "gsm8k", "--format", "nosuch", "--out", "OUT"],
        r"unknown export format 'nosuch' \(available: ",
    ),
    (
        "export-option-not-for-format",
        ["export", "gsm8k", "--format", "jsonl", "--out", "OUT", "--style", "x"],
        r"--format jsonl: unknown option --style \(options: --drop-labels, --overwrite\)",
    ),
    ("export-unknown-ref", ["export", "nosuch", "--format", "jsonl", "--out", "OUT"], UNKNOWN),
    ("export-missing-out", ["export", "gsm8k", "--format", "jsonl"], r"Missing option '--out'"),
    # -- rollout (each fails before a model would load; MISSING models keep a regression from loading one)
    ("rollout-unknown-option", ["rollout", "sample-math", "--bogus", "1"], r"rollout: unknown option --bogus"),
    ("rollout-n-zero", ["rollout", "sample-math", "--n", "0"], r"--n must be an integer >= 1, got 0"),
    ("rollout-n-text", ["rollout", "sample-math", "--n", "many"], r"--n: cannot read 'many' as int"),
    ("rollout-unknown-reward", ["rollout", "sample-math", "--reward", "nosuch"], r"--reward 'nosuch': unknown"),
    (
        "rollout-reward-module-missing",
        ["rollout", "sample-math", "--reward", "no_such_module_xyz:fn", "--model", "MISSING"],
        r"cannot import module 'no_such_module_xyz'",
    ),
    (
        "rollout-reward-wrong-arity",
        ["rollout", "sample-math", "--reward", REWARD + "two_args", "--model", "MISSING"],
        r"two_args': takes \(completion\), but a reward is called as fn\(completion, answer, \*\*row\)",
    ),
    (
        "rollout-reward-without-row",
        ["rollout", "sample-math", "--reward", REWARD + "no_row", "--model", "MISSING"],
        r"no_row': takes \(completion, answer\) without \*\*row",
    ),
    ("rollout-unknown-backend", ["rollout", "sample-math", "--backend", "tgi"], r"--backend 'tgi': unknown backend"),
    ("rollout-unknown-ref", ["rollout", "nosuch", "--n", "2", "--model", "MISSING"], UNKNOWN),
    # -- train (the missing model fails before any weights load)
    ("train-sft-unknown-option", ["train", "sft", "gsm8k", "--bogus", "1"], r"train sft: unknown option --bogus"),
    ("train-sft-lr-text", ["train", "sft", "gsm8k", "--lr", "fast", "--out", "OUT"], r"--lr: cannot read 'fast'"),
    (
        "train-sft-missing-model",
        ["train", "sft", "gsm8k", "--model", "MISSING", "--out", "OUT"],
        r"no model '.*nothing\.jsonl'",
    ),
    (
        "train-grpo-reward-wrong-arity",
        ["train", "grpo", "sample-math", "--reward", REWARD + "two_args", "--model", "MISSING", "--out", "OUT"],
        r"two_args': takes \(completion\)",
    ),
    # -- run
    ("run-missing-recipe", ["run", "MISSING"], r"nothing\.jsonl: no such recipe"),
    ("run-set-without-equals", ["run", "FILE:recipe-ok", "--set", "budget"], r"--set 'budget': expected key=value"),
    (
        "run-set-unknown-step",
        ["run", "FILE:recipe-ok", "--set", "train.lr=1"],
        r"--set 'train\.lr=1': the recipe has no train step",
    ),
    *[
        (f"run-{key}", ["run", f"FILE:{key}"], expect)
        for key, (_, expect) in FILES.items()
        if key.startswith("recipe") and key != "recipe-ok"
    ],
]


def _args(args: list[str], d: Path) -> list[str]:
    out = []
    for a in args:
        if a.startswith("FILE:"):
            a = FILES[a[5:]][0](d)
        elif a == "MISSING":
            a = str(d / "missing" / "nothing.jsonl")
        elif a == "OUT":
            a = str(d / "out")
        out.append(a)
    return out


def _run_case(base: Path, d: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, bool]:
    """Run one case on a fresh copy of the store; returns the process and whether the store stayed the same."""
    d.mkdir(parents=True)
    store = d / "store"
    shutil.copytree(base, store)
    before = snapshot(store)
    cmd = [sys.executable, "-m", "curate", "--store", str(store), *_args(args, d)]
    try:
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="backslashreplace",
            timeout=120,  # every case fails in seconds; one that hangs (an alias bomb) fails alone
            cwd=REPO,
            env={**os.environ, "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "CURATE_QUIET": "1"},
        )
    except subprocess.TimeoutExpired:
        p = subprocess.CompletedProcess(cmd, -1, "", "timed out after 120 s")
    return p, snapshot(store) == before


@pytest.fixture(scope="module")
def results(base_store, tmp_path_factory, request) -> dict[str, tuple[subprocess.CompletedProcess, bool]]:
    """Every selected case, run a few at a time: each is a separate process that mostly waits on imports, and one
    by one they took minutes."""
    selected = {
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_malformed_input_is_one_line_exit_2_store_unchanged"
    }
    root = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        futures = {c: pool.submit(_run_case, base_store, root / c, a) for c, a, _ in CASES if c in selected}
        return {c: f.result() for c, f in futures.items()}


def test_battery_is_large_and_covers_every_command():
    assert len(CASES) >= 40 and len({c for c, _, _ in CASES}) == len(CASES)
    commands = {args[0] for _, args, _ in CASES}
    assert {"import", "export", "select", "run", "rollout", "train"} <= commands


@pytest.mark.parametrize(("case", "args", "expect"), CASES, ids=[c for c, _, _ in CASES])
def test_malformed_input_is_one_line_exit_2_store_unchanged(results, case, args, expect):
    p, unchanged = results[case]
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert re.search(expect, lines[0]), lines[0]
    assert unchanged, "the store changed"
