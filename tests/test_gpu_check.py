"""benchmarks/gpu_check.sh: without a GPU it says so and runs nothing; ``--cpu-smoke`` runs every step on the CPU
at tiny sizes and prints each figure on its own line."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the real check would run")
def test_without_cuda_it_skips_everything_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    assert load_gpu_check().main() == 2
    out = capsys.readouterr().out
    assert out.startswith("SKIP everything: torch ") and "sees no CUDA device; --cpu-smoke runs" in out


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_prints_each_figure():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    figures = dict(re.findall(r"^(\w+\.\w+) = (\S+)", proc.stdout, re.M))
    for name in (
        "sft.tokens_per_s",
        "grpo.s_per_step",
        "rollouts_hf.tokens_per_s",
        "features.rows_per_s",
        "greedy.seconds",
        "greedy_realistic.lazy_seconds",
        "greedy_realistic.plain_seconds",
    ):
        assert float(figures[name]) > 0, name
    assert figures["greedy.picks_equal_cpu"] == "True"
    assert "SKIP rollouts_vllm: --cpu-smoke" in proc.stdout
    assert "FAIL" not in proc.stdout
    assert proc.stdout.rstrip().endswith("gpu_check: all steps that ran passed")
    # the 4 prompts x 2 samples x 8 new tokens of the smoke rollout, every one generated in full by a random model
    assert "(64 tokens" in proc.stdout
