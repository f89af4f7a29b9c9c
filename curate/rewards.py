"""Reward functions for RL rollouts: plain functions ``f(completion, answer, **row) -> float``.

Built-ins, by name (``curate rollout REF --reward NAME``):

- ``math``: 1.0 if the completion's final answer equals ``answer`` mathematically, else 0.0. The final answer is
  the last ``\\boxed{...}`` (nested braces allowed), else the text after the last ``####``, else what follows the
  last "the answer is", else the last number in the text (a ``\\frac{a}{b}`` counts as a number). Both sides are
  lightly normalised (``$``, thousands separators ``1,234``, a trailing ``.``, ``\\text{...}`` units, a trailing
  unit word). Two plain numbers (``-3``, ``0.5``, ``1/2``, ``\\frac{1}{2}``) are compared exactly as fractions;
  anything else goes to ``math-verify`` (``parse`` + ``verify``), and if that cannot parse it, the normalised
  strings are compared.
- ``exact``: 1.0 if ``completion.strip() == answer.strip()``.
- ``contains``: 1.0 if ``answer`` (stripped) occurs in ``completion``.

Anything else is a dotted path ``package.module:function`` to your own function; it is called as
``fn(completion, answer, **row)`` where ``row`` holds the prompt row's other columns (``id``, ``prompt``,
``data_source``, ``level`` ...) and ``answer`` is ``None`` when the data has none. Set ``fn.needs_answer = True``
on it to have ``curate rollout`` refuse prompts without an answer before generating anything.

This follows the usual rule-based verifiable reward of RLVR work (DeepSeek-R1, DAPO, the GSM8K ``####``
convention); it is not a method from a single paper. Departure: no format reward, rewards are binary.

    curate rollout sample-math --n 8 --reward math --name math-rollouts
"""

from __future__ import annotations

import importlib
import math as _math
import re
import threading
from collections.abc import Callable
from fractions import Fraction

from curate.errors import CurateError

RewardFn = Callable[..., float]

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*", re.IGNORECASE)
_NUMBER = re.compile(
    r"-?\\[dt]?frac\s*\{\s*-?\d+\s*\}\s*\{\s*\d+\s*\}|-?\d+(?:,\d{3}(?!\d))*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|-?\.\d+"
)
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}$")
_TRAILING_UNIT = re.compile(r"^(-?[\d.,/]+)\s*(?:[A-Za-z]+\.?|%)$")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text``, nested braces included.

    >>> last_boxed(r"so \\boxed{\\frac{3}{4}} is it")
    '\\\\frac{3}{4}'
    """
    found = None
    for m in _BOXED.finditer(text):
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i]
                    break
    return found


def extract_answer(text: str) -> str | None:
    """The final answer a completion commits to, or ``None`` when it states none.

    >>> extract_answer("2 + 2 = 4, so #### 1,234"), extract_answer("The answer is 7."), extract_answer("x")
    ('1,234', '7.', None)
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
        if tail:
            return tail
    hits = list(_ANSWER_IS.finditer(text))
    if hits:
        tail = text[hits[-1].end() :].split("\n", 1)[0]
        # A sentence ends at ". " or a final "."; a decimal point is followed by a digit, so it survives.
        tail = re.split(r"\.\s", tail, maxsplit=1)[0].strip()
        if tail:
            return tail
    numbers = _NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def normalise_answer(s: str) -> str:
    """Light normalisation: ``$``, ``\\$``, thousands separators, ``\\text{}`` units, a trailing ``.`` or unit.

    >>> normalise_answer("$1,234.") , normalise_answer(r"12 \\text{ cm}"), normalise_answer("18 dollars")
    ('1234', '12', '18')
    """
    s = s.strip().replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\left", "").replace("\\right", "").strip()
    if s.startswith("\\(") and s.endswith("\\)"):
        s = s[2:-2].strip()
    # A unit in \text{} after a number is dropped; \text{} around the whole answer keeps its content.
    stripped = _TEXT.sub("", s).strip()
    s = stripped if stripped and re.search(r"\d", stripped) else _TEXT.sub(r"\1", s).strip()
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s)
    s = s.rstrip(".").strip()
    m = _TRAILING_UNIT.match(s)
    if m and not s.endswith("%"):
        s = m.group(1)
    return s.rstrip(".").strip()


def _as_number(s: str) -> Fraction | None:
    """``s`` as an exact rational when it is a plain number, ``a/b`` or ``\\frac{a}{b}``; else ``None``."""
    s = s.replace(" ", "")
    m = _FRAC.match(s)
    if m:
        sign, num, den = m.groups()
        return None if int(den) == 0 else Fraction(int(num), int(den)) * (-1 if sign else 1)
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return None if Fraction(den) == 0 else Fraction(num) / Fraction(den)
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str, gold: str) -> bool:
    """Whether two final answers are mathematically equal (numbers exactly, the rest via math-verify).

    >>> answers_match("0.5", "1/2"), answers_match(r"\\frac{1}{2}", "0.5"), answers_match("3", "4")
    (True, True, False)
    """
    p, g = normalise_answer(predicted), normalise_answer(gold)
    if not p or not g:
        return False
    pn, gn = _as_number(p), _as_number(g)
    if pn is not None and gn is not None:
        return pn == gn
    try:
        from math_verify import parse, verify

        # math-verify's timeouts use SIGALRM, which only the main thread may set.
        limit = 5 if threading.current_thread() is threading.main_thread() else None
        gold_parsed = parse(f"${g}$", parsing_timeout=limit)
        pred_parsed = parse(f"${p}$", parsing_timeout=limit)
        if gold_parsed and pred_parsed:
            return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception:  # noqa: BLE001 - a parser failure on odd text means "not verified", never a crash
        pass
    return p == g


