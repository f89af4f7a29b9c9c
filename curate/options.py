"""The one place that turns a config into options: CLI flags, help rows, recipe keys, ``--set`` values and checks.

A *target* is a config dataclass (``RolloutConfig``: each field, with the docstring under it), a class (a
selector: its ``__init__`` parameters) or a function (``ops.import_data``: its keyword parameters). Every caller
reads the same ``params_of(target)``, so the CLI, the recipes and the Python API accept exactly the same names and
types, and a misspelled one is refused the same way everywhere, before anything runs.

    >>> from curate.rollouts import RolloutConfig                                  # doctest: +SKIP
    >>> parse_flags(["--n", "4", "--no-drop-zero-variance"], RolloutConfig, what="rollout")   # doctest: +SKIP
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import difflib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curate.errors import CurateError

#: parameters a target's signature has that are never options: the input, where it goes, the store
NOT_OPTIONS = frozenset({"self", "ref", "version", "source", "which", "store", "name"})
_NO_DEFAULT = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One option of a target: its name, type, default (``empty`` when required) and its doc line."""

    name: str
    annotation: Any
    default: Any
    doc: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_bool(self) -> bool:
        ann = self.annotation
        return ann is bool or (_is_union(ann) and bool in typing.get_args(ann))

    @property
    def is_sequence(self) -> bool:
        return any(typing.get_origin(a) in (tuple, list, collections.abc.Sequence) for a in _members(self.annotation))


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _members(ann: Any) -> tuple[Any, ...]:
    return typing.get_args(ann) if _is_union(ann) else (ann,)


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: names are still checked, types not
        return {}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass, first paragraph, on one line."""
    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    except (OSError, TypeError, IndexError, AttributeError, SyntaxError):
        return {}
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split("\n\n")[0].split())
    return docs


_ARGS_HEAD = re.compile(r"(Args|Arguments|Parameters):")
_ARG_LINE = re.compile(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)")


def _args_section(doc: str | None) -> dict[str, str]:
    """``name: what it does`` entries of a docstring's ``Args:`` section, continuation lines joined."""
    lines = inspect.cleandoc(doc or "").splitlines()
    docs: dict[str, str] = {}
    i = 0
    while i < len(lines):
        head = lines[i]
        i += 1
        if not _ARGS_HEAD.fullmatch(head.strip()):
            continue
        base = len(head) - len(head.lstrip())
        entry_indent, name = None, None
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= base:
                break  # the section ends where the text comes back to the header's indentation
            i += 1
            if not line.strip():
                continue
            entry_indent = indent if entry_indent is None else entry_indent
            m = _ARG_LINE.fullmatch(line.strip()) if indent == entry_indent else None
            if m:
                name = m.group(1)
                docs[name] = m.group(2).strip()
            elif name is not None:
                docs[name] = f"{docs[name]} {line.strip()}".strip()
    return docs


def arg_docs(target: Any) -> dict[str, str]:
    """What each option of a class or function does, from the ``Args:`` section of its docstring.

    A class's own docstring, then its ``__init__``'s, then those of its bases: a base class documents the options
    its subclasses share once (``Selector``: ``budget``, ``fraction``, ...), and a subclass's entry wins.

    >>> arg_docs(RandomSelector)["seed"]                                                   # doctest: +SKIP
    'Seed of the uniform draws: the same seed keeps the same rows.'
    """
    sources = [c for k in target.__mro__ for c in (k, k.__dict__.get("__init__"))] if inspect.isclass(target) else []
    docs: dict[str, str] = {}
    for src in sources or [target]:
        for k, v in _args_section(getattr(src, "__doc__", None)).items():
            docs.setdefault(k, v)
    return docs


