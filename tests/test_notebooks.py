"""Both notebooks execute top to bottom (nbclient), at small sizes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def coin_reward(completion: str, answer: str, **row) -> float:
    """A reward the tiny random model can 'earn': a fixed coin flip per completion, so pass rates vary."""
    return float(hashlib.sha256(completion.encode()).digest()[0] % 2)


def execute(name: str, tmp_path: Path, **env: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = dict(os.environ)
    os.environ.update({"CURATE_NOTEBOOK_DIR": str(tmp_path), **env})
    try:
        # The kernel inherits this process's environment, so it sees the settings above.
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


@pytest.mark.slow
def test_build_sft_dataset_notebook_runs_on_the_embedded_model(tmp_path):
    nb = execute("build_sft_dataset.ipynb", tmp_path, CURATE_NOTEBOOK_ROWS="24")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "SFTTrainer" in text  # the export note for TRL was printed


def test_rl_prompt_curriculum_notebook_runs(tmp_path, tiny_model_path):
    # The tiny random model keeps generation fast; the coin reward gives it intermediate pass rates.
    nb = execute(
        "rl_prompt_curriculum.ipynb",
        tmp_path,
        CURATE_NOTEBOOK_MODEL=tiny_model_path,
        CURATE_NOTEBOOK_ROWS="12",
        CURATE_NOTEBOOK_REWARD="tests.test_notebooks:coin_reward",
        PYTHONPATH=str(NOTEBOOKS.parent),
    )
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "verl.trainer.main_ppo" in text
