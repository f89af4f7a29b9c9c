"""Run a YAML recipe step by step: ``curate run pipelines/NAME.yaml [--set key=value ...]``.

A recipe is a list of steps; each step is one op with the same parameters as its CLI command::

    vars: {model: smollm2-135m, budget: 20}
    steps:
      - sample: {which: sample-sft, n: 60}
      - select: {method: fisher, budget: ${budget}, model: ${model}, name: sft-fisher}
      - train:  {kind: sft, model: ${model}, max_steps: 2, out: runs/sft-fisher}
      - export: {format: trl-sft, out: out/sft-fisher}

A step's input ``ref`` defaults to the previous step's output. Every data step is a store op whose version id
hashes its recipe, so a re-run finds each finished step in the store and skips it; an interrupted step
resumes from its per-row cache. A ``train`` step is skipped when its output folder already holds a finished
run of the same config on the same dataset version. ``--set`` overrides a var (``budget=10``) or a step
parameter (``select.budget=10`` sets it on every select step, ``steps.1.budget=10`` on the second step).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curate.errors import CurateError
from curate.store import Store, Version

STEP_KINDS = ("import", "sample", "select", "rollout", "synth", "train", "export")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class StepResult:
    index: int
    kind: str
    output: str  # a ref or an output path
    skipped: bool  # True when the store (or the run folder) already had the result
    seconds: float


class _RecipeLoader(yaml.SafeLoader):
    """YAML without aliases: a few lines of ``&a [*b, *b, ...]`` expand to billions of nodes ("billion laughs"),
    and a recipe has no need to repeat a value other than through ``vars``."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} (recipes take no aliases; use vars and ${{var}})", event.start_mark
            )
        return super().compose_node(parent, index)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_error(e: yaml.YAMLError) -> str:
    """One line: where (line, column) and what."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return where + ": ".join(str(x) for x in (e.context, e.problem) if x)
    return " ".join(str(e).split())


def _parse_scalar(text: str) -> Any:
    try:
        value = _yaml(text)
    except yaml.YAMLError:
        return text  # not a YAML scalar ("a: b: c"): take the text as given
    return text if value is None and text.lower() not in ("null", "~", "none") else value


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a recipe, apply ``--set`` overrides, substitute ``${var}``; validate the step kinds.

    >>> load_recipe("pipelines/sft-fisher.yaml", ["budget=10"])["steps"][1]   # doctest: +SKIP
    ('select', {'method': 'fisher', 'budget': 10, 'model': 'smollm2-135m', 'name': 'sft-fisher'})
    """
    p = Path(path)
    try:
        recipe = _yaml(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CurateError(f"{path}: no such recipe") from None
    except IsADirectoryError:
        raise CurateError(f"{path}: a directory, not a recipe file") from None
    except UnicodeDecodeError:
        raise CurateError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise CurateError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise CurateError(f"{path}: invalid YAML ({_yaml_error(e)})") from None
    except RecursionError:
        raise CurateError(f"{path}: invalid YAML (nested too deeply)") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("steps"), list) or not recipe["steps"]:
        raise CurateError(f"{path}: a recipe needs a non-empty 'steps' list")
    if not isinstance(recipe.get("vars") or {}, dict):
        raise CurateError(f"{path}: 'vars' must be a mapping of name: value, got {type(recipe['vars']).__name__}")
    variables = dict(recipe.get("vars") or {})
    steps: list[tuple[str, dict[str, Any]]] = []
    for i, step in enumerate(recipe["steps"]):
        if not isinstance(step, dict) or len(step) != 1:
            raise CurateError(f"{path}: steps[{i}]: expected one 'kind: {{params}}' mapping")
        ((kind, params),) = step.items()
        if kind not in STEP_KINDS:
            raise CurateError(f"{path}: steps[{i}]: unknown step {kind!r} (known: {', '.join(STEP_KINDS)})")
        if params is not None and not isinstance(params, dict):
            raise CurateError(
                f"{path}: steps[{i}] ({kind}): expected a mapping of parameters, got {type(params).__name__}"
            )
        if bad := [k for k in params or {} if not isinstance(k, str)]:
            raise CurateError(f"{path}: steps[{i}] ({kind}): parameter names must be text, got {bad[0]!r}")
        steps.append((kind, dict(params or {})))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CurateError(f"--set {item!r}: expected key=value")
        value = _parse_scalar(raw)
        head, dot, field = key.partition(".")
        if not dot:
            variables[key] = value
        elif head == "steps":
            idx, _, field = field.partition(".")
            if not idx.isdigit() or int(idx) >= len(steps) or not field:
                raise CurateError(f"--set {item!r}: no step {idx} (the recipe has {len(steps)})")
            steps[int(idx)][1][field] = value
        elif head in STEP_KINDS:
            hits = [s for s in steps if s[0] == head]
            if not hits:
                raise CurateError(f"--set {item!r}: the recipe has no {head} step")
            for _, params in hits:
                params[field] = value
        else:
            raise CurateError(f"--set {item!r}: expected VAR=value, KIND.param=value or steps.N.param=value")

    def sub(v: Any) -> Any:
        if isinstance(v, str):
            whole = _VAR.fullmatch(v)
            if whole:
                if whole.group(1) not in variables:
                    raise CurateError(f"{path}: ${{{whole.group(1)}}} is not defined in vars")
                return variables[whole.group(1)]
            for name in _VAR.findall(v):
                if name not in variables:
                    raise CurateError(f"{path}: ${{{name}}} is not defined in vars")
            return _VAR.sub(lambda m: str(variables[m.group(1)]), v)
        if isinstance(v, list):
            return [sub(x) for x in v]
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        return v

    return {"name": recipe.get("name", p.stem), "vars": variables, "steps": [(k, sub(ps)) for k, ps in steps]}


