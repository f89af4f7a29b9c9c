"""Synthesizers: new SFT data from a knowledge tree and a generator, with every LLM call cached.

    curate synth condor --name OUT [--tree FILE|builtin] [--model M --backend hf|openai|vllm] [--no-refine]

``condor.py`` runs the pipeline, ``prompts.py`` holds the prompts and their strict parsers, ``tree.py`` the
World Knowledge Tree (YAML, built-in seed tree, LLM expansion). ``SYNTHESIZERS`` is the registry the operations
layer reads: a new synthesizer is one file with a config dataclass and a ``run(config, *, name, store)`` function,
plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curate.synthesizers.condor import CondorConfig, synth_condor


@dataclass(frozen=True)
class Synthesizer:
    """A registry entry: the config dataclass (its fields are the options) and the function that runs it."""

    config: type
    run: Callable[..., Any]


SYNTHESIZERS: dict[str, Synthesizer] = {"condor": Synthesizer(CondorConfig, synth_condor)}

__all__ = ["SYNTHESIZERS", "Synthesizer", "synth_condor"]
