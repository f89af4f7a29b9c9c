"""The word lists, glossary and recipes behind the sample datasets, read once from ``data/*.json``.

The files ship as package data, so ``curate sample`` works from an installed wheel. Every list keeps the order
it was written in: the generators draw from them with a seeded ``random.Random``, and reordering a list changes
the rows a seed produces (``tests/test_samples.py`` pins them by digest).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from types import SimpleNamespace
from typing import Any, NamedTuple

# A handful of retries finds a row not seen before; the template spaces are far larger than 500 rows,
# so the cap only guards against an infinite loop when someone asks for a huge n.
RETRIES = 50


@functools.cache
def load(name: str) -> Any:
    """The parsed ``data/<name>.json`` of this package, e.g. ``load("words")["names"]``."""
    return json.loads(resources.files(__package__).joinpath("data", f"{name}.json").read_text(encoding="utf-8"))


class Term(NamedTuple):
    """A glossary entry; ``related`` names other entries (a test keeps the links valid)."""

    category: str
    definition: str
    detail: str
    example: str
    related: tuple[str, ...]


class Recipe(NamedTuple):
    """A recipe whose per-serving amounts are scaled to the number of people asked for."""

    name: str
    minutes: int
    # [amount per serving, unit, ingredient]; unit "" means a count and the ingredient is [singular, plural]
    ingredients: list[list[Any]]
    # "{slot}" in an ingredient or a step is filled with one of these options, the same one throughout the recipe
    slots: dict[str, list[str]]
    steps: list[str]
    tips: list[str]


WORDS = SimpleNamespace(**load("words"))
"""Word lists by name (``WORDS.names``, ``WORDS.fruits``, ...), unit ``conversions`` and ``system_prompts``."""

GLOSSARY: dict[str, Term] = {
    term: Term(**{**entry, "related": tuple(entry["related"])}) for term, entry in load("glossary")["terms"].items()
}
"""Term -> its category, definition, detail, example and related terms."""

ARTICLES: dict[str, str] = load("glossary")["articles"]
"""The article a term takes in "What is ...?"; terms missing here read without one ("What is recursion?")."""

RECIPES: list[Recipe] = [Recipe(**recipe) for recipe in load("recipes")]
