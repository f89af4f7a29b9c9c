"""Shared fixtures. Everything here is offline and CPU-only."""

from __future__ import annotations

import os

import pytest

# Importing the toy plugin registers it; only the tests that use it (and their teardown) should.
collect_ignore = ["toy_plugin.py"]

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
    from curate.testing import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture
def one_thread():
    """torch on one thread for the test: a tiny model's ops are far too small to split across threads, and on a
    busy 2-core box the OpenMP barrier then costs 100x the math (SmolLM2's forward took 9 s on 2 threads against
    0.9 s on 1 while another job held a core). One thread keeps such tests fast and their timings stable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