def _check_keys(params: dict[str, Any], target: Any, where: str) -> None:
    if dataclasses.is_dataclass(target):
        names = {f.name for f in dataclasses.fields(target)}
    else:
        names = {n for n in inspect.signature(target).parameters if n not in ("self", "store")}
    unknown = sorted(set(params) - names)
    if unknown:
        raise CurateError(f"{where}: unknown parameter(s) {', '.join(unknown)} (accepted: {', '.join(sorted(names))})")


def _coerce_tuples(params: dict[str, Any], target: Any) -> dict[str, Any]:
    """YAML lists and "lo,hi" strings become tuples where the signature says tuple (e.g. ``band``)."""
    hints = typing.get_type_hints(target if dataclasses.is_dataclass(target) else target.__init__)
    out = {}
    for k, v in params.items():
        ann = hints.get(k)
        wants_tuple = ann is not None and any(typing.get_origin(a) is tuple for a in (ann, *typing.get_args(ann)))
        if wants_tuple and isinstance(v, str):
            v = tuple(_parse_scalar(x) for x in v.split(","))
        elif wants_tuple and isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def _hints(target: Any) -> dict[str, Any]:
    fn = target if dataclasses.is_dataclass(target) or not inspect.isclass(target) else target.__init__
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: check names only, not types
        return {}