def params_of(target: Any) -> list[Param]:
    """The options of ``target`` in declaration order (``None``: a step that takes none; a tuple: each one's)."""
    if target is None:
        return []
    if isinstance(target, tuple):
        return [p for t in target for p in params_of(t)]
    if dataclasses.is_dataclass(target):
        hints, docs = _hints(target), field_docs(target)  # type: ignore[arg-type]
        out = []
        for f in dataclasses.fields(target):
            if f.name in nested(target):  # a shared group (the engine settings): its fields are options themselves
                out += params_of(nested(target)[f.name])
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = _NO_DEFAULT
            out.append(Param(f.name, hints.get(f.name, Any), default, docs.get(f.name, "")))
        return out
    fn = target.__init__ if inspect.isclass(target) else target
    hints, docs = _hints(fn), arg_docs(target)
    return [
        Param(n, hints.get(n, Any), p.default, docs.get(n, ""))
        for n, p in inspect.signature(target).parameters.items()
        if n not in NOT_OPTIONS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def nested(cls: Any) -> dict[str, type]:
    """The fields of config dataclass ``cls`` that hold another config dataclass (e.g. ``run: Engine``)."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        return {}
    hints = _hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if isinstance(hints.get(f.name), type) and dataclasses.is_dataclass(hints[f.name])
    }


def build(cls: type, params: dict[str, Any], base: Any = None) -> Any:
    """``cls`` (or ``base`` with changes) from flat options: ``{"n": 4, "engine": "ray"}`` -> ``RolloutConfig(n=4,
    run=Engine("ray"))``. The shared groups' fields are named flat everywhere (flags, recipe keys, keywords)."""
    groups = nested(cls)
    top = {k: v for k, v in params.items() if not any(k in _names(g) for g in groups.values())}
    for name, group in groups.items():
        own = {k: v for k, v in params.items() if k in _names(group)}
        if own:
            inner = getattr(base, name) if base is not None else group()
            top[name] = dataclasses.replace(inner, **own)
    if base is not None:
        return dataclasses.replace(base, **top) if top else base
    return cls(**top)


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# ------------------------------------------------------------------------------------------ the command line
def _coerce(value: str | None, annotation: Any, flag: str) -> Any:
    """A command-line string as ``annotation`` says (``"4"`` -> 4, ``"a,b"`` -> ("a", "b"), ``"none"`` -> None)."""
    origin = typing.get_origin(annotation)
    if _is_union(annotation):
        if value is None or value.lower() in ("none", "null"):
            return None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(value, args[0], flag)
    if annotation is bool:
        return True if value is None else value.lower() in ("1", "true", "yes", "on")
    if value is None:
        raise CurateError(f"{flag} needs a value")
    try:
        if origin in (tuple, list, collections.abc.Sequence):
            args = typing.get_args(annotation)
            inner = args[0] if args else str
            return tuple(_coerce(p, inner, flag) for p in value.split(",") if p != "")
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
    except ValueError:
        raise CurateError(f"{flag}: cannot read {value!r} as {getattr(annotation, '__name__', annotation)}") from None
    return value


def parse_flags(
    argv: Sequence[str], target: Any, *, what: str, aliases: dict[str, str] | None = None
) -> dict[str, Any]:
    """``["--keep-per-prompt", "4", "--no-drop-zero-variance"]`` -> keyword arguments typed by ``target``.

    A sequence option may be given once as ``a,b`` or repeated (``--map a=x --map b=y``); ``aliases`` maps a
    flag's spelling to a parameter (``{"eval": "eval_ref"}``).
    """
    params = {p.name: p for p in params_of(target)}
    aliases = aliases or {}
    kwargs: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise CurateError(f"unexpected argument {tok!r}")
        key, eq, inline = tok[2:].partition("=")
        field = aliases.get(key, key.replace("-", "_"))
        negate = field not in params and field.startswith("no_") and field[3:] in params
        if negate:
            field = field[3:]
        if field not in params:
            known = ", ".join(p.flag for p in params.values())
            hint = did_you_mean(f"--{key}", [p.flag for p in params.values()])
            raise CurateError(f"{what}: unknown option --{key} (options: {known or 'none'}){hint}")
        p = params[field]
        if negate:
            kwargs[field] = False
        elif p.is_bool and not eq and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
            kwargs[field] = True
        else:
            if not eq:
                if i + 1 >= len(argv):
                    raise CurateError(f"--{key} needs a value")
                inline = argv[i + 1]
                i += 1
            value = _coerce(inline, p.annotation, f"--{key}")
            if p.is_sequence and isinstance(kwargs.get(field), tuple) and isinstance(value, tuple):
                value = kwargs[field] + value  # a repeated flag adds to the list
            kwargs[field] = value
        i += 1
    return kwargs


def help_rows(target: Any) -> list[tuple[str, str, str, str]]:
    """``(flag, type, default, doc)`` per option, defaults as typed on the command line."""
    rows = []
    for p in params_of(target):
        if p.default is _NO_DEFAULT:
            default = "required"
        elif isinstance(p.default, tuple):
            default = ",".join(map(str, p.default))
        else:
            default = repr(p.default)
        rows.append((p.flag, _type_name(p.annotation), default, p.doc.replace("``", "")))
    return rows


def _type_name(t: Any) -> str:
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.", "")


# ------------------------------------------------------------------------------------------ recipes and --set
class YAMLLoader(yaml.SafeLoader):
    """YAML without aliases: a few lines of ``&a [*b, *b, ...]`` expand to billions of nodes ("billion laughs"),
    and a recipe has no need to repeat a value other than through ``vars``."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} (recipes take no aliases; use vars and ${{var}})", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YAMLLoader)  # noqa: S506 - a SafeLoader subclass


def parse_scalar(text: str) -> Any:
    """A ``--set`` value as YAML reads it (``3`` -> 3, ``true`` -> True), else the text as given."""
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text  # not a YAML scalar ("a: b: c"): the text as given
    return text if value is None and text.lower() not in ("null", "~", "none") else value


def check_params(params: dict[str, Any], target: Any, where: str) -> dict[str, Any]:
    """Refuse unknown names and values of the wrong type; lists and ``"lo,hi"`` text become tuples where the
    target says tuple. Returns the parameters to call the target with."""
    known = {p.name: p for p in params_of(target)}
    if unknown := sorted(set(params) - set(known)):
        accepted = ", ".join(sorted(known)) or "none"
        hint = did_you_mean(unknown[0], known)
        raise CurateError(f"{where}: unknown parameter(s) {', '.join(unknown)} (accepted: {accepted}){hint}")
    out = {}
    for k, v in params.items():
        ann = known[k].annotation
        if known[k].is_sequence and isinstance(v, str):
            v = tuple(parse_scalar(x) for x in v.split(","))
        elif known[k].is_sequence and isinstance(v, list):
            v = tuple(v)
        check_type(k, v, ann, where)
        out[k] = v
    return out


def did_you_mean(word: str, choices: Any) -> str:
    """``"; did you mean 'budget'?"`` when one of ``choices`` is close to ``word`` (a typo), else ``""``."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_type(key: str, value: Any, ann: Any, where: str) -> None:
    """Refuse ``value`` when it cannot be ``ann`` (``n: many``, a list where a mapping belongs), naming ``key``."""
    if not accepts(ann, value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CurateError(f"{where}: {key}: expected {describe(ann)}, got {type(value).__name__} {shown}")


def accepts(ann: Any, value: Any) -> bool:
    """Whether ``value`` (as YAML gives it) fits annotation ``ann``; an annotation it cannot judge accepts."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is Any:
        return True
    if _is_union(ann):
        return any(accepts(a, value) for a in args)
    if ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ann is str or ann is Path:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(accepts(args[0], x) for x in value)
        return not args or (len(args) == len(value) and all(accepts(a, x) for a, x in zip(args, value, strict=True)))
    if origin in (list, collections.abc.Sequence):
        return isinstance(value, list | tuple) and (not args or all(accepts(args[0], x) for x in value))
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (
            len(args) != 2 or all(accepts(args[0], k) and accepts(args[1], v) for k, v in value.items())
        )
    if isinstance(ann, type) and ann.__module__ == "builtins":
        return isinstance(value, ann)
    return True  # a Version, a callable: YAML names them in text, and the op checks the name


def describe(ann: Any) -> str:
    """An annotation in words: ``int | None`` -> "an integer or null"."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if _is_union(ann):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "text", Path: "text", type(None): "null"}
    if ann in names:
        return names[ann]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(describe(a) for a in args)})"
    if origin in (tuple, list, collections.abc.Sequence) or ann in (list, tuple):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or ann is dict:
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    return getattr(ann, "__name__", str(ann))
