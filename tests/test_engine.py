"""The map engines (curate/engine.py): Ray and local give identical features, token losses and rollouts, share
one cache (a half-done Ray run resumes locally with only the rest computed), and reject bad settings."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import ray

from curate.api import save
from curate.engine import Engine, TaskSpec, Worker, run_batches
from curate.errors import CurateError
from curate.generation import HFGenerator
from curate.rollout import RolloutConfig, generate_rollouts
from curate.scoring import extract_features, token_losses

# Two workers, two CPUs: the machine's size; enough to show results arriving from a pool in any order.
RAY = {"engine": "ray", "num_workers": 2}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


# Eight short rows of different lengths (byte-level tokenizer: one token per byte), so packing makes several
# batches and they go to both workers.
ROWS = [chat(f"Question {i}: " + "why? " * i, f"Because {i}. " + "so " * (3 * i)) for i in range(8)]
# Small packed batches (tokens per forward): several batches per run, so the pool and the resume both matter.
BATCH_TOKENS = 160


def test_features_identical_under_ray_and_local(tmp_path, tiny_model_path):
    kw = {"model": tiny_model_path, "dim": 8, "max_tokens_per_example": 5, "batch_tokens": BATCH_TOKENS}
    local = extract_features(ROWS, store=tmp_path / "a", **kw)
    remote = extract_features(ROWS, store=tmp_path / "b", **kw, **RAY)
    assert len(remote) == len(ROWS)
    for a, b in zip(local, remote, strict=True):
        assert a.shape == b.shape == (5, 8)
        np.testing.assert_array_equal(a, b)


def test_token_losses_identical_and_half_done_ray_run_resumes_locally(tmp_path, tiny_model_path):
    store = tmp_path / "s"
    kw = {"model": tiny_model_path, "batch_tokens": BATCH_TOKENS}
    local = token_losses(ROWS, store=tmp_path / "local", **kw)
    # A "killed" cluster run: only the first half of the rows went through Ray.
    first = {}
    token_losses(ROWS[:4], store=store, stats=first, **kw, **RAY)
    assert first == {"computed": 4, "cached": 0}
    resumed = {}
    out = token_losses(ROWS, store=store, stats=resumed, **kw)
    assert resumed == {"computed": 4, "cached": 4}
    for a, b in zip(local, out, strict=True):
        assert a[0] == 0.0 and len(a) > 10
        np.testing.assert_array_equal(a, b)
    # And back: everything is cached for the Ray engine too, so it starts no worker at all.
    again = {}
    token_losses(ROWS, store=store, stats=again, **kw, **RAY)
    assert again == {"computed": 0, "cached": 8}


def test_rollouts_identical_under_ray_and_local(tmp_path, tiny_model_path):
    prompts = [
        {"id": f"q{i}", "prompt": [{"role": "user", "content": f"{i}+{i}?"}], "answer": str(2 * i)} for i in range(5)
    ]
    # n 2, 5 new tokens, batch 2: seeded sampling on the tiny model, three batches over the two workers.
    base = {"n": 2, "model": tiny_model_path, "max_tokens": 5, "batch_size": 2, "seed": 3, "reward": "exact"}
    a = save(prompts, name="p", store=tmp_path / "a")
    b = save(prompts, name="p", store=tmp_path / "b")
    local = generate_rollouts(a, RolloutConfig(**base), store=a.store)
    remote = generate_rollouts(b, RolloutConfig(**base, **RAY), store=b.store)
    assert local.num_rows == 10
    assert remote.to_pylist() == local.to_pylist()
    assert len(set(local.column("completion").to_pylist())) > 1  # sampled, not all empty or equal


def test_worker_runs_the_same_code_in_process(tiny_model_path):
    spec = TaskSpec("token_losses", tiny_model_path, {"dtype": "float32", "keep_loaded": True})
    got = dict(run_batches([(["x", "y"], [[1, 2, 3], [4, 5]])], spec=spec))
    direct = Worker(spec).run([[1, 2, 3], [4, 5]])
    assert list(got) == ["x", "y"]
    np.testing.assert_array_equal(got["x"], direct[0])
    assert got["y"].shape == (2,) and got["y"][0] == 0.0


def test_missing_ray_is_a_clear_error(monkeypatch, tiny_model_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    spec = TaskSpec("token_losses", tiny_model_path, {"dtype": "float32", "keep_loaded": True})
    with pytest.raises(CurateError, match=r"pip install 'curate\[ray\]'"):
        list(run_batches([(["k"], [[1, 2]])], spec=spec, engine=Engine("ray")))


def test_injected_generator_is_refused_under_ray(tmp_path, tiny_model_path):
    class Custom(HFGenerator):
        pass

    v = save([{"id": "q", "prompt": [{"role": "user", "content": "hi"}], "answer": "x"}], name="p", store=tmp_path)
    config = RolloutConfig(n=1, model=tiny_model_path, max_tokens=2, reward="exact", **RAY)
    with pytest.raises(CurateError, match="drop the injected one"):
        generate_rollouts(v, config, store=v.store, generator=Custom(tiny_model_path))
    # The plain generator the config describes is fine (DifficultySelector passes one): the workers build the same.
    out = generate_rollouts(v, config, store=v.store, generator=HFGenerator(tiny_model_path))
    assert out.column("id").to_pylist() == ["q-0"]


def test_bad_engine_settings():
    with pytest.raises(CurateError, match="--engine 'spark'"):
        Engine("spark")
    with pytest.raises(CurateError, match="--num-workers"):
        Engine("ray", num_workers=0)
    with pytest.raises(CurateError, match="--gpus-per-worker"):
        Engine("ray", gpus_per_worker=-1)
    with pytest.raises(CurateError, match="need --engine ray"):
        Engine("local", num_workers=4)
    with pytest.raises(CurateError, match="unknown task kind"):
        TaskSpec("embed", "m")
    with pytest.raises(CurateError, match="--engine"):
        RolloutConfig(engine="dask")
    with pytest.raises(CurateError, match="not an in-process function"):
        list(run_batches([(["k"], [1])], engine=Engine("ray"), fn=lambda xs: xs))
