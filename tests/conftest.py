"""Shared fixtures. Everything here is offline and CPU-only."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATE_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def store(tmp_path):
    """A fresh, empty store in a temp dir."""
    from curate.store import Store

    return Store(tmp_path / "store")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A tiny random causal LM saved as a local HF folder: pass the path wherever a model name goes."""
    from curate.models import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))
