"""Built-in sample datasets: determinism, schema, exact math answers, graded difficulty, SFT variety."""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import re
import statistics
from collections import Counter
from fractions import Fraction

import pyarrow as pa
import pytest

from curate.samples import _ARTICLES, _GLOSSARY, SAMPLES, SFT_KINDS, sample_math, sample_sft

N = 500  # the default size, which the brief pins (100 problems per level)


@pytest.fixture(scope="module")
def math_rows() -> list[dict]:
    return sample_math(N, seed=0)


@pytest.fixture(scope="module")
def sft_rows() -> list[dict]:
    return sample_sft(N, seed=0)


# --- shared --------------------------------------------------------------------------------------------------------


def test_registry_names_and_callables():
    assert list(SAMPLES) == ["sample-sft", "sample-math"]
    assert SAMPLES["sample-sft"] is sample_sft and SAMPLES["sample-math"] is sample_math
    for name, make in SAMPLES.items():
        rows = make(5, seed=1)
        assert len(rows) == 5
        assert {r["data_source"] for r in rows} == {name}


@pytest.mark.parametrize("make", [sample_sft, sample_math])
def test_same_seed_same_rows_other_seed_other_rows(make):
    assert make(200, seed=7) == make(200, seed=7)
    a, b = make(200, seed=7), make(200, seed=8)
    assert a != b
    differing = sum(x != y for x, y in zip(a, b, strict=True))
    assert differing > 150  # a new seed changes nearly every row, not just a few


@pytest.mark.parametrize("make", [sample_sft, sample_math])
def test_smaller_n_is_a_prefix(make):
    assert make(60, seed=3) == make(200, seed=3)[:60]


@pytest.mark.parametrize("make", [sample_sft, sample_math])
def test_row_counts_and_defaults(make):
    assert len(make()) == N
    assert make() == make(N, seed=0)
    assert make(0) == []
    assert len(make(7, seed=2)) == 7
    with pytest.raises(ValueError, match="n must be"):
        make(-1)


@pytest.mark.parametrize("make, prefix", [(sample_sft, "sft"), (sample_math, "math")])
def test_ids_unique_and_stable(make, prefix):
    rows = make(N, seed=4)
    ids = [r["id"] for r in rows]
    assert ids == [f"{prefix}-{i:05d}" for i in range(N)]
    assert len(set(ids)) == N


@pytest.mark.parametrize("make", [sample_sft, sample_math])
def test_rows_become_an_arrow_table(make):
    # The store writes Parquet, so every row must fit one Arrow schema.
    table = pa.Table.from_pylist(make(100, seed=0))
    assert table.num_rows == 100
    assert table.schema.field("messages").type == pa.list_(
        pa.struct([("role", pa.string()), ("content", pa.string())])
    )


