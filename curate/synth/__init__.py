"""Synthesizers: new SFT data from a knowledge tree and a generator, with every LLM call cached.

    curate synth condor --name OUT [--tree FILE|builtin] [--model M --backend hf|openai|vllm] [--no-refine]

``condor.py`` runs the pipeline, ``prompts.py`` holds the prompts and their strict parsers, ``tree.py`` the
World Knowledge Tree (YAML, built-in seed tree, LLM expansion). Nothing heavy is imported here.
"""

from __future__ import annotations


def synth_condor(config=None, *, name: str, store=None, **overrides):
    """Condor synthesis (see ``curate.synth.condor.synth_condor``)."""
    from curate.synth.condor import synth_condor as _run

    return _run(config, name=name, store=store, **overrides)


__all__ = ["synth_condor"]
