"""No code runs from data: a planted pickle in a checkpoint and a model folder that ships its own Python are
refused with one line, whatever stdin answers, unless the user opts in with ``--trust-remote-code``."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import curate
import curate.train
from curate.engine import TaskSpec, Worker
from curate.errors import CurateError
from curate.scoring import _features_batch
from curate.store import Store
from curate.testing import save_tiny_model
from curate.train import SFTConfig

data_mod = importlib.import_module("curate.train.data")
models_mod = importlib.import_module("curate.models")

CLI = [sys.executable, "-m", "curate.cli"]


def cli(store: Path, *args: str, tmp: Path, stdin: str = "", env: dict[str, str] | None = None):
    # HF_HOME in tmp: transformers copies trusted custom code into its modules cache, which must not outlive the test
    full_env = {**os.environ, "COLUMNS": "200", "HF_HOME": str(tmp / "hf"), "CURATE_CACHE": str(tmp / "cache")}
    full_env.pop("CURATE_TRUST_REMOTE_CODE", None)
    return subprocess.run(
        [*CLI, "--store", str(store), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**full_env, **(env or {})},
    )


def one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


class _Plant:
    """Unpickling this runs ``os.system`` and creates the marker file: what a hostile trainer_state.pt does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def chat(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


@pytest.fixture
def sft_store(tmp_path):
    store = Store(tmp_path / "store")
    rows = [{"id": str(i), "messages": chat(f"q{i}", ["alpha", "beta gamma", "delta"][i])} for i in range(3)]
    curate.save(rows, name="mem", store=store)
    return store


# ---------------------------------------------------------------------------------------------- trainer state
def _train(store, model, out, **kw):
    # 4 steps, a checkpoint at 2: the least that leaves a resumable checkpoint behind a finished run
    cfg = SFTConfig(model=model, **{"max_steps": 4, "batch_size": 2, "save_every": 2, "out": str(out), **kw})
    return curate.train.sft("mem", cfg, store=store)


def _interrupted_run(store, model, out) -> Path:
    """A finished run with its last checkpoint removed: resuming it starts from ``checkpoint-000002``."""
    _train(store, model, out)
    shutil.rmtree(out / "checkpoint-000004")
    return out / "checkpoint-000002"


def test_checkpoint_holds_no_pickle(sft_store, tiny_model_path, tmp_path):
    _train(sft_store, tiny_model_path, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint-000002"
    names = sorted(p.name for p in ckpt.iterdir())
    assert "trainer_state.json" in names and "trainer_state.safetensors" in names
    assert not [n for n in names if n.endswith((".pt", ".pkl", ".bin", ".pth"))]
    for path in ckpt.iterdir():
        data = path.read_bytes()
        # A pickle starts with PROTO (0x80) and a protocol number; torch.save writes a zip holding data.pkl.
        assert not (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), path.name
        assert b"data.pkl" not in data, path.name
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["format"] == 1
    # The whole state reads back without torch.load: JSON plus safetensors only.
    loaded = data_mod.load_state(ckpt)
    assert loaded["step"] == 2 and set(loaded["optimizer"]) == {"state", "param_groups"}
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_state_round_trip_is_exact(tmp_path):
    import random

    import numpy as np
    import torch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    state = {"step": 5, "optimizer": opt.state_dict(), "rng": data_mod.rng_state(), "sampler": {"p": [1.5, 2]}}
    data_mod.save_state(tmp_path, state)
    back = data_mod.load_state(tmp_path)
    assert back["step"] == 5 and back["sampler"] == {"p": [1.5, 2]}
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for i, s in state["optimizer"]["state"].items():
        for k, v in s.items():
            assert (
                torch.equal(back["optimizer"]["state"][i][k], v) and back["optimizer"]["state"][i][k].dtype == v.dtype
            )
    expected = (random.random(), np.random.randn(), torch.rand(3))
    data_mod.set_rng_state(back["rng"])
    assert (random.random(), np.random.randn()) == expected[:2] and torch.equal(torch.rand(3), expected[2])


def test_planted_pickle_is_refused_and_never_run(sft_store, tiny_model_path, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _interrupted_run(sft_store, tiny_model_path, tmp_path / "run")
    torch = pytest.importorskip("torch")
    torch.save({"step": 2, "optimizer": _Plant(marker)}, ckpt / "trainer_state.pt")  # what resume used to load
    p = cli(
        sft_store.root,
        "train", "sft", "mem", "--model", tiny_model_path, "--out", str(tmp_path / "run"), "--resume",
        "--max-steps", "4", "--batch-size", "2", "--save-every", "2",
        tmp=tmp_path,
    )  # fmt: skip
    line = one_error_line(p)
    assert f"{ckpt}/trainer_state.pt: pickled trainer state is not loaded" in line
    assert not marker.exists()


def test_old_or_tampered_state_is_refused(sft_store, tiny_model_path, tmp_path):
    ckpt = _interrupted_run(sft_store, tiny_model_path, tmp_path / "run")
    info = (ckpt / "curate_train.json").read_text()
    (ckpt / "curate_train.json").write_text(info[:-9])
    with pytest.raises(CurateError, match=r"curate_train\.json: unreadable"):
        _train(sft_store, tiny_model_path, tmp_path / "run", resume=True)
    (ckpt / "curate_train.json").write_text(info)
    tensors = ckpt / "trainer_state.safetensors"
    blob = bytearray(tensors.read_bytes())
    blob[-1] ^= 1
    tensors.write_bytes(bytes(blob))
    with pytest.raises(CurateError, match=r"trainer_state\.safetensors: .*sha256"):
        _train(sft_store, tiny_model_path, tmp_path / "run", resume=True)
    (ckpt / "trainer_state.json").write_text('{"format": 1, "step": ')
    with pytest.raises(CurateError, match=r"trainer_state\.json: not valid JSON"):
        _train(sft_store, tiny_model_path, tmp_path / "run", resume=True)
    torch = pytest.importorskip("torch")
    torch.save({"step": 2}, ckpt / "trainer_state.pt")  # even a harmless old-style file is not unpickled
    with pytest.raises(CurateError, match=r"trainer_state\.pt: pickled trainer state is not loaded"):
        _train(sft_store, tiny_model_path, tmp_path / "run", resume=True)


# ---------------------------------------------------------------------------------------------- remote code
EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import LlamaConfig, LlamaForCausalLM

class EvilConfig(LlamaConfig):
    model_type = "evil"

class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
"""


def hostile_folder(root: Path, marker: Path) -> Path:
    """A tiny model whose config asks transformers to import its own ``modeling_evil.py``."""
    folder = save_tiny_model(root / "evil")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil"  # unknown to transformers: only the folder's code can build it
    config["architectures"] = ["EvilForCausalLM"]
    config["auto_map"] = {
        "AutoConfig": "modeling_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(EVIL.format(marker=str(marker)))
    return folder


def test_hostile_model_folder_is_refused_even_when_stdin_says_yes(sft_store, tmp_path):
    marker = tmp_path / "pwned"
    folder = hostile_folder(tmp_path, marker)
    args = ("select", "mem", "--method", "fisher", "--budget", "1", "--model", str(folder))
    p = cli(sft_store.root, *args, tmp=tmp_path, stdin="y\n" * 100)
    line = one_error_line(p)
    assert "--trust-remote-code" in line and "config.json" in line
    assert not marker.exists()
    assert "Do you wish to run" not in p.stdout + p.stderr


def test_trust_remote_code_opt_in_lets_the_folder_code_run(sft_store, tmp_path):
    marker = tmp_path / "ran"
    folder = hostile_folder(tmp_path, marker)
    args = ("select", "mem", "--method", "fisher", "--budget", "1", "--model", str(folder), "--name", "picked")
    p = cli(sft_store.root, "--trust-remote-code", *args, tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    assert marker.read_text() == "ran"
    # The opt-in changes whether code may run, not what is computed: it is nowhere in the recorded recipe.
    manifest = curate.load("picked", store=Store(sft_store.root)).manifest
    assert not re.search(r'"[^"]*trust[^"]*":', json.dumps(manifest["op"]).lower())  # no such key


def test_tokenizer_auto_map_is_refused_in_process(tmp_path):
    folder = save_tiny_model(tmp_path / "tok")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    models_mod.clear_cache()
    with pytest.raises(CurateError, match=r"tokenizer_config\.json.*--trust-remote-code"):
        models_mod.load_tokenizer(folder)


def test_python_switch_and_env(monkeypatch):
    monkeypatch.delenv("CURATE_TRUST_REMOTE_CODE", raising=False)
    try:
        models_mod.set_trust_remote_code(None)
        assert models_mod.trust_remote_code() is False
        monkeypatch.setenv("CURATE_TRUST_REMOTE_CODE", "1")
        assert models_mod.trust_remote_code() is True
        models_mod.set_trust_remote_code(False)  # an explicit Python call wins over the environment
        assert models_mod.trust_remote_code() is False
        # A Ray actor is built with the driver's choice, whatever its own environment says.
        Worker(TaskSpec(_features_batch, "minilm"), True)
        assert models_mod.trust_remote_code() is True
    finally:
        models_mod.set_trust_remote_code(None)