def math_reward(completion: str, answer: str, **row) -> float:
    """1.0 if the completion's final answer equals ``answer``, else 0.0.

    >>> math_reward("so the total is \\\\boxed{\\\\frac{1}{2}}", "0.5"), math_reward("no idea", "3")
    (1.0, 0.0)
    """
    predicted = extract_answer(completion)
    if predicted is None:
        return 0.0
    return 1.0 if answers_match(predicted, str(answer)) else 0.0


def exact_reward(completion: str, answer: str, **row) -> float:
    """1.0 if the stripped completion equals the stripped answer.

    >>> exact_reward(" 42\\n", "42")
    1.0
    """
    return 1.0 if completion.strip() == str(answer).strip() else 0.0


def contains_reward(completion: str, answer: str, **row) -> float:
    """1.0 if the stripped answer occurs anywhere in the completion.

    >>> contains_reward("it is 42 apples", "42")
    1.0
    """
    return 1.0 if str(answer).strip() in completion else 0.0


for _fn in (math_reward, exact_reward, contains_reward):
    _fn.needs_answer = True  # type: ignore[attr-defined]

REWARDS: dict[str, RewardFn] = {"math": math_reward, "exact": exact_reward, "contains": contains_reward}


def needs_answer(fn: RewardFn) -> bool:
    """Whether ``fn`` reads the ``answer`` column (built-ins do; user functions opt in with ``fn.needs_answer``).

    >>> needs_answer(get_reward("math"))
    True
    """
    return bool(getattr(fn, "needs_answer", False))


def get_reward(spec: str | RewardFn) -> RewardFn:
    """A built-in reward by name, or a user function by dotted path ``package.module:function``.

    >>> get_reward("exact")("42", "42")
    1.0
    """
    if callable(spec):
        _check_signature(spec, reward_name(spec))
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise CurateError(f"--reward {spec!r}: expected a built-in name ({', '.join(REWARDS)}) or package.module:fn")
    if spec in REWARDS:
        return REWARDS[spec]
    if ":" not in spec:
        raise CurateError(
            f"--reward {spec!r}: unknown reward (built-ins: {', '.join(REWARDS)}; or a dotted path package.module:fn)"
        )
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or not re.fullmatch(r"[A-Za-z_][\w.]*", module_name):
        raise CurateError(f"--reward {spec!r}: expected a dotted path package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise CurateError(f"--reward {spec!r}: cannot import module {module_name!r} ({e})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise CurateError(f"--reward {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise CurateError(f"--reward {spec!r}: {attr!r} is not callable")
    _check_signature(fn, spec)
    return fn


def _check_signature(fn: RewardFn, spec: str) -> None:
    """Refuse, before any model loads, a function that cannot be called as ``fn(completion, answer, **row)``."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: find out when it is called
        return
    bare = sig.replace(  # the names say what is wrong; annotations would only lengthen the line
        parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()], return_annotation=sig.empty
    )
    try:
        sig.bind("completion", "answer")
    except TypeError:
        raise CurateError(
            f"--reward {spec!r}: takes {bare}, but a reward is called as fn(completion, answer, **row)"
        ) from None
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        raise CurateError(
            f"--reward {spec!r}: takes {bare} without **row, but is called with the row's columns "
            "as keywords: fn(completion, answer, **row)"
        )


def call_reward(fn: RewardFn, name: str, completion: str, answer: object, row: dict, where: str) -> float:
    """``fn(completion, answer, **row)`` as a finite float. Whatever the function raises, or a value that is not a
    finite number, becomes one ``CurateError`` line naming ``where`` (the prompt), the reward and the exception.

    >>> call_reward(get_reward("exact"), "exact", "42", "42", {}, "p0")
    1.0
    """
    try:
        value = fn(completion, answer, **row)
    except Exception as e:  # noqa: BLE001 - user code can raise anything; the row that made it is what helps
        detail = " ".join(str(e).split())
        raise CurateError(
            f"{where}: reward {name!r} raised {type(e).__name__}{': ' + detail if detail else ''}"
        ) from e
    try:
        return check_reward_value(value)
    except ValueError as e:
        raise CurateError(f"{where}: reward {name!r} {e}") from None


def reward_name(spec: str | RewardFn) -> str:
    """A stable name for the op record: the spec itself, or ``module:qualname`` for a callable."""
    if isinstance(spec, str):
        return spec
    return f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', repr(spec))}"


def reward_source(spec: str | RewardFn) -> str | None:
    """A hash of a user reward function's source, so editing it changes the version id (built-ins: None).

    >>> reward_source("math") is None
    True
    """
    import hashlib
    import inspect

    if isinstance(spec, str) and spec in REWARDS:
        return None
    fn = get_reward(spec)
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def check_reward_value(value: object) -> float:
    """``value`` as a finite float, or ``ValueError`` (NaN, inf, not a number)."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"returned {value!r}, not a number") from None
    if not _math.isfinite(out):
        raise ValueError(f"returned {out}")
    return out
