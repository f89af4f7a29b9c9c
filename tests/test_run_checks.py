"""`curate run` checks its recipe before anything runs (--set typos name the close key), `--dry-run` tells the
versions each step would make, an empty selection is an error unless allowed, a selector refuses an option its
configuration does not read, and every selector option has a description."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import curate
from curate.errors import CurateError
from curate.ops import get_op
from curate.options import arg_docs, help_rows
from curate.pipeline import load_recipe, plan_pipeline, run_pipeline
from curate.selectors import SELECTORS, get_selector
from curate.selectors.random import RandomSelector
from curate.store import Store
from tests.cli_helpers import refused, run_cli

ROOT = Path(__file__).resolve().parents[1]
FISHER = ROOT / "pipelines" / "sft-fisher.yaml"

# sample + random select + jsonl export: no model anywhere, so a real run takes a second
RECIPE = """
vars: {rows: 12, budget: 4}
steps:
  - sample: {which: sample-sft, n: "${rows}", name: pool}
  - select: {method: random, budget: "${budget}", name: picked}
  - export: {format: jsonl, out: "OUT"}
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.replace("OUT", str(tmp_path / "export")))
    return p


# ------------------------------------------------------------------------------------------ --set and step checks
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budgt=3", r"--set 'budgt=3': the recipe has no var 'budgt' \(vars: .*\); did you mean 'budget'\?$"),
        ("select.budgt=3", r"--set 'select.budgt=3': steps\[1\] \(select\): unknown parameter\(s\) budgt; did you "),
        ("steps.1.budgt=3", r"steps\[1\] \(select\): unknown parameter\(s\) budgt; did you mean 'budget'\?$"),
        ("selct.budget=3", r"expected VAR=value, KIND.param=value or steps.N.param=value; did you mean 'select'\?$"),
        ("lam=2", r"the recipe has no var 'lam' .*; a step parameter is set as select.lam=\.\.\.$"),
        ("steps.7.budget=3", r"no step 7 \(the recipe has 4, numbered from 0\)"),
    ],
)
def test_a_set_typo_is_refused_naming_the_close_key(override: str, message: str) -> None:
    with pytest.raises(CurateError, match=message):
        load_recipe(FISHER, [override])


def test_a_step_parameter_typo_in_the_recipe_fails_before_any_step_runs(tmp_path: Path) -> None:
    p = tmp_path / "typo.yaml"
    p.write_text("steps:\n  - sample: {which: sample-sft, n: 4}\n  - select: {method: random, budgte: 2}\n")
    store = Store(tmp_path / "st")
    with pytest.raises(CurateError, match=r"steps\[1\] \(select\): unknown parameter\(s\) budgte .*did you mean "):
        run_pipeline(p, store=store)
    assert store.datasets() == []  # the sample step before it did not run


def test_a_valid_set_still_applies(recipe: Path) -> None:
    steps = load_recipe(recipe, ["budget=3", "select.seed=5"])["steps"]
    assert steps[1] == ("select", {"method": "random", "budget": 3, "name": "picked", "seed": 5})


# ------------------------------------------------------------------------------------------ --dry-run
def test_dry_run_tells_the_ids_a_run_makes_and_runs_nothing(recipe: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "st")
    plan = plan_pipeline(recipe, store=store)
    assert store.datasets() == [] and not (tmp_path / "export").exists()  # nothing ran, nothing was written
    assert [(p.kind, p.name, p.stored) for p in plan] == [
        ("sample", "pool", False),
        ("select", "picked", False),
        ("export", None, False),
    ]
    assert plan[1].params == {"ref": f"pool@{plan[0].id}", "name": "picked", "method": "random", "budget": 4}
    assert plan[2].params["ref"] == f"picked@{plan[1].id}"

    results = run_pipeline(recipe, store=store)
    assert [store.load(r.output).id for r in results[:2]] == [plan[0].id, plan[1].id]

    again = plan_pipeline(recipe, store=store, overrides=["budget=5"])
    assert again[0].stored is True and again[0].id == plan[0].id
    assert again[1].stored is False and again[1].id != plan[1].id  # a new budget: a new version
    assert "in the store, skipped" in again[0].line() and again[1].line().endswith("[would run]")


