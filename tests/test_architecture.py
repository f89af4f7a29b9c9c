"""The layering of ``curate/`` (docs/architecture.md), checked on the source with ``ast``: no import cycles among
curate's modules, no import of a higher layer from a lower one (imports inside functions count too), nothing in
``selectors/`` and ``train/`` importing the other, and no code outside the registries comparing an operation,
method or format name with a string literal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "curate"

# The layers, bottom up. A module may import its own layer or a lower one.
LAYERS = {
    "base": [
        "errors",
        "_version",
        "progress",
        "store",
        "cache",
        "outputs",
        "records",
        "io",
        "text",
        "samples",
        "benchmarks_data",
        "options",
    ],
    "compute": [
        "models",
        "chat",
        "testing",
        "engine",
        "rewards",
        "scoring",
        "generation",
        "groups",
        "stats",
        "embeddings",
    ],
    "methods": ["selectors", "synthesizers", "rollouts", "train", "formats", "report", "comparison"],
    "ops": ["ops"],
    "front": ["cli", "views", "pipeline", "__init__", "__main__"],
}
RANK = {top: i for i, (_, tops) in enumerate(LAYERS.items()) for top in tops}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every curate module ``name`` imports, anywhere in the file (top level or inside a function)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base == "curate" or base.startswith("curate."):
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == "curate" or a.name.startswith("curate."))
    found.discard(name)
    return found


def _layer(module: str) -> int:
    if module == "curate":
        return RANK["__init__"]
    top = module.split(".")[1]
    assert top in RANK, f"{module}: not in any layer of tests/test_architecture.py LAYERS (add it where it belongs)"
    return RANK[top]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            # A package imports its own submodules (its registry); that is not a cycle through the package.
            if m == n.rpartition(".")[0] or n == m.rpartition(".")[0] and m.startswith(n + "."):
                continue
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_upward_imports():
    bad = [
        f"{m} ({next(k for k, v in LAYERS.items() if m.split('.')[-1] in v or m.split('.')[1] in v)}) imports {n}"
        for m, targets in _graph().items()
        if m != "curate"
        for n in sorted(targets)
        if _layer(n) > _layer(m)
    ]
    assert bad == []


def test_selectors_and_trainers_do_not_import_each_other():
    graph = _graph()
    crossing = [
        f"{m} -> {n}"
        for m, targets in graph.items()
        for n in targets
        for a, b in (("curate.selectors", "curate.train"), ("curate.train", "curate.selectors"))
        if (m == a or m.startswith(a + ".")) and (n == b or n.startswith(b + "."))
    ]
    assert crossing == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The graph walker sees imports inside functions and relative imports (so the tests above can fail)."""
    f = tmp_path / "mod.py"
    f.write_text("def f():\n    from curate.ops import OPS\n    from . import store\n")
    found = _imports("curate.selectors.mod", f, {"curate.ops", "curate.selectors.store"})
    assert found == {"curate.ops", "curate.selectors.store"}
    assert _layer("curate.ops") > _layer("curate.selectors.fisher")


# ------------------------------------------------------------------------------------------ names as strings
def _registered_names() -> set[str]:
    from curate.formats import FORMATS
    from curate.ops import OPS
    from curate.selectors import SELECTORS
    from curate.synthesizers import SYNTHESIZERS
    from curate.train import TRAINERS

    return set(OPS) | set(SELECTORS) | set(FORMATS) | set(SYNTHESIZERS) | set(TRAINERS)


# The registries themselves, where a name is defined once.
REGISTRIES = {
    "ops.py",
    "selectors/__init__.py",
    "formats/__init__.py",
    "synthesizers/__init__.py",
    "train/__init__.py",
}
# Attributes that hold an operation, method, format or trainer name.
NAME_HOLDERS = {"method", "format", "fmt", "format_", "kind", "algo", "op", "name", "which", "step", "trainer"}


def _holds_name(node: ast.AST) -> bool:
    if isinstance(node, ast.Name | ast.Attribute):
        return (node.id if isinstance(node, ast.Name) else node.attr) in NAME_HOLDERS
    if isinstance(node, ast.Subscript):  # op["name"], params["method"]
        return isinstance(node.slice, ast.Constant) and node.slice.value in NAME_HOLDERS
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":  # op.get(..)
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value in NAME_HOLDERS
    return False


def _name_literals(node: ast.AST, names: set[str]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in names else []
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [x for e in node.elts for x in _name_literals(e, names)]
    return []


def name_comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` for each comparison of a name-holding expression with a registered name literal."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_holds_name(s) for s in sides):
                hits += [(node.lineno, n) for s in sides for n in _name_literals(s, names)]
    return hits


def test_no_name_compared_as_a_string_outside_the_registries():
    names = _registered_names()
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in REGISTRIES:
            found += [f"{rel}:{line}: {n!r}" for line, n in name_comparisons(path.read_text(encoding="utf-8"), names)]
    assert found == []


def test_the_name_check_finds_string_compares():
    src = 'if method == "fisher": pass\nif kind in ("sft", "grpo"): pass\nif op.get("name") != "select": pass\n'
    assert name_comparisons(src, {"fisher", "sft", "grpo", "select"}) == [
        (1, "fisher"),
        (2, "sft"),
        (2, "grpo"),
        (3, "select"),
    ]
    assert name_comparisons('if role == "select": pass', {"select"}) == []
