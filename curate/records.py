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
input-output       ``input`` (text or chat), ``output``          ``messages``, ``prompt``
                   (OpenRLHF SFT's ``--input_key``/``--output_key``)
=================  ===========================================  =========================================

Every other scalar field passes through unchanged (``level``, ``category`` ...). A pass-through column that is
null in every row (a JSONL export writes a NaN score as null) is typed float64 when its name says it holds scores
(``score``, ``*_score``, ``pass_rate``, ``learnability``, ``margin``), as it was before the export, not null.

``normalise_stream`` does the same for a source read in chunks (a JSONL file): every chunk is checked and
normalised as it comes, kept as Arrow in a temporary spill, and the chunks are typed as one table would be (a
column that is whole numbers in one chunk and decimals in another is float64 in all), so the result, the row ids
and the errors are those of ``normalise`` on the whole file, in memory that does not grow with it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
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


try:  # optional: the same bytes as canonical_json for the text-only rows content ids hash, several times faster
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


def row_id(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(row).encode()).hexdigest()[:16]


_CONTENT = ("messages", "prompt", "answer")


def _content_id(row: dict[str, Any]) -> str:
    """``row_id`` of a normalised row's messages, prompt and answer (text only, so orjson writes the same JSON)."""
    if orjson is None:
        return row_id(row)
    return hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class Chunk:
    """Raw rows read together: ``lines`` their source lines (None: errors name row numbers), ``full`` the rows
    that may fail the value check (nesting, lone surrogates) and so are walked in full (None: every row), and
    ``source`` the file errors name, where it is not the source imported (one of a folder's files)."""

    rows: list[dict[str, Any]]
    lines: list[int] | None = None
    full: list[int] | None = None
    source: str | None = None


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
        # The common case, turns that are already plain {role, content} text, is kept as it is; any other goes
        # through the checks below, which copy each turn and name what is wrong.
        if type(v) is list and v:
            for m in v:
                if not (type(m) is dict and len(m) == 2 and type(m.get("content")) is str and m.get("role") in ROLES):
                    break
            else:
                return v
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
    # last, so that no file an earlier layout took changes meaning
    if "input" in fields and "output" in fields:
        return "input-output"
    raise InputError(
        f"{source + ': ' if source else ''}cannot tell the layout from fields {sorted(map(str, fields))}: "
        "expected messages, conversations, instruction/output, prompt/completion, question/answer, prompt "
        "or input/output (or pass --map canonical=source)"
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


def _normalise_row(r: _Row, layout: str, data_source: str, forced: bool = False) -> dict[str, Any]:
    """One raw row in canonical fields; ``forced``: ``data_source`` replaces the row's own."""
    row = r.row
    out: dict[str, Any] = {}
    consumed = _CONSUMED.get(layout, _KEPT)
    if layout == "openai":
        out["messages"] = r.chat("messages")
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
    elif layout == "prompt-completion":
        prompt = r.chat("prompt")
        completion = r.chat("completion", default_role="assistant")
        out["messages"] = prompt + completion
    elif layout == "question-answer":
        q = r.text("question")
        solution = r.text("answer")
        out["prompt"] = [{"role": "user", "content": q}]
        out["messages"] = [{"role": "user", "content": q}, {"role": "assistant", "content": solution}]
        out["answer"] = final_answer(solution)
    elif layout == "prompt-only":
        out["prompt"] = r.chat("prompt")
    elif layout == "input-output":
        out["messages"] = r.chat("input") + r.chat("output", default_role="assistant")
    # (plain loops rather than any() and generators: this runs once per row of every import)
    if "messages" in out:
        msgs = out["messages"]
        for m in msgs:
            if m["role"] == "assistant":
                break
        else:
            raise r.fail("messages", "no assistant turn to train on")
        if "prompt" not in out:
            out["prompt"] = prompt_of(msgs)
    taken = None
    if "answer" not in out:
        for f in _ANSWER_FIELDS:
            if row.get(f) is not None:
                out["answer"] = r.text(f)
                taken = f
                break
    ds = row.get("data_source") if not forced else None
    out["data_source"] = str(ds) if ds is not None else data_source
    for k, v in row.items():
        if k not in out and k not in consumed and k != taken:
            out[k] = v
    return out


# The source fields each layout turns into canonical ones (not passed through as they are).
_KEPT = frozenset({"id", "data_source"})
_CONSUMED = {
    "openai": frozenset({"id", "data_source", "messages"}),
    "sharegpt": frozenset({"id", "data_source", "conversations", "system", "tools"}),
    "alpaca": frozenset({"id", "data_source", "instruction", "input", "output", "system", "history"}),
    "prompt-completion": frozenset({"id", "data_source", "prompt", "completion"}),
    "question-answer": frozenset({"id", "data_source", "question", "answer"}),
    "prompt-only": frozenset({"id", "data_source", "prompt"}),
    "input-output": frozenset({"id", "data_source", "input", "output"}),
}


def normalise(
    rows: Sequence[dict[str, Any]],
    *,
    source: str,
    mapping: dict[str, str] | None = None,
    data_source: str | None = None,
    lines: Sequence[int] | None = None,
    layout: str | None = None,
    set_data_source: str | None = None,
) -> tuple[pa.Table, str]:
    """Normalise raw rows into canonical columns; returns ``(table, layout)``.

    ``data_source`` is what a row without one gets (default: the file's stem); ``set_data_source`` replaces
    every row's own (``curate import --data-source``).

    >>> t, layout = normalise([{"question": "2+2?", "answer": "4\\n#### 4"}], source="x.jsonl")
    >>> layout, t.column("answer").to_pylist()
    ('question-answer', ['4'])
    """
    if not rows:
        raise InputError(f"{source}: no rows")
    chunk = Chunk(list(rows), list(lines) if lines is not None else None)
    n = _Normaliser(source, mapping, set_data_source or data_source, layout, forced=set_data_source is not None)
    with _gc_paused():
        table, _ = n.table(chunk)
    return _null_scores(table), n.layout


def normalise_stream(
    chunks: Callable[[], Iterator[Chunk]],
    *,
    source: str,
    mapping: dict[str, str] | None = None,
    data_source: str | None = None,
    layout: str | None = None,
    set_data_source: str | None = None,
) -> tuple[pa.Table | Iterable[pa.Table], str, int]:
    """``normalise`` for a source read in chunks; returns ``(tables, layout, rows)``.

    Every row is read, checked and normalised before this returns, so every error is raised here. ``tables`` is
    one table for a source of one chunk, else an iterable that reads the chunks back from a temporary spill,
    typed alike (``chunks`` is called again, to read the source a second time, only when a column's type can
    only be settled from the raw values: one that is text in one chunk and numbers in another becomes JSON text).
    """
    with _gc_paused():
        return _normalise_stream(chunks, source, mapping, data_source, layout, set_data_source)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: parsed rows are millions of fresh dicts and lists, none in a cycle,
    and the collector walking them over and over cost a fifth of an import's time."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _normalise_stream(
    chunks: Callable[[], Iterator[Chunk]],
    source: str,
    mapping: dict[str, str] | None,
    data_source: str | None,
    layout: str | None,
    set_data_source: str | None,
) -> tuple[pa.Table | Iterable[pa.Table], str, int]:
    forced = set_data_source is not None
    data_source = set_data_source or data_source
    n = _Normaliser(source, mapping, data_source, layout, forced=forced)
    it = _at_least(chunks(), 1000)
    first = next(it, None)
    if first is None:
        raise InputError(f"{source}: no rows")
    table, info = n.table(first)
    second = next(it, None)
    if second is None:
        return _null_scores(table), n.layout, table.num_rows
    spill = _Spill()
    infos, rows = [], 0
    for chunk in _chained(second, it, first=(table, info)):
        t, info = chunk if isinstance(chunk, tuple) else n.table(chunk)
        spill.add(t)
        infos.append(info)
        rows += t.num_rows
    fields, redo = _plan(infos)
    if redo or n.conflict:
        spill.close()
        # A later given id equal to an earlier hashed one, or a column the spill holds in the wrong form: read
        # the source again knowing every given id and every column's final type.
        again = _Normaliser(source, mapping, data_source, n.layout, forced=forced, given=set(n.given))
        return _redo(again, chunks, fields), n.layout, rows
    return spill.read(fields), n.layout, rows


def _at_least(chunks: Iterator[Chunk], rows: int) -> Iterator[Chunk]:
    """The chunks, the first merged with the next ones until it holds ``rows`` rows (the layout is told from
    the first 1,000 rows)."""
    head: Chunk | None = None
    for c in chunks:
        if head is None:
            head = c
        elif len(head.rows) < rows:
            full = None if head.full is None or c.full is None else [*head.full, *(len(head.rows) + i for i in c.full)]
            lines = None if head.lines is None or c.lines is None else [*head.lines, *c.lines]
            if c.source != head.source:  # rows of two files: their lines would be ambiguous in an error
                yield head
                head = c
                continue
            head = Chunk([*head.rows, *c.rows], lines, full, head.source)
        else:
            yield head
            head = c
            continue
        if len(head.rows) >= rows:
            yield head
            head = None
    if head is not None:
        yield head


def _chained(second: Chunk, rest: Iterator[Chunk], *, first: Any) -> Iterator[Any]:
    yield first
    yield second
    yield from rest


def _redo(n: _Normaliser, chunks: Callable[[], Iterator[Chunk]], fields: list[pa.Field]) -> Iterator[pa.Table]:
    types = {f.name: f.type for f in fields}
    for chunk in _at_least(chunks(), 1000):
        with _gc_paused():
            t, _ = n.table(chunk, types=types)
        yield _conform(t, fields)


class _Spill:
    """Chunk tables kept as uncompressed Arrow files in a temporary folder, read back one at a time."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="curate-import-")
        self._paths: list[Path] = []

    def add(self, table: pa.Table) -> None:
        path = Path(self._dir.name) / f"{len(self._paths):06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        self._paths.append(path)

    def read(self, fields: list[pa.Field]) -> Iterator[pa.Table]:
        try:
            for path in self._paths:
                with pa.memory_map(str(path)) as src:
                    table = pa.ipc.open_file(src).read_all()
                    # copied out of the map by _conform's combine, so the file can go at once
                    yield _conform(table, fields)
                path.unlink()
        finally:
            self.close()

    def close(self) -> None:
        self._dir.cleanup()


class _Normaliser:
    """Normalises chunk after chunk, carrying what spans them: the layout, the ids given and hashed so far."""

    def __init__(
        self,
        source: str,
        mapping: dict[str, str] | None,
        data_source: str | None,
        layout: str | None,
        *,
        forced: bool = False,
        given: set[str] | None = None,
    ):
        self.source, self.mapping, self.layout, self.forced = source, mapping or {}, layout, forced
        self.ds = data_source or source.rsplit("/", 1)[-1].split(".")[0]
        self.given: dict[str, str] = {}  # id -> where it was first given
        self.seen: dict[str, int] = {}  # content hash -> how many rows had it
        self.suffixed: set[str] = set()  # hashed ids given a "-n" suffix
        self.all_given = given or set()  # every given id of the source, when a first reading found them
        self.conflict = False  # a given id equal to an id hashed before it: only a second reading gets it right
        self.first = True

    def table(
        self, chunk: Chunk, *, types: dict[str, pa.DataType] | None = None
    ) -> tuple[pa.Table, dict[str, pa.DataType | None]]:
        rows, lines, source = chunk.rows, chunk.lines, chunk.source or self.source
        for i, raw in enumerate(rows) if set(map(type, rows)) != {dict} else ():
            if not isinstance(raw, dict):
                where = f"line {lines[i]}" if lines is not None else f"row {i}"
                raise InputError(f"{source}: {where}: expected an object, got {type(raw).__name__}")
        mapping = self.mapping
        if mapping:
            if self.first:
                missing = [src for src in mapping if not any(src in r for r in rows[:100])]
                if missing:
                    raise InputError(f"{source}: --map names source field(s) not in the data: {', '.join(missing)}")
            rows = [{mapping.get(k, k): v for k, v in r.items()} for r in rows]
        for i in range(len(rows)) if chunk.full is None else chunk.full:
            _check_values(_Row(source, i, rows[i], lines[i] if lines is not None else None))
        if self.layout is None:
            fields: set[str] = set()
            for r in rows[:1000]:
                fields |= set(r)
            self.layout = detect_layout(fields, source)
        self.first = False
        layout, ds, forced = self.layout, self.ds, self.forced
        if lines is None:
            out = [_normalise_row(_Row(source, i, raw, None), layout, ds, forced) for i, raw in enumerate(rows)]
        else:
            pairs = enumerate(zip(rows, lines, strict=True))
            out = [_normalise_row(_Row(source, i, raw, ln), layout, ds, forced) for i, (raw, ln) in pairs]
        self._assign_ids(out, rows, lines, source)
        return _typed_table(out, source=source, lines=lines, types=types)

    def _assign_ids(self, out: list[dict], rows: Sequence[dict], lines: Sequence[int] | None, source: str) -> None:
        """Keep each row's own ``id``; a row without one gets a hash of its content, made unique against every
        id (the ids hashed in earlier chunks, and the ones given anywhere in the source)."""
        given, seen = self.given, self.seen

        def where(i: int) -> str:
            return f"line {lines[i]}" if lines is not None else f"row {i}"

        for i, raw in enumerate(rows):
            v = raw.get("id")
            if v is None:
                continue
            if isinstance(v, dict | list | tuple):
                raise InputError(
                    f"{source}: {where(i)}: field 'id': expected text or a number, got {type(v).__name__}"
                )
            rid = str(v)
            if rid in given:
                raise InputError(f"{source}: {where(i)}: field 'id': duplicate id {rid!r} (first at {given[rid]})")
            if rid not in self.all_given and (rid in seen or rid in self.suffixed):
                self.conflict = True
            given[rid] = where(i)
        for o, raw in zip(out, rows, strict=True):
            if raw.get("id") is not None:
                o["id"] = str(raw["id"])
                continue
            base = _content_id({k: o[k] for k in _CONTENT if k in o})
            n = seen.get(base, 0)
            rid = base if n == 0 else f"{base}-{n}"
            # A given id may look like a hash (or a hash-n): step past it rather than collide.
            while rid in given or rid in self.all_given:
                n += 1
                rid = f"{base}-{n}"
            seen[base] = n + 1
            if rid != base:
                self.suffixed.add(rid)
            o["id"] = rid


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


def to_table(rows: list[dict[str, Any]], *, source: str = "rows", lines: Sequence[int] | None = None) -> pa.Table:
    """Rows -> Arrow with canonical columns typed and ordered first; extra columns inferred.

    A canonical column holding a wrong-typed value is an ``InputError`` naming the row (``lines[i]`` when given)
    and the field. An extra column that Arrow cannot type as one column (mixed types, an empty object ``{}``
    Parquet cannot write, nesting deeper than Parquet reads back) is kept as JSON text.

    >>> to_table([{"id": "a", "meta": {}}]).column("meta").to_pylist()
    ['{}']
    """
    return _typed_table(rows, source=source, lines=lines)[0]


def _typed_table(
    rows: list[dict[str, Any]],
    *,
    source: str,
    lines: Sequence[int] | None,
    types: dict[str, pa.DataType] | None = None,
) -> tuple[pa.Table, dict[str, pa.DataType | None]]:
    """``to_table``, and the type Arrow inferred for each extra column (None: it could not type it).

    ``types`` (a streamed source read a second time) gives each extra column its final type: JSON text (string)
    or the type the whole source inferred."""
    names = dict.fromkeys(itertools.chain.from_iterable(rows))  # every key, in order of first appearance
    ordered = [c for c in CANONICAL if c in names] + [c for c in names if c not in CANONICAL_TYPES]
    arrays, fields, inferred = [], [], {}
    for c in ordered:
        values = [r.get(c) for r in rows]
        typ = CANONICAL_TYPES.get(c)
        if typ is None and types is not None:
            # the second reading: every value already went through the checks below once
            t = types[c]
            arr = _as_json_text(values) if t == pa.string() else pa.array(values, type=t)
        else:
            try:
                arr = pa.array(values, type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as e:
                if typ is not None or isinstance(e, OverflowError | UnicodeEncodeError):
                    raise _bad_value(values, typ, c, source, lines) from None
                arr = _as_json_text(values)
                inferred[c] = None
            else:
                inferred[c] = arr.type
                if typ is None and not _parquet_safe(arr.type):
                    arr = _as_json_text(values)
        arrays.append(arr)
        fields.append(pa.field(c, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)), inferred


def _merge_type(a: pa.DataType | None, b: pa.DataType | None) -> pa.DataType | None:
    """The type Arrow infers for values of type ``a`` followed by values of type ``b``; None where it cannot
    type them as one column (numbers and text, a list and a scalar, ...)."""
    if a is None or b is None:
        return None
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if {a, b} == {pa.int64(), pa.float64()}:
        return pa.float64()
    if pa.types.is_list(a) and pa.types.is_list(b):
        item = _merge_type(a.value_type, b.value_type)
        return None if item is None else pa.list_(item)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        merged = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            f = b.field(i)
            merged[f.name] = _merge_type(merged[f.name], f.type) if f.name in merged else f.type
            if merged[f.name] is None:
                return None
        return pa.struct(list(merged.items()))
    return None


def _plan(infos: list[dict[str, pa.DataType | None]]) -> tuple[list[pa.Field], bool]:
    """The columns of the whole from each chunk's inferred types, and whether a chunk holds a column in a form
    it cannot be converted from (JSON text where the whole is typed, typed values where the whole is JSON)."""
    extra: dict[str, list[pa.DataType | None]] = {}
    canonical: set[str] = set()
    for info in infos:
        for c, t in info.items():
            if c in CANONICAL_TYPES:
                canonical.add(c)
            else:
                extra.setdefault(c, []).append(t)
    fields = [pa.field(c, CANONICAL_TYPES[c]) for c in CANONICAL if c in canonical]
    redo = False
    for c, ts in extra.items():
        whole = reduce(_merge_type, ts)
        as_json = whole is None or not _parquet_safe(whole)
        for t in ts:
            if t is None or pa.types.is_null(t):
                continue
            held_json = not _parquet_safe(t)
            if as_json and not held_json and t != pa.string():
                redo = True  # typed values where the whole is JSON text
            if not as_json and held_json:
                redo = True  # JSON text where the whole is typed
        if not as_json and pa.types.is_null(whole) and _SCORE_NAME.search(c):
            whole = pa.float64()
        fields.append(pa.field(c, pa.string() if as_json else whole))
    return fields, redo


#: pass-through columns that hold scores: null in every row (a NaN score, as JSON writes it) means float64
_SCORE_NAME = re.compile(r"(?:^|_)score$|^(?:pass_rate|learnability|margin)$")


def _null_scores(table: pa.Table) -> pa.Table:
    """``table`` with every score column that is null throughout (type null) typed float64."""
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type) and f.name not in CANONICAL_TYPES and _SCORE_NAME.search(f.name):
            table = table.set_column(i, pa.field(f.name, pa.float64()), pa.nulls(table.num_rows, pa.float64()))
    return table


def _conform(table: pa.Table, fields: list[pa.Field]) -> pa.Table:
    """A chunk's table with the whole's columns, in its order and types (a column it lacks is all null)."""
    n, arrays = table.num_rows, []
    for f in fields:
        if f.name not in table.column_names:
            arrays.append(pa.nulls(n, f.type))
            continue
        col = table.column(f.name).combine_chunks()
        if col.type == f.type:
            arrays.append(col)
        elif pa.types.is_null(col.type):
            arrays.append(pa.nulls(n, f.type))
        else:  # a narrower type of the same values (whole numbers of a float column, a struct with fewer fields)
            arrays.append(pa.array(col.to_pylist(), type=f.type))
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
