"""The compact trainer: one self-contained module per algorithm, reading store versions directly.

    curate train sft REF --model M --out DIR      # curate/train/sft.py
    curate train grpo REF --model M --reward R --out DIR   # curate/train/grpo.py

    >>> import curate.train
    >>> result = curate.train.sft("gsm8k@v1", model="smollm2-135m", max_steps=10, out="runs/sft")  # doctest: +SKIP
    >>> result.out, result.metrics["loss"]                                                        # doctest: +SKIP

``curate.train.sft`` and ``curate.train.grpo`` are the functions (they shadow the submodules of the same name);
reach a module itself with ``importlib.import_module("curate.train.sft")``. Importing this package loads no
torch: the trainers import it when they run. Both take a store ref, a ``Version`` or rows (a pyarrow Table or a
list of row dicts).

``TRAINERS`` is the registry the operations layer reads (``curate train sft|grpo``, recipe steps,
``curate.train_sft``): a new trainer is one file with a config dataclass and a function
``train(data, config, *, store)``, plus one line here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.train.data import CONFIG_FILE, TrainData, TrainResult, config_dict, read_metrics
from curate.train.grpo import GRPOConfig, grpo
from curate.train.sft import SFTConfig, sft


@dataclass(frozen=True)
class Trainer:
    """A registry entry: the config dataclass (its fields are the options) and the function that trains."""

    config: type
    run: Callable[..., TrainResult]
    rl: bool = False  # trains from rewards on prompts (compared by held-out reward, not by held-out NLL)

    def finished(self, version: Any, config: Any) -> str | None:
        """The run folder when it holds a finished run of ``config`` on ``version`` (a recipe step then skips).

        The trainer writes ``curate_train.json`` into the run folder only when the run finished (checkpoints keep
        theirs in ``checkpoint-N/``): same dataset version and same config means this run is done.
        """
        marker = Path(config.out) / CONFIG_FILE
        if not marker.exists():
            return None
        try:
            done = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        same = done.get("dataset", {}).get("id") == version.id and done.get("config") == config_dict(config)
        return str(config.out) if same else None


TRAINERS: dict[str, Trainer] = {"sft": Trainer(SFTConfig, sft), "grpo": Trainer(GRPOConfig, grpo, rl=True)}

__all__ = [
    "TRAINERS",
    "GRPOConfig",
    "SFTConfig",
    "TrainData",
    "TrainResult",
    "Trainer",
    "grpo",
    "read_metrics",
    "sft",
]