def _check_turns(messages: list[dict]) -> None:
    assert messages, "empty conversation"
    for m in messages:
        assert set(m) == {"role", "content"}
        assert isinstance(m["content"], str) and m["content"].strip()
    roles = [m["role"] for m in messages]
    if roles[0] == "system":
        roles = roles[1:]
    assert roles, "a system message alone"
    assert roles == ["user", "assistant"] * (len(roles) // 2), roles
    assert messages[-1]["role"] == "assistant"


# --- sample-math ---------------------------------------------------------------------------------------------------

_STEP = re.compile(r"^(?P<label>[^:]+): (?P<expr>[0-9+\-*/() ]+) = (?P<value>\d+)\.$")
# Numbers a step may use without reading them from the question: 100 for percentages, 60 minutes per hour,
# 2 sides of a rectangle.
_CONSTANTS = {2, 60, 100}


def _exact(expr: str) -> Fraction:
    """Exact value of + - * / over integers; a separate evaluator from the module's, so the check is independent."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant) and type(node.value) is int, ast.dump(node)
        return Fraction(node.value)

    return walk(ast.parse(expr, mode="eval").body)


def _question(row: dict) -> str:
    return row["prompt"][0]["content"]


def _solution(row: dict) -> str:
    return row["messages"][-1]["content"]


def _steps(row: dict) -> list[re.Match]:
    lines = _solution(row).split("\n")
    matches = [_STEP.match(line) for line in lines[:-1]]
    assert all(matches), [line for line, m in zip(lines, matches, strict=False) if not m]
    return matches


def test_math_schema(math_rows):
    for r in math_rows:
        assert set(r) == {"id", "prompt", "answer", "messages", "level", "data_source"}
        assert r["data_source"] == "sample-math"
        assert isinstance(r["level"], int) and 1 <= r["level"] <= 5
        assert len(r["prompt"]) == 1 and r["prompt"][0]["role"] == "user"
        assert _question(r).endswith(" Give the final answer after ####.")
        _check_turns(r["messages"])
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["messages"][0] == r["prompt"][0]  # SFT and RL see the same prompt text


def test_math_five_levels_of_100(math_rows):
    assert Counter(r["level"] for r in math_rows) == {1: 100, 2: 100, 3: 100, 4: 100, 5: 100}
    assert [r["level"] for r in math_rows[:10]] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]


def test_math_final_line_is_the_answer(math_rows):
    for r in math_rows:
        assert r["answer"] == str(int(r["answer"])), r["answer"]
        assert int(r["answer"]) >= 0
        assert _solution(r).split("\n")[-1] == f"#### {r['answer']}"
        assert _solution(r).count("####") == 1


def test_math_questions_unique(math_rows):
    assert len({_question(r) for r in math_rows}) == N


def test_math_every_step_recomputes(math_rows):
    """Each printed step evaluates exactly to its value, uses only known numbers, and the last one is the answer."""
    for r in math_rows:
        known = {int(x) for x in re.findall(r"\d+", _question(r))} | _CONSTANTS
        values = []
        for m in _steps(r):
            exact = _exact(m["expr"])
            assert exact == int(m["value"]), (r["id"], m.group(0))
            operands = {int(x) for x in re.findall(r"\d+", m["expr"])}
            assert operands <= known, (r["id"], m.group(0), operands - known)
            known.add(int(m["value"]))
            values.append(int(m["value"]))
        assert values[-1] == int(r["answer"]), r["id"]


# Independent solvers for one template per level (two for level 5), read straight from the question text.
_SOLVERS = [
    (r"(\w+) has (\d+) \w+\. At the market, \1 buys (\d+) more\.", lambda _, a, b: int(a) + int(b)),
    (
        r"A bus leaves the station with (\d+) passengers\. At the first stop, (\d+) people get off and (\d+) people",
        lambda a, off, on: int(a) - int(off) + int(on),
    ),
    (
        r"Museum tickets cost \$(\d+) for adults and \$(\d+) for children\. A family of (\d+) adults and (\d+) ",
        lambda adult, child, na, nc: int(na) * int(adult) + int(nc) * int(child),
    ),
    (
        r"sells one .+ for \$(\d+)\. During a sale, everything is (\d+)% off\. \w+ buys (\d+) .+ and pays \$(\d+) ",
        lambda price, pct, k, ship: (int(price) - int(price) * int(pct) // 100) * int(k) + int(ship),
    ),
    (
        r"A coach travels (\d+) km at (\d+) km per hour, then (\d+) km at (\d+) km per hour\. .+ a (\d+)-minute break",
        lambda a, s1, b, s2, stop: (int(a) // int(s1) + int(b) // int(s2)) * 60 + int(stop),
    ),
    (
        r"garden (\d+) m long and (\d+) m wide\. .+ costs \$(\d+) per metre\. .+ covers (\d+) square metres and "
        r"costs \$(\d+)\.",
        lambda le, wi, fence, cover, seed: (
            2 * (int(le) + int(wi)) * int(fence) + int(le) * int(wi) // int(cover) * int(seed)
        ),
    ),
]


def _recompute(question: str) -> int | None:
    """The answer from the first solver whose pattern matches ``question``, else None."""
    for pattern, solve in _SOLVERS:
        if m := re.search(pattern, question):
            return solve(*m.groups())
    return None


def test_math_templates_recompute_from_the_question():
    rows = sample_math(2000, seed=11)  # larger n so every template checked here appears several times
    checked = Counter()
    for r in rows:
        expected = _recompute(_question(r))
        if expected is not None:
            assert str(expected) == r["answer"], (r["id"], _question(r))
            checked[r["level"]] += 1
    assert set(checked) == {1, 2, 3, 4, 5}, checked
    assert all(v >= 20 for v in checked.values()), checked


def test_math_levels_get_harder(math_rows):
    steps = {lvl: statistics.mean(len(_steps(r)) for r in math_rows if r["level"] == lvl) for lvl in range(1, 6)}
    assert all(steps[lvl] < steps[lvl + 1] for lvl in range(1, 5)), steps
    assert steps[1] == 1 and steps[5] >= 4.5, steps
    # Bigger numbers too: the mean of the largest number in each solution grows with the level.
    biggest = {
        lvl: statistics.mean(
            max(int(x) for x in re.findall(r"\d+", _solution(r))) for r in math_rows if r["level"] == lvl
        )
        for lvl in range(1, 6)
    }
    assert all(biggest[lvl] < biggest[lvl + 1] for lvl in range(1, 5)), biggest
    assert biggest[5] > 1000, biggest


# --- sample-sft ----------------------------------------------------------------------------------------------------


def _first_user(row: dict) -> str:
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def _replies(row: dict) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"]


def test_sft_schema(sft_rows):
    for r in sft_rows:
        assert set(r) == {"id", "messages", "data_source", "kind"}
        assert r["data_source"] == "sample-sft"
        assert r["kind"] in SFT_KINDS
        _check_turns(r["messages"])


def test_sft_kinds_are_many_and_balanced(sft_rows):
    counts = Counter(r["kind"] for r in sft_rows)
    assert len(counts) >= 8
    assert set(counts) == set(SFT_KINDS)
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert {r["kind"] for r in sample_sft(len(SFT_KINDS), seed=9)} == set(SFT_KINDS)  # every block holds every kind


def test_sft_response_lengths_spread(sft_rows):
    lengths = [len(reply) for r in sft_rows for reply in _replies(r)]
    assert min(lengths) < 20
    assert max(lengths) > 600
    assert max(len(reply.split()) for r in sft_rows for reply in _replies(r)) > 250  # a few hundred words
    assert statistics.median(lengths) < 400  # most replies are short or medium, not all long


def test_sft_system_messages_and_multi_turn(sft_rows):
    with_system = [r for r in sft_rows if r["messages"][0]["role"] == "system"]
    assert 0.1 * N < len(with_system) < 0.5 * N
    multi = [r for r in sft_rows if sum(m["role"] == "user" for m in r["messages"]) == 2]
    assert len(multi) >= 30
    assert {r["kind"] for r in multi} == {"follow_up"}
    assert all(len(_replies(r)) == 2 for r in sft_rows if r["kind"] == "follow_up")


def test_sft_rows_mostly_differ(sft_rows):
    prompts = [tuple(m["content"] for m in r["messages"] if m["role"] == "user") for r in sft_rows]
    assert len(set(prompts)) == N
    assert len({_replies(r)[-1] for r in sft_rows}) > 0.9 * N


_SHORT_SUM = (
    r"(?:What is|Quick:|Compute) (\d+) ([+\-×]) (\d+)(?:\? Reply with just the number\.| = \?|\. Number only\.)"
)


def test_sft_computed_answers_are_right():
    rows = sample_sft(1500, seed=5)  # larger n so each prompt form checked here appears several times
    checked = Counter()
    for r in rows:
        user, reply = _first_user(r), _replies(r)[0]
        if m := re.fullmatch(_SHORT_SUM, user):
            a, op, b = int(m[1]), m[2], int(m[3])
            assert int(reply) == {"+": a + b, "-": a - b, "×": a * b}[op], user
            checked["arithmetic"] += 1
        elif m := re.fullmatch(r"Sort these numbers from smallest to largest: ([\d, ]+)", user):
            nums = sorted(int(x) for x in m[1].split(", "))
            assert reply == f"From smallest to largest: {', '.join(map(str, nums))}.", user
            checked["sort"] += 1
        elif m := re.fullmatch(r"Convert to uppercase: (.+)", user):
            assert reply == m[1].upper()
            checked["upper"] += 1
        elif m := re.fullmatch(r"How many vowels are in '(.+)'\? Reply with a number\.", user):
            assert int(reply) == sum(c in "aeiou" for c in m[1])
            checked["vowels"] += 1
        elif m := re.fullmatch(r"Reverse the order of the words in: (.+)", user):
            assert reply.split() == m[1].split()[::-1]
            checked["reverse"] += 1
        if r["kind"] == "json_format":
            text = reply.removeprefix("Here is the JSON:\n```json\n").removesuffix("\n```")
            assert isinstance(json.loads(text), dict | list)
            checked["json"] += 1
        if r["kind"] == "follow_up" and (m := re.fullmatch(r"What is (\d+) × (\d+)\?", user)):
            c = int(re.search(r"by (\d+)", r["messages"][-2]["content"])[1])
            assert _replies(r)[-1].endswith(f"= {int(m[1]) * int(m[2]) * c}.")
            checked["follow_up"] += 1
    assert len(checked) == 7 and min(checked.values()) >= 5, checked


def test_sft_conversions_are_exact():
    checked = 0
    for r in sample_sft(1500, seed=6):
        if r["kind"] != "unit_conversion":
            continue
        reply = _replies(r)[0]
        if m := re.search(r"^(-?[\d.]+) ([×÷]) ([\d.]+) = (-?[\d.]+)$", reply, re.M):
            a, op, b, out = Fraction(m[1]), m[2], Fraction(m[3]), Fraction(m[4])
            exact = a * b if op == "×" else a / b
            assert abs(exact - out) <= Fraction(1, 200), reply  # shown rounded to 2 decimals at most
            checked += 1
    assert checked >= 50


def test_glossary_is_consistent():
    assert len(_GLOSSARY) >= 30
    for term, entry in _GLOSSARY.items():
        assert set(entry.related) <= set(_GLOSSARY), (term, entry.related)
        assert term not in entry.related
        for text in (entry.definition, entry.detail, entry.example):
            assert text.endswith("."), (term, text)
    assert set(_ARTICLES) <= set(_GLOSSARY)


# --- golden rows ---------------------------------------------------------------------------------------------------

# sha256 of the rows as sorted-key JSON, computed on the single-module samples.py before its word lists moved into
# data files; any change to a word, a template or the order of random draws changes these.
_GOLDEN = {
    ("sample-sft", 7, 1): "e7a22b280c95942020ef71754282f544b0a57675a3ef00b34192db671a088d85",
    ("sample-sft", 60, 0): "9d6010c6926756ecf0ebf50b4a6ee1b830109fbddbf51edf2fec064a40c37f97",
    ("sample-sft", 500, 13): "1b19377212a0f9ab57e89482104cfdc10d4a519c215c7e97e0c4347d1fb36a49",
    ("sample-math", 7, 1): "f27b5e709349868505db10076cdce237ae7f3ceac7aaf47269adaa6f4d6c7e39",
    ("sample-math", 60, 0): "fe4e927514d369f543508faf48e734891c7b1893028b96ae448f9783a0d38941",
    ("sample-math", 500, 13): "c2bf464d889ecd9c1beb70658ba50fa50a9673d64762cf73f688dd4a6bd35424",
}


@pytest.mark.parametrize("name, n, seed", list(_GOLDEN))
def test_rows_match_golden_digest(name, n, seed):
    rows = SAMPLES[name](n, seed=seed)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == _GOLDEN[name, n, seed]
