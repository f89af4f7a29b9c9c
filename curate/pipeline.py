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

import dataclasses
import inspect
import json
import re
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


def _parse_scalar(text: str) -> Any:
    value = yaml.safe_load(text)
    return text if value is None and text.lower() not in ("null", "~", "none") else value


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a recipe, apply ``--set`` overrides, substitute ``${var}``; validate the step kinds."""
    p = Path(path)
    try:
        recipe = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise CurateError(f"{path}: no such recipe") from None
    except yaml.YAMLError as e:
        raise CurateError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("steps"), list) or not recipe["steps"]:
        raise CurateError(f"{path}: a recipe needs a non-empty 'steps' list")
    variables = dict(recipe.get("vars") or {})
    steps: list[tuple[str, dict[str, Any]]] = []
    for i, step in enumerate(recipe["steps"]):
        if not isinstance(step, dict) or len(step) != 1:
            raise CurateError(f"{path}: steps[{i}]: expected one 'kind: {{params}}' mapping")
        ((kind, params),) = step.items()
        if kind not in STEP_KINDS:
            raise CurateError(f"{path}: steps[{i}]: unknown step {kind!r} (known: {', '.join(STEP_KINDS)})")
        steps.append((kind, dict(params or {})))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
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
        names = {n for n in inspect.signature(target).parameters if n not in ("self",)}
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