def test_dry_run_on_the_command_line(recipe: Path, tmp_path: Path) -> None:
    p = run_cli(tmp_path / "st", "run", str(recipe), "--dry-run", "--set", "budget=2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 3 and lines[1].startswith("step 1 select: ref=pool@") and "budget=2 -> picked@" in lines[1]
    assert not (tmp_path / "st" / "datasets").exists()
    refused(run_cli(tmp_path / "st", "run", str(recipe), "--dry-run", "--set", "budgt=2"), "did you mean 'budget'?")


# ------------------------------------------------------------------------------------------ empty selections
@pytest.mark.parametrize("params", [{"budget": 0}, {"fraction": 0.1}])
def test_an_empty_selection_is_an_error_unless_allowed(tmp_path: Path, params: dict) -> None:
    store = Store(tmp_path / "st")
    curate.sample("sample-sft", n=2, name="two", store=store)
    with pytest.raises(CurateError, match=r"--method random kept 0 of 2 rows \(below_budget: 2\).*--allow-empty"):
        curate.select("two", method="random", name="none", store=store, allow_empty=False, **params)
    with pytest.raises(CurateError, match=r"kept 0 of 2 rows"):  # the op as the CLI and recipes run it
        get_op("select").fn("two", method="random", name="none", store=store, **params)
    assert store.datasets() == ["two"]  # refused before the commit: the store is as it was
    # In Python an empty result is a version like any other.
    v = curate.select("two", method="random", name="none", store=store, **params)
    assert len(v) == 0 and "allow_empty" not in v.op["params"]


def test_a_recipe_step_refuses_an_empty_selection_unless_allowed(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("steps:\n  - sample: {which: sample-sft, n: 2}\n  - select: {method: random, budget: 0, name: e}\n")
    with pytest.raises(CurateError, match=r"kept 0 of 2 rows"):
        run_pipeline(p, store=Store(tmp_path / "st"))
    results = run_pipeline(p, store=Store(tmp_path / "st"), overrides=["select.allow_empty=true"])
    assert results[1].output == "e@v1"


def test_an_empty_input_is_no_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "st")
    empty = store.commit(pa.table({"id": pa.array([], pa.string())}), name="nothing", op={"name": "x"})
    assert len(get_op("select").fn(empty, method="random", budget=3, name="n", store=store)) == 0


def test_allow_empty_leaves_version_ids_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "st")
    curate.sample("sample-sft", n=6, name="six", store=store)
    plain = curate.select("six", method="random", budget=3, name="three", store=store)
    allowed = curate.select("six", method="random", budget=3, name="three", store=store, allow_empty=True)
    assert allowed.id == plain.id and plain.op == {
        "name": "select",
        "method": "random",
        "params": {"budget": 3, "fraction": None, "budget_tokens": None, "seed": 0, "model": "smollm2-135m"},
    }


# ------------------------------------------------------------------------------------------ unused options
def test_random_refuses_a_model_it_does_not_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "st")
    curate.sample("sample-sft", n=4, name="four", store=store)
    with pytest.raises(CurateError, match=r"^--method random: --model is only read with --budget-tokens; leave it"):
        curate.select("four", method="random", budget=2, model="qwen", store=store)
    assert store.datasets() == ["four"]
    # Read with --budget-tokens; at its default it changes nothing and is not refused.
    assert RandomSelector(budget_tokens=10, model="qwen").get_params()["model"] == "qwen"
    assert RandomSelector(budget=2, model="smollm2-135m").get_params()["model"] == "smollm2-135m"


def test_dedup_refuses_an_embedder_outside_semantic_level() -> None:
    dedup = get_selector("dedup")
    with pytest.raises(CurateError, match=r"^--method dedup: --model is only read with --level semantic; leave it"):
        dedup(level="near", model="other").get_params()
    assert dedup(level="semantic", model="other").get_params()["model"] == "other"


def test_select_refusals_on_the_command_line(tmp_path: Path) -> None:
    st = tmp_path / "st"
    assert run_cli(st, "sample", "sample-sft", "--n", "2", "--name", "two").returncode == 0
    refused(run_cli(st, "select", "two", "--method", "random", "--budget", "0"), "kept 0 of 2 rows", "--allow-empty")
    p = run_cli(st, "select", "two", "--method", "random", "--budget", "0", "--allow-empty")
    assert p.returncode == 0 and "kept 0, dropped 2" in p.stdout, p.stderr
    refused(
        run_cli(st, "select", "two", "--method", "random", "--budget", "1", "--model", "qwen"),
        "--model is only read with --budget-tokens",
    )


# ------------------------------------------------------------------------------------------ option descriptions
@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_selector_option_has_a_description(method: str) -> None:
    rows = help_rows(SELECTORS[method])
    assert rows and [flag for flag, _, _, doc in rows if not doc.strip()] == []


def test_args_sections_are_read_with_continuations_and_overrides() -> None:
    class Base:
        """A base.

        Args:
            budget: Shared words.
            seed: Shared seed
                over two lines.
        """

    class Child(Base):
        """A child.

        Args:
            budget (int): Its own words.

        Returns nothing worth a section.
        """

        def __init__(self, *, budget: int = 1, seed: int = 0, other: int = 2):
            """Other text.

            Args:
                other: From __init__.
            """

    assert arg_docs(Child) == {
        "budget": "Its own words.",
        "other": "From __init__.",
        "seed": "Shared seed over two lines.",
    }
