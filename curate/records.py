"""Canonical columns, and the normalisers that bring common layouts into them.

Layouts recognised (first match wins, after any explicit ``--map canonical=source`` renames):

=================  ===========================================  =========================================
layout             source fields                                canonical result
=================  ===========================================  =========================================
openai             ``messages[role, content]``                  ``messages`` (+ ``prompt`` = turns before
                                                                the last assistant turn)
sharegpt           ``conversations[from, value]`` (+``system``)  ``messages``, ``prompt``
alpaca             ``instruction``, ``input``, ``output``        ``messages``, ``prompt``
                   (+``system``, ``history``)
prompt-completion  ``prompt``, ``completion`` (text or chat)     ``messages``, ``prompt``
question-answer    ``question``, ``answer`` (GSM8K ``#### 72``)  ``prompt``, ``messages`` (full solution),
                                                                ``answer`` = final answer
prompt-only (RL)   ``prompt`` (+ ``answer``/``solution``/        ``prompt``, ``answer``
                   ``ground_truth``)
=================  ===========================================  =========================================

Every other scalar field passes through unchanged (``level``, ``category`` ...).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from curate.errors import InputError
from curate.store import canonical_json

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
CANONICAL_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "messages": MESSAGES,
    "prompt": MESSAGES,
    "answer": pa.string(),
    "data_source": pa.string(),
    "prompt_id": pa.string(),
    "sample": pa.int64(),
    "completion": pa.string(),
    "reward": pa.float64(),
    "input_ids": pa.list_(pa.int32()),
    "labels": pa.list_(pa.int32()),
    "weight": pa.float32(),
}
CANONICAL = tuple(CANONICAL_TYPES)
ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "function_call": "assistant",
}
_ANSWER_FIELDS = ("answer", "solution", "ground_truth", "label", "target")
_NUMERIC = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def final_answer(solution: str) -> str:
    """The final answer of a GSM8K-style solution: the text after the last ``####``.

    >>> final_answer("48/2 = 24 ... #### 1,072")
    '1072'
    """
    tail = solution.rsplit("####", 1)[-1].strip()
    return tail.replace(",", "") if _NUMERIC.match(tail) else tail


def prompt_of(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The turns before the last assistant turn: what a model is asked to continue."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return messages[:i]
    return list(messages)


def row_id(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(row).encode()).hexdigest()[:16]


class _Row:
    """Error context: every message names the source, the row number and the field."""

    def __init__(self, source: str, index: int, row: dict[str, Any], line: int | None = None):
        self.source, self.index, self.row, self.line = source, index, row, line

    def fail(self, field: str, msg: str) -> InputError:
        where = f"line {self.line}" if self.line is not None else f"row {self.index}"
        return InputError(f"{self.source}: {where}: field {field!r}: {msg}")

    def text(self, field: str, value: Any = None, *, allow_empty: bool = False) -> str:
        v = self.row.get(field) if value is None else value
        if v is None:
            raise self.fail(field, "missing")
        if not isinstance(v, str):
            if isinstance(v, int | float):
                v = str(v)
            else:
                raise self.fail(field, f"expected text, got {type(v).__name__}")
        if not allow_empty and not v.strip():
            raise self.fail(field, "empty")
        return v

    def chat(self, field: str, value: Any = None, *, default_role: str = "user") -> list[dict[str, str]]:
        """A chat turn list, or a plain string taken as one ``default_role`` turn."""
        v = self.row.get(field) if value is None else value
        if isinstance(v, str):
            return [{"role": default_role, "content": self.text(field, v)}]
        if not isinstance(v, list | tuple) or not v:
            raise self.fail(field, "expected a non-empty list of {role, content} messages or a string")
        out = []
        for j, m in enumerate(v):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise self.fail(f"{field}[{j}]", "expected an object with 'role' and 'content'")
            role = m["role"]
            if role not in ROLES:
                raise self.fail(f"{field}[{j}].role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
            content = m["content"]
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise self.fail(f"{field}[{j}].content", f"expected text, got {type(content).__name__}")
            out.append({"role": role, "content": content})
        return out


def detect_layout(fields: set[str], source: str | None = None) -> str:
    """The first layout (table above) whose fields are all present; ``source`` names the file in the error."""
    if "messages" in fields:
        return "openai"
    if "conversations" in fields:
        return "sharegpt"
    if "instruction" in fields and "output" in fields:
        return "alpaca"
    if "prompt" in fields and "completion" in fields:
        return "prompt-completion"
    if "question" in fields and "answer" in fields:
        return "question-answer"
    if "prompt" in fields:
        return "prompt-only"
    raise InputError(
        f"{source + ': ' if source else ''}cannot tell the layout from fields {sorted(map(str, fields))}: "
        "expected messages, conversations, "
        "instruction/output, prompt/completion, question/answer or prompt (or pass --map canonical=source)"
    )


def parse_mapping(items: Sequence[str] | None) -> dict[str, str]:
    """``["prompt=question", "answer=solution"]`` -> ``{"question": "prompt", "solution": "answer"}``."""
    out: dict[str, str] = {}
    for item in items or ():
        if not isinstance(item, str):
            raise InputError(f"--map {item!r}: expected canonical=source text")
        canon, sep, src = item.partition("=")
        if not sep or not canon or not src:
            raise InputError(f"--map {item!r}: expected canonical=source")
        if canon not in CANONICAL and canon not in (
            "question",
            "completion",
            "conversations",
            "instruction",
            "input",
            "output",
            "system",
        ):
            raise InputError(f"--map {item!r}: unknown canonical column {canon!r} (known: {', '.join(CANONICAL)})")
        out[src] = canon
    return out


def _normalise_row(r: _Row, layout: str, data_source: str) -> dict[str, Any]:
    row = r.row
    out: dict[str, Any] = {}
    consumed: set[str] = {"id", "data_source"}
    if layout == "openai":
        out["messages"] = r.chat("messages")
        consumed.add("messages")
    elif layout == "sharegpt":
        conv = row.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise r.fail("conversations", "expected a non-empty list of {from, value}")
        msgs = []
        if isinstance(row.get("system"), str) and row["system"].strip():
            msgs.append({"role": "system", "content": row["system"]})
        for j, m in enumerate(conv):
            if not isinstance(m, dict) or "from" not in m or "value" not in m:
                raise r.fail(f"conversations[{j}]", "expected an object with 'from' and 'value'")
            role = _SHAREGPT_ROLES.get(str(m["from"]).lower())
            if role is None:
                raise r.fail(f"conversations[{j}].from", f"unknown speaker {m['from']!r}")
            msgs.append({"role": role, "content": r.text(f"conversations[{j}].value", m["value"], allow_empty=True)})
        out["messages"] = msgs
        consumed |= {"conversations", "system", "tools"}
    elif layout == "alpaca":
        msgs = []
        if isinstance(row.get("system"), str) and row["system"].strip():
            msgs.append({"role": "system", "content": row["system"]})
        for j, pair in enumerate(row.get("history") or []):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise r.fail(f"history[{j}]", "expected a [query, response] pair")
            msgs += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
        instruction = r.text("instruction")
        extra = row.get("input")
        user = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": r.text("output")}]
        out["messages"] = msgs
        consumed |= {"instruction", "input", "output", "system", "history"}
    elif layout == "prompt-completion":
        prompt = r.chat("prompt")
        completion = r.chat("completion", default_role="assistant")
        out["messages"] = prompt + completion
        consumed |= {"prompt", "completion"}
    elif layout == "question-answer":
        q = r.text("question")
        solution = r.text("answer")
        out["prompt"] = [{"role": "user", "content": q}]
        out["messages"] = [{"role": "user", "content": q}, {"role": "assistant", "content": solution}]
        out["answer"] = final_answer(solution)
        consumed |= {"question", "answer"}
    elif layout == "prompt-only":
        out["prompt"] = r.chat("prompt")
        consumed.add("prompt")
    if "messages" in out:
        if not any(m["role"] == "assistant" for m in out["messages"]):
            raise r.fail("messages", "no assistant turn to train on")
        out.setdefault("prompt", prompt_of(out["messages"]))
    if "answer" not in out:
        for f in _ANSWER_FIELDS:
            if row.get(f) is not None:
                out["answer"] = r.text(f)
                consumed.add(f)
                break
    out["data_source"] = str(row["data_source"]) if row.get("data_source") is not None else data_source
    for k, v in row.items():
        if k not in consumed and k not in out:
            out[k] = v
    return out


def normalise(
    rows: Sequence[dict[str, Any]],
    *,
    source: str,
    mapping: dict[str, str] | None = None,
    data_source: str | None = None,
    lines: Sequence[int] | None = None,
    layout: str | None = None,
) -> tuple[pa.Table, str]:
    """Normalise raw rows into canonical columns; returns ``(table, layout)``.

    >>> t, layout = normalise([{"question": "2+2?", "answer": "4\\n#### 4"}], source="x.jsonl")
    >>> layout, t.column("answer").to_pylist()
    ('question-answer', ['4'])
    """
    if not rows:
        raise InputError(f"{source}: no rows")
    for i, raw in enumerate(rows):
        if not isinstance(raw, dict):
            where = f"line {lines[i]}" if lines is not None else f"row {i}"
            raise InputError(f"{source}: {where}: expected an object, got {type(raw).__name__}")
    mapping = mapping or {}
    if mapping:
        missing = [src for src in mapping if not any(src in r for r in rows[:100])]
        if missing:
            raise InputError(f"{source}: --map names source field(s) not in the data: {', '.join(missing)}")
        rows = [{mapping.get(k, k): v for k, v in r.items()} for r in rows]
    for i, raw in enumerate(rows):
        _check_values(_Row(source, i, raw, lines[i] if lines is not None else None))
    fields: set[str] = set()
    for r in rows[:1000]:
        fields |= set(r)
    layout = layout or detect_layout(fields, source)
    ds = data_source or source.rsplit("/", 1)[-1].split(".")[0]
    out = []
    for i, raw in enumerate(rows):
        line = lines[i] if lines is not None else None
        out.append(_normalise_row(_Row(source, i, raw, line), layout, ds))
    _assign_ids(out, rows, source, lines)
    return to_table(out, source=source, lines=lines), layout


#: JSON nesting a row may have. Parquet refuses to read back a schema nested past 100 levels (a list counts two),
#: so a deeper value could be committed and then never read; real data nests a handful of levels.
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_values(r: _Row) -> None:
    """Refuse what no column can hold: nesting past ``MAX_DEPTH`` and lone surrogates (JSON ``"\\ud800"``),
    which are not Unicode and cannot be written as UTF-8."""
    # (field, value, depth): errors name the row's own field; a path a hundred levels long would help no one
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in r.row.items()]
    for k in r.row:
        if isinstance(k, str) and not k.isascii() and _SURROGATE.search(k):
            raise r.fail(k, "the field name holds a lone surrogate, which is not Unicode")
    while stack:
        field, v, depth = stack.pop()
        if isinstance(v, str):
            if not v.isascii() and (m := _SURROGATE.search(v)):
                raise r.fail(field, f"text holds a lone surrogate {m.group()!r}, which is not Unicode")
        elif isinstance(v, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise r.fail(field, f"nested more than {MAX_DEPTH} levels deep")
            for k, x in v.items() if isinstance(v, dict) else enumerate(v):
                if isinstance(k, str) and not k.isascii() and _SURROGATE.search(k):
                    raise r.fail(field, f"key {k!r} holds a lone surrogate, which is not Unicode")
                stack.append((field, x, depth + 1))


def _assign_ids(out: list[dict], rows: Sequence[dict], source: str, lines: Sequence[int] | None) -> None:
    """Keep each row's own ``id``; a row without one gets a hash of its content, made unique against every id."""

    def where(i: int) -> str:
        return f"line {lines[i]}" if lines is not None else f"row {i}"

    given: dict[str, int] = {}
    for i, raw in enumerate(rows):
        v = raw.get("id")
        if v is None:
            continue
        if isinstance(v, dict | list | tuple):
            raise InputError(f"{source}: {where(i)}: field 'id': expected text or a number, got {type(v).__name__}")
        rid = str(v)
        if rid in given:
            raise InputError(f"{source}: {where(i)}: field 'id': duplicate id {rid!r} (first at {where(given[rid])})")
        given[rid] = i
    seen: dict[str, int] = {}
    for o, raw in zip(out, rows, strict=True):
        if raw.get("id") is not None:
            o["id"] = str(raw["id"])
            continue
        base = row_id({k: v for k, v in o.items() if k in ("messages", "prompt", "answer")})
        n = seen.get(base, 0)
        rid = base if n == 0 else f"{base}-{n}"
        # A given id may look like a hash (or a hash-n): step past it rather than collide.
        while rid in given:
            n += 1
            rid = f"{base}-{n}"
        seen[base] = n + 1
        o["id"] = rid


