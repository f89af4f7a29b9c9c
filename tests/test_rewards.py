"""Reward functions: the math reward on hand-checked cases, exact/contains, and loading by name or dotted path."""

from __future__ import annotations

import pytest

from curate.errors import CurateError
from curate.rewards import REWARDS, extract_answer, get_reward, last_boxed, math_reward, needs_answer


def my_reward(completion: str, answer: str | None, **row) -> float:
    """A user reward loaded as ``tests.test_rewards:my_reward``: reads a pass-through column of the row."""
    return float(len(completion)) * row.get("weight", 1.0)


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        # fractions and decimals are one number
        ("so the result is 1/2", "0.5", 1.0),
        ("the result is 0.5", "1/2", 1.0),
        (r"we get $\frac{1}{2}$", "0.5", 1.0),
        (r"final: \boxed{\frac{1}{2}}", "1/2", 1.0),
        (r"final: \boxed{\dfrac{1}{2}}", "0.5", 1.0),
        # \boxed with nested braces, and the last box wins
        (r"first \boxed{2}, then \boxed{\frac{3}{4}}", "3/4", 1.0),
        (r"first \boxed{2}, then \boxed{\frac{3}{4}}", "2", 0.0),
        (r"\boxed{\frac{3}{4}}", r"\frac{3}{4}", 1.0),
        (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}", 1.0),  # math-verify: symbolic equality
        (r"\boxed{x^2+1}", "1+x^2", 1.0),
        # GSM8K convention and thousands separators
        ("48 + 24 = 72\n#### 1,234", "1234", 1.0),
        ("#### 1234", "1,234", 1.0),
        ("She earns $1,234,567 in total.", "1234567", 1.0),
        ("#### 1,234", "1235", 0.0),
        # "the answer is", with a trailing period, $ or unit
        ("The answer is 18.", "18", 1.0),
        ("The answer is $18.", "18", 1.0),
        ("So the answer is 18 apples. Done, 3 left.", "18", 1.0),
        (r"#### 12 \text{ cm}", "12", 1.0),
        # negative numbers
        ("the temperature fell to -7 degrees", "-7", 1.0),
        ("#### -7", "7", 0.0),
        (r"\boxed{-\frac{1}{2}}", "-0.5", 1.0),
        # the last number when nothing else marks the answer
        ("3 + 4 = 7, then 7 * 2 = 14", "14", 1.0),
        ("3 + 4 = 7, then 7 * 2 = 14", "7", 0.0),
        # wrong answers and no answer at all
        ("#### 41", "42", 0.0),
        ("I do not know.", "42", 0.0),
        ("", "42", 0.0),
        (r"\boxed{}", "0", 0.0),
    ],
)
def test_math_reward_hand_checked(completion, answer, expected):
    assert math_reward(completion, answer) == expected


def test_extract_answer_priorities():
    # \boxed beats ####, #### beats "the answer is", which beats the last number
    assert extract_answer(r"#### 5 \boxed{6}") == "6"
    assert extract_answer("the answer is 3\n#### 4") == "4"
    assert extract_answer("the answer is 3, not 9") == "3, not 9"
    assert extract_answer("a 1 b 2") == "2"
    assert extract_answer("no digits") is None
    assert last_boxed(r"\boxed{a{b{c}}d} tail") == "a{b{c}}d"
    assert last_boxed(r"\boxed{unclosed") is None


def test_exact_and_contains():
    exact, contains = get_reward("exact"), get_reward("contains")
    assert exact("  42\n", "42") == 1.0 and exact("42.0", "42") == 0.0
    assert contains("so it is 42 apples", " 42 ") == 1.0 and contains("so it is 4 2", "42") == 0.0


def test_get_reward_builtins_and_needs_answer():
    assert set(REWARDS) == {"math", "exact", "contains"}
    for name in REWARDS:
        assert get_reward(name) is REWARDS[name]
        assert needs_answer(get_reward(name))


def test_get_reward_dotted_path_loads_user_function():
    fn = get_reward("tests.test_rewards:my_reward")
    assert fn is my_reward
    assert fn("abcd", None, weight=0.5, id="r1") == 2.0
    assert not needs_answer(fn)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("maths", r"unknown reward \(built-ins: math, exact, contains"),
        ("tests.no_such_module:fn", "cannot import module 'tests.no_such_module'"),
        ("tests.test_rewards:nope", "has no attribute 'nope'"),
        ("tests.test_rewards:REWARDS", "is not callable"),
        ("tests/test_rewards.py:my_reward", "expected a dotted path"),
        (":fn", "expected a dotted path"),
        ("", "expected a built-in name"),
    ],
)
def test_get_reward_errors(spec, message):
    with pytest.raises(CurateError, match=message):
        get_reward(spec)
