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

Every name is checked before any step runs: a ``--set`` key the recipe has no var or step parameter for, and a
step parameter its op does not take, fail at once with the close match (``--set budgt=3``: "did you mean
'budget'?"). ``curate run RECIPE --dry-run`` (``plan_pipeline``) prints each step with its parameters as they will
run, the ``name@id`` of the version it would make where that can be told without running it (sample and select
steps, and the steps after them), and whether the store already holds it; it runs and writes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curate.errors import CurateError
from curate.ops import OPS, StepResult, get_op, run_step, split_step
from curate.options import did_you_mean, params_of
from curate.options import load_yaml as _yaml
from curate.options import parse_scalar as _parse_scalar
from curate.store import Store, Version, get_store, recipe_id

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

__all__ = ["PlannedStep", "StepResult", "check_steps", "load_recipe", "plan_pipeline", "run_pipeline"]


def _yaml_error(e: yaml.YAMLError) -> str:
    """One line: where (line, column) and what."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return where + ": ".join(str(x) for x in (e.context, e.problem) if x)
    return " ".join(str(e).split())


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
        if kind not in OPS:
            raise CurateError(f"{path}: steps[{i}]: unknown step {kind!r} (known: {', '.join(OPS)})")
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
            if key not in variables and key not in _used_vars(steps):  # a typo would be accepted and ignored
                names = sorted(set(variables) | _used_vars(steps))
                takes = [k for k, ps in steps if key in (_accepted(k, ps) or ())]
                hint = f"; a step parameter is set as {takes[0]}.{key}=..." if takes else did_you_mean(key, names)
                raise CurateError(
                    f"--set {item!r}: the recipe has no var {key!r} (vars: {', '.join(names) or 'none'}){hint}"
                )
            variables[key] = value
        elif head == "steps":
            idx, _, field = field.partition(".")
            if not idx.isdigit() or int(idx) >= len(steps) or not field:
                raise CurateError(f"--set {item!r}: no step {idx} (the recipe has {len(steps)}, numbered from 0)")
            _check_field(item, int(idx), *steps[int(idx)], field)
            steps[int(idx)][1][field] = value
        elif head in OPS:
            hits = [s for s in steps if s[0] == head]
            if not hits:
                raise CurateError(f"--set {item!r}: the recipe has no {head} step")
            for i, (kind, params) in enumerate(steps):
                if kind == head:
                    _check_field(item, i, head, params, field)
                    params[field] = value
        else:
            hint = did_you_mean(head, [k for k, _ in steps])
            raise CurateError(f"--set {item!r}: expected VAR=value, KIND.param=value or steps.N.param=value{hint}")

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


def _accepted(kind: str, params: dict[str, Any]) -> set[str] | None:
    """Every parameter name a ``kind`` step with these parameters takes; None while its variant is a ``${var}``."""
    op = OPS[kind]
    names = {k.name for k in op.keys} | ({op.input} if op.input else set())
    entry = None
    if op.variant is not None:
        choice = params.get(op.variant.key) or op.variant.default
        if not isinstance(choice, str) or choice not in op.variant.registry():
            return None  # named through a var, or unknown: check_steps judges it once vars are in
        names.add(op.variant.key)
        entry = op.variant.registry()[choice]
    return names | {p.name for p in params_of(op.target(entry))}


def _check_field(item: str, index: int, kind: str, params: dict[str, Any], field: str) -> None:
    """A ``--set KIND.param`` / ``steps.N.param`` name the step does not take: refused, naming the close one."""
    accepted = _accepted(kind, params)
    if accepted is not None and field not in accepted:
        raise CurateError(
            f"--set {item!r}: steps[{index}] ({kind}): unknown parameter(s) {field}"
            f"{did_you_mean(field, sorted(accepted))}"
        )


def _used_vars(steps: Any) -> set[str]:
    """The ``${var}`` names the steps use."""
    if isinstance(steps, str):
        return set(_VAR.findall(steps))
    if isinstance(steps, dict):
        return set().union(*map(_used_vars, steps.values()))
    if isinstance(steps, list | tuple):
        return set().union(*map(_used_vars, steps))
    return set()


def check_steps(recipe: dict[str, Any], path: str | Path) -> None:
    """Check every step's parameter names and types against its op before any step runs, so a typo in the last
    step fails in a second, not after an hour of the steps before it.

    >>> check_steps(load_recipe("pipelines/sft-fisher.yaml", ["select.budget=many"]), "x")   # doctest: +SKIP
    Traceback (most recent call last):
    curate.errors.CurateError: x: steps[1] (select): budget: expected an integer or null, got str 'many'
    """
    for i, (kind, raw) in enumerate(recipe["steps"]):
        split_step(get_op(kind), raw, f"{path}: steps[{i}] ({kind})")


@dataclass
class PlannedStep:
    """What ``curate run --dry-run`` says of one step: its parameters as they will run, the version it would make
    (``name@id``, when that can be told without running it) and whether the store already holds the result."""

    index: int
    kind: str
    params: dict[str, Any]  # the input, the keys, the variant and the options, after ``--set`` and ``${var}``
    name: str | None = None  # the version it makes (None: no version, or not known before running)
    id: str | None = None
    stored: bool | None = None  # None: cannot tell before the steps before it have run
    output: str | None = None  # a finished non-version result (a run folder) the step would be skipped for

    def line(self) -> str:
        """One line: ``step 1 select: method=fisher budget=50 ... -> sft-fisher@3f2a... in the store``."""
        shown = " ".join(f"{k}={_shown(v)}" for k, v in self.params.items())
        made = f" -> {self.name}@{self.id}" if self.id else ""
        if self.stored:
            state = f"in the store ({self.output}), skipped" if self.output else "in the store, skipped"
        elif self.stored is False:
            state = "would run"
        else:
            state = "would run unless the store holds it (only running it can tell)"
        return f"step {self.index} {self.kind}: {shown}{made}  [{state}]"


def _shown(v: Any) -> str:
    if isinstance(v, tuple | list):
        return ",".join(map(str, v))
    return str(v)


def plan_pipeline(
    path: str | Path, *, overrides: Sequence[str] = (), store: Store | str | None = None
) -> list[PlannedStep]:
    """Every step as it would run, and which results the store already holds; runs nothing and writes nothing.

    >>> for step in plan_pipeline("pipelines/sft-fisher.yaml", overrides=["budget=10"]):   # doctest: +SKIP
    ...     print(step.line())
    step 0 sample: which=sample-sft n=500 name=sft-pool -> sft-pool@6a9f1d2439c863fe  [in the store, skipped]
    """
    s = get_store(store)
    recipe = load_recipe(path, overrides)
    check_steps(recipe, path)
    planned: list[PlannedStep] = []
    previous: tuple[str, str] | None = None  # (name, id) of the version the last data step makes
    made: dict[str, tuple[str, str]] = {}
    for i, (kind, raw) in enumerate(recipe["steps"]):
        op = OPS[kind]
        keys, choice, entry, params = split_step(op, raw, f"{path}: steps[{i}] ({kind})")
        given = keys.pop(op.input, None) if op.input else None
        parent, value = None, given
        if op.input == "ref":
            if given is not None and given in made:  # a name an earlier step makes: that version, once it ran
                parent = made[given]
            elif given is not None:
                v = _stored(s, given)
                parent = (v.name, v.id) if v is not None else None
            else:
                parent = previous  # None once a data step's id cannot be told: the next ones' ids cannot either
                value = f"{previous[0]}@{previous[1]}" if parent is not None else "(previous step)"
        if op.variant is not None:
            keys[op.variant.key] = choice
        if op.recipe is not None:
            params = op.recipe(keys, choice, params)
        shown = {**({op.input: value} if op.input else {}), **keys, **params}
        step = PlannedStep(i, kind, shown)
        ready = op.input != "ref" or parent is not None
        if op.plan is not None and ready and (plan := op.plan(s, value, parent, dict(keys), dict(params))):
            step.name, parents, op_dict = plan
            step.id = recipe_id(parents, op_dict)
            step.stored = s.has_version(step.name, step.id)
        elif op.done is not None:
            v = _stored(s, f"{parent[0]}@{parent[1]}") if parent is not None else None
            step.output = op.done(s, [v], entry, params) if v is not None else None
            step.stored = True if step.output is not None else (False if parent is not None else None)
        elif not op.makes_version:
            step.stored = False  # an export is written again each time
        planned.append(step)
        if op.makes_version:
            previous = (step.name, step.id) if step.id else None
            if previous is not None:
                made[previous[0]] = previous
    return planned


def _stored(s: Store, ref: str) -> Version | None:
    """The version ``ref`` names, or None when the store does not hold it (yet)."""
    try:
        return s.load(ref)
    except CurateError:
        return None


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
    s = get_store(store)
    recipe = load_recipe(path, overrides)
    check_steps(recipe, path)
    results: list[StepResult] = []
    previous: str | None = None
    for i, (kind, params) in enumerate(recipe["steps"]):
        t0 = time.perf_counter()
        result = run_step(i, kind, dict(params), previous, s, f"{path}: steps[{i}] ({kind})")
        result.seconds = round(time.perf_counter() - t0, 3)
        results.append(result)
        if on_step is not None:
            on_step(result)
        if OPS[kind].makes_version:
            previous = result.output
    return results
