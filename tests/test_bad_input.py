"""Bad input, unit by unit: readers, normalisation, recipes, rewards and the CLI entry point each refuse it with one
``CurateError`` line naming the file, the line or row, and the field; valid input that looks odd imports.

The CLI-level battery (exit codes, one stderr line, store unchanged) is ``tests/test_malformed_cli.py``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

import curate
from curate.errors import CurateError, InputError
from curate.io import read_source
from curate.pipeline import run_pipeline
from curate.records import normalise, row_id, to_table
from tests.test_import import snapshot

REPO = Path(__file__).resolve().parents[1]
MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _refused(store, tmp_path, source: str, match: str, **kw) -> None:
    """Import ``source`` expecting one InputError line that matches; the store must not change."""
    before = snapshot(store.root)
    with pytest.raises(InputError, match=match) as e:
        curate.import_data(source, name="bad", store=store, **kw)
    assert "\n" not in str(e.value)
    assert snapshot(store.root) == before


# ------------------------------------------------------------------------------------------ readers
def test_json_holding_scalars_names_the_item(store, tmp_path):
    (tmp_path / "ints.json").write_text("[1, 2, 3]")
    _refused(store, tmp_path, str(tmp_path / "ints.json"), r"ints\.json: item 0: expected a JSON object, got int")
    (tmp_path / "mixed.json").write_text('[{"prompt": "a"}, "b"]')
    _refused(store, tmp_path, str(tmp_path / "mixed.json"), r"mixed\.json: item 1: expected a JSON object, got str")


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_nesting_that_exhausts_the_parser_is_one_line(store, tmp_path, suffix):
    deep = "[" * 200_000 + "]" * 200_000
    path = tmp_path / f"deep{suffix}"
    path.write_text(deep if suffix == ".json" else '{"prompt": "x"}\n{"prompt": "y", "a": ' + deep + "}\n")
    where = "" if suffix == ".json" else "line 2: "
    _refused(store, tmp_path, str(path), rf"deep\{suffix}: {where}invalid JSON \(nested too deeply\)")


def test_nesting_parquet_cannot_read_back_is_refused(store, tmp_path):
    # 40 levels parse, and Arrow would even write them, but Parquet refuses to read such a schema back: a committed
    # version nobody could load.
    src = _jsonl(tmp_path / "n.jsonl", [{"prompt": "x"}, {"prompt": "y", "a": json.loads("[" * 40 + "]" * 40)}])
    _refused(store, tmp_path, src, r"n\.jsonl: line 2: field 'a': nested more than 32 levels deep")


def test_non_utf8_csv_names_the_line(store, tmp_path):
    (tmp_path / "latin.csv").write_bytes("question,answer\nq,#### 1\ncaf\xe9,#### 2\n".encode("latin-1"))
    _refused(store, tmp_path, str(tmp_path / "latin.csv"), r"latin\.csv: line 3: not UTF-8 text \(byte 0xe9\)")


def test_csv_row_with_more_cells_than_the_header(store, tmp_path):
    (tmp_path / "wide.csv").write_text('question,answer\nq,#### 1\n"two\nlines",#### 2,extra\n')
    _refused(store, tmp_path, str(tmp_path / "wide.csv"), r"wide\.csv: line 3: 3 cells, but the header names 2")


def test_csv_header_naming_a_column_twice(store, tmp_path):
    (tmp_path / "dup.csv").write_text("question,answer,answer\nq,#### 1,2\n")
    _refused(store, tmp_path, str(tmp_path / "dup.csv"), r"dup\.csv: line 1: the header names column 'answer' twice")


def test_csv_with_a_200kb_cell_imports(store, tmp_path):
    big = "x" * 200_000
    with open(tmp_path / "long.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["question", "answer"], [big, "#### 7"], ["short", "#### 8"]])
    v = curate.import_data(str(tmp_path / "long.csv"), name="long", store=store)
    rows = v.to_pylist()
    assert [r["prompt"][0]["content"] for r in rows] == [big, "short"] and [r["answer"] for r in rows] == ["7", "8"]


def test_csv_errors_name_the_line_where_the_row_starts(store, tmp_path):
    # The first row's question spans lines 2-3, so the second row starts on line 4.
    (tmp_path / "ml.csv").write_text('question,answer,weight\n"a\nb",#### 1,0.5\nc,#### 2,[]\n')
    _refused(store, tmp_path, str(tmp_path / "ml.csv"), r"ml\.csv: line 4: field 'weight': expected a number, got str")


def test_csv_numeric_canonical_columns_are_read_as_numbers(store, tmp_path):
    (tmp_path / "w.csv").write_text("prompt,weight,reward,level\na,0.5,1,3\nb,,-2.5,4\n")
    v = curate.import_data(str(tmp_path / "w.csv"), name="w", store=store)
    rows = v.to_pylist()
    assert [r["weight"] for r in rows] == [0.5, None] and [r["reward"] for r in rows] == [1.0, -2.5]
    assert [r["level"] for r in rows] == ["3", "4"]  # a pass-through column stays as written


@pytest.mark.parametrize("name", ["rows.jsonl.gz", "rows.json.gz", "rows.csv.gz"])
def test_gzipped_files_import_like_plain_ones(store, tmp_path, name):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(3)]
    if name.startswith("rows.csv"):
        text = "question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in rows)
    elif name.startswith("rows.jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    else:
        text = json.dumps(rows)
    plain = tmp_path / name.removesuffix(".gz")
    plain.write_text(text)
    (tmp_path / name).write_bytes(gzip.compress(text.encode()))
    a = curate.import_data(str(plain), name="plain", store=store)
    b = curate.import_data(str(tmp_path / name), name="gz", store=store)
    strip = [{k: v for k, v in r.items() if k != "data_source"} for r in a.to_pylist()]
    assert [{k: v for k, v in r.items() if k != "data_source"} for r in b.to_pylist()] == strip
    assert len(b) == 3 and b.op["kind"] == a.op["kind"]


def test_broken_gzip_is_one_line(store, tmp_path):
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    _refused(store, tmp_path, str(tmp_path / "bad.jsonl.gz"), r"bad\.jsonl\.gz: not a readable gzip file")
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "x"}\n' * 100)[:25])
    _refused(store, tmp_path, str(tmp_path / "cut.jsonl.gz"), r"cut\.jsonl\.gz: not a readable gzip file")


def test_source_digest_is_the_file_hash(tmp_path):
    # Import version ids hash the source digest: reading a file in one go must not change it.
    src = _jsonl(tmp_path / "a.jsonl", [{"prompt": "x"}, {"prompt": "y"}])
    assert read_source(src).digest == hashlib.sha256(Path(src).read_bytes()).hexdigest()
    (tmp_path / "a.csv").write_text("prompt\nx\n")
    assert read_source(str(tmp_path / "a.csv")).digest == hashlib.sha256(b"prompt\nx\n").hexdigest()


# ------------------------------------------------------------------------------------------ values
def test_empty_objects_in_a_passthrough_field_are_kept_as_json_text(store, tmp_path):
    rows = [
        {"prompt": "a", "meta": {}},
        {"prompt": "b", "meta": {"inner": {}}},
        {"prompt": "c", "meta": None, "more": [{}]},
    ]
    v = curate.import_data(_jsonl(tmp_path / "e.jsonl", rows), name="empty", store=store)
    got = v.to_pylist()
    assert [r["meta"] for r in got] == ["{}", '{"inner":{}}', None]
    assert [r["more"] for r in got] == [None, None, "[{}]"]
    assert v.to_arrow().schema.field("meta").type == pa.string()


def test_lone_surrogate_names_line_and_field(store, tmp_path):
    (tmp_path / "s.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "x", "note": "a\\ud800b"}\n')
    _refused(
        store, tmp_path, str(tmp_path / "s.jsonl"), r"s\.jsonl: line 2: field 'note': text holds a lone surrogate"
    )


@pytest.mark.parametrize("field", ["n", "sample"])  # pass-through, canonical
def test_integer_beyond_64_bits_names_line_and_field(store, tmp_path, field):
    _jsonl(tmp_path / "big.jsonl", [{"prompt": "x"}, {"prompt": "y", field: 10**30}])
    _refused(
        store, tmp_path, str(tmp_path / "big.jsonl"), rf"line 2: field '{field}': an integer too large for 64 bits"
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("weight", "heavy", "expected a number, got str 'heavy'"),
        ("reward", [1], r"expected a number, got list \[1\]"),
        ("input_ids", [1, "a"], r"expected a list of 32-bit integers, got list \[1, 'a'\]"),
        ("input_ids", [2**40], "expected a list of 32-bit integers"),
    ],
)
def test_wrong_typed_canonical_field_names_the_line(store, tmp_path, field, value, expected):
    src = _jsonl(tmp_path / "t.jsonl", [{"messages": MSGS}, {"messages": MSGS, field: value}])
    _refused(store, tmp_path, src, rf"t\.jsonl: line 2: field '{field}': {expected}")


def test_wrong_typed_field_without_lines_names_the_row():
    with pytest.raises(InputError, match=r"handmade: row 1: field 'weight': expected a number, got dict"):
        to_table([{"id": "a", "weight": 1.0}, {"id": "b", "weight": {}}], source="handmade")


def test_save_refuses_unstorable_values_in_one_line(store):
    with pytest.raises(InputError, match=r"rows: row 0: field 'x': text holds a lone surrogate"):
        curate.save([{"id": "a", "x": "\ud800"}], name="s", store=store)
    with pytest.raises(InputError, match=r"rows: row 1: field 'n': an integer too large for 64 bits"):
        curate.save([{"id": "a", "n": 1}, {"id": "b", "n": 10**20}], name="s", store=store)
    assert store.datasets() == []


def test_columns_matching_no_layout_name_the_file(store, tmp_path):
    src = _jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    _refused(store, tmp_path, src, r"odd\.jsonl: cannot tell the layout from fields \['bar', 'foo'\]")


def test_map_items_that_are_not_text(store, tmp_path):
    src = _jsonl(tmp_path / "q.jsonl", [{"q": "x", "a": "#### 1"}])
    with pytest.raises(InputError, match=r"--map 3: expected canonical=source"):
        curate.import_data(src, name="m", mapping=[3], store=store)
    v = curate.import_data(src, name="m", mapping="prompt=q", store=store)  # one string is one rename
    assert v.to_pylist()[0]["prompt"] == [{"role": "user", "content": "x"}]


# ------------------------------------------------------------------------------------------ ids
def test_partial_ids_keep_the_given_ones_and_hash_the_rest(store, tmp_path):
    rows = [{"prompt": "a", "id": "mine-1"}, {"prompt": "b"}, {"prompt": "c", "id": 7}]
    got = curate.import_data(_jsonl(tmp_path / "p.jsonl", rows), name="p", store=store).to_pylist()
    assert got[0]["id"] == "mine-1" and got[2]["id"] == "7"
    t, _ = normalise([{"prompt": "b"}], source="x")
    assert got[1]["id"] == t.column("id")[0].as_py()  # the same hash a fully unlabelled import gives


def test_a_hashed_id_never_collides_with_a_given_one():
    t, _ = normalise([{"prompt": "b"}], source="x")
    taken = t.column("id")[0].as_py()
    rows = [{"prompt": "a", "id": taken}, {"prompt": "b"}, {"prompt": "b"}, {"prompt": "q", "id": f"{taken}-1"}]
    ids = normalise(rows, source="x")[0].column("id").to_pylist()
    assert ids == [taken, f"{taken}-2", f"{taken}-3", f"{taken}-1"] and len(set(ids)) == 4
    assert taken == row_id({"prompt": [{"role": "user", "content": "b"}]})


def test_ids_that_are_objects_or_duplicates_are_refused(store, tmp_path):
    src = _jsonl(tmp_path / "i.jsonl", [{"prompt": "a"}, {"prompt": "b", "id": {"k": 1}}])
    _refused(store, tmp_path, src, r"i\.jsonl: line 2: field 'id': expected text or a number, got dict")
    src = _jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "id": 1}, {"prompt": "b"}, {"prompt": "c", "id": "1"}])
    _refused(store, tmp_path, src, r"d\.jsonl: line 3: field 'id': duplicate id '1' \(first at line 1\)")


# ------------------------------------------------------------------------------------------ recipes
def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_yaml_alias_bomb_is_refused_at_once(store, tmp_path):
    # 9**7 leaves from 8 short lines; before, the ${var} substitution walked every one of them.
    lines = ["vars:", "  a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(6)]
    path = _recipe(tmp_path, "\n".join(lines) + "\nsteps:\n  - sample: {which: sample-math, n: 3, seed: *g}\n")
    t0 = time.perf_counter()
    with pytest.raises(CurateError, match=r"r\.yaml: invalid YAML \(line 3, column \d+: alias \*a \(recipes take no"):
        run_pipeline(path, store=store)
    assert time.perf_counter() - t0 < 5 and store.datasets() == []


@pytest.mark.parametrize(
    ("step", "match"),
    [
        ("select: {method: random, budget: many}", r"steps\[1\] \(select\): budget: expected an integer or null, got"),
        ("select: [method, random]", r"steps\[1\] \(select\): expected a mapping of parameters, got list"),
        ("select: {method: random, budget: {k: 3}}", r"budget: expected an integer or null, got dict \{'k': 3\}"),
        ("rollout: {n: [8]}", r"steps\[1\] \(rollout\): n: expected an integer, got list \[8\]"),
        ("train: {kind: sft, lr: fast}", r"steps\[1\] \(train\): lr: expected a number, got str 'fast'"),
        ("train: {kind: ppo}", r"steps\[1\] \(train\): unknown trainer 'ppo' \(available: grpo, sft\)"),
        ("export: {format: verl, out: x, split: {a: 1}}", r"steps\[1\] \(export\): split: expected text"),
        ("export: {format: jsonl, out: x, bogus: 1}", r"steps\[1\] \(export\): unknown parameter\(s\) bogus"),
        ("select: {method: nosuch}", r"steps\[1\] \(select\): unknown method 'nosuch'"),
        ("select: {method: random, name: 'x-${nope}'}", r"\$\{nope\} is not defined in vars"),
    ],
)
def test_wrong_step_parameters_fail_before_any_step_runs(store, tmp_path, step, match):
    path = _recipe(tmp_path, f"steps:\n  - sample: {{which: sample-math, n: 3, name: m}}\n  - {step}\n")
    with pytest.raises(CurateError, match=match) as e:
        run_pipeline(path, store=store)
    assert "\n" not in str(e.value)
    assert store.datasets() == []  # the sample step before it never ran


def test_recipe_file_problems_are_one_line(store, tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"steps:\n  - sample: {which: \xff}\n")
    with pytest.raises(CurateError, match=r"bin\.yaml: not UTF-8 text"):
        run_pipeline(tmp_path / "bin.yaml", store=store)
    with pytest.raises(CurateError, match=r"a directory, not a recipe file"):
        run_pipeline(tmp_path, store=store)
    path = _recipe(tmp_path, "vars: [1]\nsteps:\n  - sample: {which: sample-math}\n")
    with pytest.raises(CurateError, match=r"'vars' must be a mapping"):
        run_pipeline(path, store=store)


def test_shipped_recipes_pass_the_parameter_check():
    from curate.pipeline import check_steps, load_recipe

    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        check_steps(load_recipe(path), path)


# ------------------------------------------------------------------------------------------ rewards
def raises_key_error(completion: str, answer: str | None, **row) -> float:
    return {}["missing"]


def raises_multiline(completion: str, answer: str | None, **row) -> float:
    raise RuntimeError("first line\nsecond line")


def one_arg(completion: str) -> float:
    return 0.0


def test_reward_exceptions_become_one_line_naming_prompt_and_reward():
    from curate.rewards import call_reward

    with pytest.raises(CurateError, match=r"^p: reward 'r' raised KeyError: 'missing'$"):
        call_reward(raises_key_error, "r", "text", None, {"id": "q"}, "p")
    with pytest.raises(CurateError, match=r"^p: reward 'r' raised RuntimeError: first line second line$"):
        call_reward(raises_multiline, "r", "text", None, {}, "p")
    with pytest.raises(CurateError, match=r"^p: reward 'r' returned 'x', not a number$"):
        call_reward(lambda c, a, **row: "x", "r", "text", None, {}, "p")


def test_reward_with_the_wrong_arity_is_refused_before_anything_runs():
    from curate.rewards import get_reward
    from curate.rollouts import RolloutConfig

    with pytest.raises(
        CurateError, match=r"--reward 'tests.test_bad_input:one_arg': takes \(completion\), but a reward is called as"
    ):
        RolloutConfig(reward="tests.test_bad_input:one_arg")
    with pytest.raises(CurateError, match=r"without \*\*row"):
        get_reward(lambda completion, answer: 0.0)


def test_rollout_with_a_raising_reward_names_the_prompt(store, tiny_model_path):
    from curate.rollouts import RolloutConfig, rollout

    prompts = curate.save(
        [{"id": "q0", "prompt": [{"role": "user", "content": "2+2?"}], "answer": "4"}], name="toy", store=store
    )
    config = RolloutConfig(n=1, model=tiny_model_path, max_tokens=2, reward="tests.test_bad_input:raises_key_error")
    with pytest.raises(
        CurateError, match=r"toy@v1: prompt id 'q0' sample 0: reward '.*raises_key_error' raised KeyErr"
    ):
        rollout(prompts, config, store=store)
    assert store.datasets() == ["toy"]


# ------------------------------------------------------------------------------------------ CLI entry point
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=REPO, env=env)


def test_dash_h_is_help():
    for args in (["-h"], ["train", "sft", "-h"]):
        p = _cli(*args)
        assert p.returncode == 0 and "Usage" in p.stdout and p.stderr == "", p.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["bogus"], "error: No such command 'bogus'. (try: curate --help)"),
        (["diff", "x"], "error: Missing argument 'b'. (try: curate diff --help)"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, line):
    p = _cli("--store", str(tmp_path / "s"), *args)
    assert p.returncode == 2 and p.stderr.strip() == line and p.stdout == ""


def test_error_messages_keep_their_brackets(tmp_path):
    # Rich markup would swallow "[red]" in a message (and print the rest red); errors are printed as plain text.
    src = _jsonl(tmp_path / "q.jsonl", [{"prompt": "x"}])
    p = _cli("--store", str(tmp_path / "s"), "import", src, "--name", "m", "--map", "[red]x")
    assert p.returncode == 2 and p.stderr.strip() == "error: --map '[red]x': expected canonical=source", p.stderr