def _accepts(ann: Any, value: Any) -> bool:
    """Whether ``value`` (as YAML gives it) fits annotation ``ann``; an annotation it cannot judge accepts."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
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
            return all(_accepts(args[0], x) for x in value)
        return not args or (len(args) == len(value) and all(_accepts(a, x) for a, x in zip(args, value, strict=True)))
    if origin in (list, collections.abc.Sequence):
        return isinstance(value, list | tuple) and (not args or all(_accepts(args[0], x) for x in value))
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (
            len(args) != 2 or all(_accepts(args[0], k) and _accepts(args[1], v) for k, v in value.items())
        )
    if isinstance(ann, type) and ann.__module__ == "builtins":
        return isinstance(value, ann)
    return True  # a Version, a callable: YAML names them in text, and the op checks the name


def _describe(ann: Any) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "text", Path: "text", type(None): "null"}
    if ann in names:
        return names[ann]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin in (tuple, list, collections.abc.Sequence) or ann in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping) or ann is dict:
        return "a mapping"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    return getattr(ann, "__name__", str(ann))


def _check_types(params: dict[str, Any], target: Any, where: str, hints: dict[str, Any] | None = None) -> None:
    """Refuse a parameter whose value cannot be what ``target``'s signature declares (``n: many``, a list where
    a mapping belongs, a mapping where a number belongs), naming the step and the parameter."""
    hints = _hints(target) if hints is None else hints
    for k, v in params.items():
        if k in hints and not _accepts(hints[k], v):
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise CurateError(f"{where}: {k}: expected {_describe(hints[k])}, got {type(v).__name__} {shown}")


#: The keys a step reads itself (not its op's signature), with their types.
_STEP_KEYS: dict[str, dict[str, Any]] = {
    "import": {},
    "sample": {},
    "select": {"ref": str, "method": str, "name": str | None},
    "rollout": {"ref": str, "name": str | None},
    "synth": {"method": str, "name": str},
    "train": {"ref": str, "kind": str},
    "export": {"ref": str, "format": str, "out": str},
}


def check_steps(recipe: dict[str, Any], path: str | Path) -> None:
    """Check every step's parameter names and types against its op's signature before any step runs, so a typo
    in the last step fails in a second, not after an hour of the steps before it.

    >>> check_steps(load_recipe("pipelines/sft-fisher.yaml", ["select.budget=many"]), "x")   # doctest: +SKIP
    Traceback (most recent call last):
    curate.errors.CurateError: x: steps[1] (select): budget: expected an integer or null, got str 'many'
    """
    from curate import api

    for i, (kind, raw) in enumerate(recipe["steps"]):
        where = f"{path}: steps[{i}] ({kind})"
        own = _STEP_KEYS[kind]
        _check_types({k: v for k, v in raw.items() if k in own}, None, where, own)
        params = {k: v for k, v in raw.items() if k not in own}
        if kind in ("import", "sample"):
            target = api.import_data if kind == "import" else api.sample
            _check_keys(params, target, where)
            _check_types(params, target, where)
        elif kind == "select":
            from curate.selectors import get_selector

            if raw.get("method") is None:
                raise CurateError(f"{where}: 'method' is required")
            try:
                cls = get_selector(raw["method"])
            except CurateError as e:
                raise CurateError(f"{where}: {e}") from None
            _check_keys(params, cls, where)
            _check_types(_coerce_tuples(params, cls), cls, where)
        elif kind in ("rollout", "synth", "train"):
            if kind == "synth" and not raw.get("name"):
                raise CurateError(f"{where}: 'name' is required")
            target = _config_of(kind, dict(raw), where)
            _check_keys(params, target, where)
            _check_types(_coerce_tuples(params, target), target, where)
        elif kind == "export":
            from curate.exports import EXPORTERS

            if not raw.get("format") or not raw.get("out"):
                raise CurateError(f"{where}: 'format' and 'out' are required")
            if raw["format"] not in EXPORTERS:
                raise CurateError(
                    f"{where}: unknown export format {raw['format']!r} (available: {', '.join(sorted(EXPORTERS))})"
                )
            exporter = EXPORTERS[raw["format"]]
            sig = inspect.signature(exporter).parameters
            options = {n for n, p in sig.items() if p.kind is p.KEYWORD_ONLY} | {"drop_labels", "overwrite"}
            unknown = sorted(set(params) - options)
            if unknown:
                accepted = ", ".join(sorted(options))
                raise CurateError(f"{where}: unknown parameter(s) {', '.join(unknown)} (accepted: {accepted})")
            _check_types(params, None, where, {**_hints(exporter), "drop_labels": bool, "overwrite": bool})


def _config_of(kind: str, params: dict[str, Any], where: str) -> type:
    """The config dataclass of a rollout, synth or train step (``params`` is the step's, and is consumed)."""
    if kind == "rollout":
        from curate.rollout import RolloutConfig

        return RolloutConfig
    if kind == "synth":
        from curate.synth.condor import CondorConfig

        method = params.pop("method", "condor")
        if method != "condor":
            raise CurateError(f"{where}: unknown synthesizer {method!r} (available: condor)")
        return CondorConfig
    algo = params.pop("kind", "sft")
    if algo == "sft":
        from curate.train.sft import SFTConfig

        return SFTConfig
    if algo == "grpo":
        from curate.train.grpo import GRPOConfig

        return GRPOConfig
    raise CurateError(f"{where}: kind must be sft or grpo, got {algo!r}")


def run_pipeline(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    store: Store | str | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Run every step of a recipe in order; return what each produced and whether it was skipped.

    >>> results = run_pipeline("pipelines/sft-fisher.yaml", overrides=["budget=10"])   # doctest: +SKIP
    >>> [r.skipped for r in results]                                                     # doctest: +SKIP
    """
    import time

    from curate.api import get_store

    s = get_store(store)
    recipe = load_recipe(path, overrides)
    check_steps(recipe, path)
    results: list[StepResult] = []
    previous: str | None = None
    for i, (kind, params) in enumerate(recipe["steps"]):
        where = f"{path}: steps[{i}] ({kind})"
        t0 = time.perf_counter()
        output, skipped = _run_step(kind, dict(params), previous, s, where)
        result = StepResult(i, kind, output, skipped, round(time.perf_counter() - t0, 3))
        results.append(result)
        if on_step is not None:
            on_step(result)
        if kind != "export":
            previous = output if kind != "train" else previous
    return results


def _run_step(kind: str, params: dict[str, Any], previous: str | None, s: Store, where: str) -> tuple[str, bool]:
    from curate import api

    def need_ref() -> str:
        ref = params.pop("ref", None) or previous
        if ref is None:
            raise CurateError(f"{where}: no input ref (give 'ref:' or put a data step before it)")
        return ref

    if kind == "import":
        _check_keys(params, api.import_data, where)
        before = {v.id for v in _versions(s, params.get("name"))}
        v = api.import_data(store=s, **params)
        return v.ref, v.id in before
    if kind == "sample":
        _check_keys(params, api.sample, where)
        before = {v.id for v in _versions(s, params.get("name") or params.get("which"))}
        v = api.sample(store=s, **params)
        return v.ref, v.id in before
    if kind == "select":
        from curate.selectors import get_selector, run_selector

        ref = need_ref()
        method = params.pop("method", None)
        if method is None:
            raise CurateError(f"{where}: 'method' is required")
        name = params.pop("name", None) or f"{s.load(ref).name}-{method}"
        cls = get_selector(method)
        _check_keys(params, cls, where)
        params = _coerce_tuples(params, cls)
        before = {v.id for v in _versions(s, name)}
        v = run_selector(ref, method=method, name=name, store=s, **params)
        return v.ref, v.id in before
    if kind == "rollout":
        from curate.rollout import RolloutConfig, rollout

        ref = need_ref()
        name = params.pop("name", None)
        _check_keys(params, RolloutConfig, where)
        before = {v.id for v in _versions(s, name)}
        v = rollout(ref, RolloutConfig(**_coerce_tuples(params, RolloutConfig)), name=name, store=s)
        return v.ref, v.id in before
    if kind == "synth":
        from curate.synth.condor import CondorConfig, synth_condor

        method = params.pop("method", "condor")
        if method != "condor":
            raise CurateError(f"{where}: unknown synthesizer {method!r} (available: condor)")
        name = params.pop("name", None)
        if not name:
            raise CurateError(f"{where}: 'name' is required")
        _check_keys(params, CondorConfig, where)
        before = {v.id for v in _versions(s, name)}
        v = synth_condor(CondorConfig(**_coerce_tuples(params, CondorConfig)), name=name, store=s)
        return v.ref, v.id in before
    if kind == "train":
        import curate.train as train

        ref = need_ref()
        algo = params.pop("kind", "sft")
        if algo not in ("sft", "grpo"):
            raise CurateError(f"{where}: kind must be sft or grpo, got {algo!r}")
        if algo == "sft":
            from curate.train.sft import SFTConfig as Config
        else:
            from curate.train.grpo import GRPOConfig as Config
        _check_keys(params, Config, where)
        config = Config(**_coerce_tuples(params, Config))
        version = s.load(ref)
        # The trainer writes curate_train.json into the run folder itself only when the run finished (checkpoints
        # keep theirs in checkpoint-N/): same dataset version and same config means this step is done.
        from curate.train.data import CONFIG_FILE, config_dict

        marker = Path(config.out) / CONFIG_FILE
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("dataset", {}).get("id") == version.id and done.get("config") == config_dict(config):
                return str(config.out), True
        getattr(train, algo)(version.ref, config, store=s)
        return str(config.out), False
    if kind == "export":
        ref = need_ref()
        fmt = params.pop("format", None)
        out = params.pop("out", None)
        if not fmt or not out:
            raise CurateError(f"{where}: 'format' and 'out' are required")
        from curate.exports import holds_export

        # The recipe owns its export folder: after a changed step, its own earlier export there is replaced.
        params.setdefault("overwrite", holds_export(out, fmt))
        result = api.export(ref, format=fmt, out=out, store=s, **params)
        return str(getattr(result, "out_dir", result)), False
    raise CurateError(f"{where}: unknown step")  # unreachable: load_recipe validated the kinds


def _versions(s: Store, name: str | None) -> list[Version]:
    if not name:
        return []
    try:
        return s.versions(name)
    except CurateError:
        return []