def to_table(rows: list[dict[str, Any]], *, source: str = "rows", lines: Sequence[int] | None = None) -> pa.Table:
    """Rows -> Arrow with canonical columns typed and ordered first; extra columns inferred.

    A canonical column holding a wrong-typed value is an ``InputError`` naming the row (``lines[i]`` when given)
    and the field. An extra column that Arrow cannot type as one column (mixed types, an empty object ``{}``
    Parquet cannot write, nesting deeper than Parquet reads back) is kept as JSON text.

    >>> to_table([{"id": "a", "meta": {}}]).column("meta").to_pylist()
    ['{}']
    """
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    ordered = [c for c in CANONICAL if c in names] + [c for c in names if c not in CANONICAL_TYPES]
    arrays, fields = [], []
    for c in ordered:
        values = [r.get(c) for r in rows]
        typ = CANONICAL_TYPES.get(c)
        try:
            arr = pa.array(values, type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
            if typ is not None or isinstance(e, OverflowError | UnicodeEncodeError):
                raise _bad_value(values, typ, c, source, lines) from None
            arr = _as_json_text(values)
        if typ is None and not _parquet_safe(arr.type):
            arr = _as_json_text(values)
        arrays.append(arr)
        fields.append(pa.field(c, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _as_json_text(values: list[Any]) -> pa.Array:
    # A pass-through field of mixed or unwritable types: keep it, as text, rather than refuse the import.
    return pa.array(
        [None if v is None else canonical_json(v) if not isinstance(v, str) else v for v in values], type=pa.string()
    )


def _parquet_safe(t: pa.DataType, depth: int = 0) -> bool:
    """Whether Parquet can write ``t`` and read it back: no struct without fields, nesting within its limits."""
    if depth > 40:  # Parquet reads schemas of at most 100 levels; a list takes two, canonical columns a few
        return False
    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(_parquet_safe(t.field(i).type, depth + 1) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _parquet_safe(t.value_type, depth + 2)
    if pa.types.is_map(t):
        return _parquet_safe(t.key_type, depth + 2) and _parquet_safe(t.item_type, depth + 2)
    return True


_EXPECTED = {
    "string": "text",
    "double": "a number",
    "float": "a number",
    "int64": "an integer",
    "list<item: int32>": "a list of 32-bit integers",
}


def _bad_value(values: list[Any], typ: pa.DataType | None, field: str, source: str, lines: Sequence[int] | None):
    """The error for the first value of ``field`` that cannot be stored, naming its row."""
    for i, v in enumerate(values):
        where = f"line {lines[i]}" if lines is not None else f"row {i}"
        if _has_big_int(v):
            return InputError(f"{source}: {where}: field {field!r}: an integer too large for 64 bits (quote it)")
        try:
            pa.array([v], type=typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
            if isinstance(e, UnicodeEncodeError):
                why = "text holds a lone surrogate, which is not Unicode"
            else:
                shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
                expected = _EXPECTED.get(str(typ), "messages: a list of {role, content}" if typ == MESSAGES else typ)
                why = f"expected {expected}, got {type(v).__name__} {shown}"
            return InputError(f"{source}: {where}: field {field!r}: {why}")
    return InputError(f"{source}: field {field!r}: values of mixed types that cannot form one column")


def _has_big_int(v: Any) -> bool:
    """Whether ``v`` holds an integer outside int64 anywhere inside it."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, int) and not isinstance(x, bool) and not -(2**63) <= x < 2**63:
            return True
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
    return False
