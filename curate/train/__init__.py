"""The compact trainer: one self-contained module per algorithm, reading store versions directly.

    curate train sft REF --model M --out DIR      # curate/train/sft.py
    curate train grpo REF --model M --reward R --out DIR   # curate/train/grpo.py

    >>> import curate.train
    >>> result = curate.train.sft("gsm8k@v1", model="smollm2-135m", max_steps=10, out="runs/sft")  # doctest: +SKIP
    >>> result.out, result.metrics["loss"]                                                        # doctest: +SKIP

``curate.train.sft`` and ``curate.train.grpo`` are the functions (they shadow the submodules of the same name);
reach a module itself with ``importlib.import_module("curate.train.sft")``. Importing this package loads no
torch: the trainers import it when they run.
"""

from __future__ import annotations

from curate.train.data import TrainResult, read_metrics
from curate.train.grpo import GRPOConfig, grpo
from curate.train.sft import SFTConfig, sft

__all__ = ["GRPOConfig", "SFTConfig", "TrainResult", "grpo", "read_metrics", "sft"]
