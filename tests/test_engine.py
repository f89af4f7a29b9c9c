"""The map engines (curate/engine.py): Ray and local give identical features, token losses, rollouts and Condor
LLM calls, share one cache (a half-done Ray run resumes locally with only the rest computed, and the other way
round), and reject bad settings."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

import curate
import curate.train
from curate.embeddings import _embed_batch
from curate.engine import Engine, TaskSpec, Worker, run_batches
from curate.errors import CurateError
from curate.generation import HFGenerator, _generate_batch
from curate.ops import save
from curate.rollouts import RolloutConfig, generate_rollouts
from curate.scoring import _features_batch, _token_losses_batch, extract_features, token_losses
from curate.store import Store
from curate.synthesizers.condor import CondorConfig, synth_condor
from curate.synthesizers.tree import save_tree
from tests.openai_server import OpenAIServer
from tests.test_condor import CHESS, HARD, SOUR, TWO_TAGS, ScriptedGenerator

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
    remote = generate_rollouts(b, RolloutConfig(**base, run=Engine(**RAY)), store=b.store)
    assert local.num_rows == 10
    assert remote.to_pylist() == local.to_pylist()
    assert len(set(local.column("completion").to_pylist())) > 1  # sampled, not all empty or equal
    # One cache key for both engines (the workers' dtype is pinned in the identity): Ray finds all of a's done.
    shards = sorted((a.store.root / "cache" / "rollouts").rglob("shard-*.parquet"))
    again = generate_rollouts(a, RolloutConfig(**base, run=Engine(**RAY)), store=a.store)
    assert again.to_pylist() == local.to_pylist()
    assert sorted((a.store.root / "cache" / "rollouts").rglob("shard-*.parquet")) == shards


def test_worker_runs_the_same_code_in_process(tiny_model_path):
    spec = TaskSpec(_token_losses_batch, tiny_model_path, {"dtype": "float32", "keep_loaded": True})
    got = dict(run_batches([(["x", "y"], [[1, 2, 3], [4, 5]])], spec=spec))
    direct = Worker(spec).run([[1, 2, 3], [4, 5]])
    assert list(got) == ["x", "y"]
    np.testing.assert_array_equal(got["x"], direct[0])
    assert got["y"].shape == (2,) and got["y"][0] == 0.0


def _short_batch(state, spec, batch):
    """A batch function that loses one result: a module-level function, as a TaskSpec needs."""
    state["calls"] = state.get("calls", 0) + 1
    return batch[:-1]


def test_task_spec_takes_a_module_level_function():
    # The labels in messages are the task names the engine used before it took functions.
    shipped = [_features_batch, _token_losses_batch, _generate_batch, _embed_batch]
    assert [TaskSpec(fn, "m").label for fn in shipped] == ["features", "token_losses", "generate", "embed"]
    spec = TaskSpec(_short_batch, "m", {"x": 1})
    assert spec.label == "short"
    assert spec.fn is _short_batch
    worker = Worker(spec)
    with pytest.raises(CurateError, match=r"^short: batch function returned 1 results for 2$"):
        worker.run([1, 2])
    assert worker.state == {"calls": 1}  # the worker's state goes to the function and stays with the worker

    def local(state, spec, batch):
        return batch

    for fn in (local, lambda state, spec, batch: batch, "token_losses"):
        with pytest.raises(CurateError, match="is not a module-level function"):
            TaskSpec(fn, "m")


def test_missing_ray_is_a_clear_error(monkeypatch, tiny_model_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    spec = TaskSpec(_token_losses_batch, tiny_model_path, {"dtype": "float32", "keep_loaded": True})
    with pytest.raises(CurateError, match=r"pip install 'curate\[ray\]'"):
        list(run_batches([(["k"], [[1, 2]])], spec=spec, engine=Engine("ray")))


def test_injected_generator_is_refused_under_ray(tmp_path, tiny_model_path):
    class Custom(HFGenerator):
        pass

    v = save([{"id": "q", "prompt": [{"role": "user", "content": "hi"}], "answer": "x"}], name="p", store=tmp_path)
    config = RolloutConfig(n=1, model=tiny_model_path, max_tokens=2, reward="exact", run=Engine(**RAY))
    with pytest.raises(CurateError, match="drop the injected one"):
        generate_rollouts(v, config, store=v.store, generator=Custom(tiny_model_path))
    # The plain generator the config describes is fine (DifficultySelector passes one): the workers build the same.
    out = generate_rollouts(v, config, store=v.store, generator=HFGenerator(tiny_model_path))
    assert out.column("id").to_pylist() == ["q-0"]


# ================================================================================================ Condor
class CritiquesFail(OpenAIServer):
    """The scripted server, except that critique requests whose prompt contains ``refuse`` are refused (400, not
    retried; ``""`` refuses every critique, ``None`` none): a run that dies at its critiques."""

    refuse: str | None = ""

    def _handle(self, body):
        content = body["messages"][-1]["content"]
        if self.refuse is not None and "[Critique Start]" in content and self.refuse in content:
            with self._lock:
                self.requests.append(body)
            return 400, {"error": {"message": "refused", "type": "invalid_request_error"}}, {}
        return super()._handle(body)


def condor_kw(tmp_path, base_url: str) -> dict:
    # batch 2: the 6 answers, critiques and refines are three batches each, spread over both workers
    tree = str(save_tree(TWO_TAGS, tmp_path / "two.yaml"))
    return {
        "tree": tree,
        "tasks": ("domain_qa",),
        "backend": "openai",
        "base_url": base_url,
        "model": "scripted-7b",
        "temperature": 0.0,
        "max_tokens": 64,
        "batch_size": 2,
    }


def llm_stats(v) -> dict:
    return {stage: st["generated"] for stage, st in v.manifest["stats"]["llm"].items()}


def test_condor_identical_under_ray_and_local_and_a_killed_ray_run_resumes_locally(tmp_path):
    with OpenAIServer(ScriptedGenerator()) as server:
        kw = condor_kw(tmp_path, server.base_url)
        local = synth_condor(name="cd", store=tmp_path / "local", **kw)
        n_local = len(server.requests)
        remote = synth_condor(name="cd", store=tmp_path / "ray", **kw, **RAY)
        assert len(server.requests) - n_local == n_local == 2 + 6 + 6 + 6  # every stage, once, from the workers
        assert llm_stats(remote) == {"questions": 2, "answers": 6, "critiques": 6, "refines": 6}
    # The engine is not part of the recipe: same version id, same rows, same decisions.
    assert remote.id == local.id
    rows = local.to_pylist()
    assert [(tuple(r["tag_path"]), r["difficulty"]) for r in rows] == [
        (path, d) for path in (SOUR, CHESS) for d in ("easy", "medium", "hard")
    ]
    assert all(r["response_refined"] == f"Improved: {r['question']}" for r in rows)
    assert remote.to_pylist() == rows
    assert remote.decisions().to_pylist() == local.decisions().to_pylist()

    # A Ray run that dies at its critiques keeps its questions and answers; a local run finishes the rest.
    # (The same server throughout: its URL is part of the generator identity, so of the cache key.)
    store = Store(tmp_path / "resumed")
    with CritiquesFail(ScriptedGenerator()) as server:
        kw = condor_kw(tmp_path, server.base_url)
        with pytest.raises(CurateError, match=r"^generate on a Ray worker: .*refused") as failed:
            synth_condor(name="cd", store=store, **kw, **RAY)
        assert "\n" not in str(failed.value)  # one line, not Ray's traceback
        assert store.datasets() == []
        server.refuse = None
        resumed = synth_condor(name="cd", store=store, **kw)
    assert llm_stats(resumed) == {"questions": 0, "answers": 0, "critiques": 6, "refines": 6}
    assert resumed.to_pylist() == rows


def test_condor_local_run_killed_mid_stage_resumes_on_ray(tmp_path):
    # Critiques run in three batches of two, in candidate order; refusing the last question's critique kills the
    # local run in its third batch, after two batches (four critiques) were cached. Ray then does only the rest.
    store = Store(tmp_path / "s")
    with CritiquesFail(ScriptedGenerator()) as server:
        server.refuse = HARD.format(tag="Chess Openings")
        kw = condor_kw(tmp_path, server.base_url)
        with pytest.raises(CurateError, match="refused"):
            synth_condor(name="cd", store=store, **kw)
        assert store.datasets() == []
        server.refuse = None
        resumed = synth_condor(name="cd", store=store, **kw, **RAY)
    assert llm_stats(resumed) == {"questions": 0, "answers": 0, "critiques": 2, "refines": 6}
    st = resumed.manifest["stats"]["llm"]["critiques"]
    assert st == {"prompts": 6, "cached": 4, "generated": 2, "truncated": 0}
    assert len(resumed) == 6 and all(r["response_refined"].startswith("Improved: ") for r in resumed.to_pylist())


def test_condor_refuses_a_substituted_generator_under_ray(tmp_path, monkeypatch):
    import curate.generation

    # Ray workers build the generator from the config; one swapped in on the driver would not be what runs there.
    monkeypatch.setattr(curate.generation, "make_generator", lambda backend, model, **kw: ScriptedGenerator())
    tree = str(save_tree(TWO_TAGS, tmp_path / "two.yaml"))
    with pytest.raises(CurateError, match="drop the injected one"):
        synth_condor(name="cd", store=tmp_path / "s", tree=tree, **RAY)
    assert Store(tmp_path / "s").datasets() == []


def llm_cache(store_root) -> dict[str, dict]:
    """Every cached LLM reply of a store, by key."""
    rows = {}
    for shard in sorted((store_root / "cache" / "llm").rglob("shard-*.parquet")):
        rows.update({r["key"]: r for r in pq.read_table(shard).to_pylist()})
    return rows


def test_condor_sampling_on_a_model_identical_under_ray_and_local(tmp_path, tiny_model_path):
    # The tiny random model writes noise, so little survives parsing: what is compared is every sampled reply
    # (seeded, temperature 0.7) and every decision. 2 tags x 2 tasks x 2 samples; two prompts of different
    # lengths per batch (left padding inside a batch), one batch per worker.
    tree = str(save_tree(TWO_TAGS, tmp_path / "two.yaml"))
    kw = {
        "tree": tree,
        "model": tiny_model_path,
        "tasks": ("daily_chat", "creation"),
        "per_tag": 2,
        "max_tokens": 12,
        "batch_size": 2,
        "seed": 3,
        "lenient": True,
    }
    local = synth_condor(name="cd", store=tmp_path / "local", **kw)
    remote = synth_condor(name="cd", store=tmp_path / "ray", **kw, **RAY)
    assert remote.id == local.id
    assert remote.decisions().to_pylist() == local.decisions().to_pylist()
    assert remote.to_pylist() == local.to_pylist()
    a, b = llm_cache(tmp_path / "local"), llm_cache(tmp_path / "ray")
    assert len(a) >= 4 and a == b
    texts = [t for r in a.values() for t in r["texts"]]
    assert len(set(texts)) == len(texts)  # sampled: every reply differs


def test_condor_engine_settings_stay_out_of_the_recipe():
    ray = CondorConfig(run=Engine("ray", num_workers=4, gpus_per_worker=1))
    assert ray.recipe() == CondorConfig().recipe()
    with pytest.raises(CurateError, match="--engine 'dask'"):
        synth_condor(name="x", engine="dask")
    with pytest.raises(CurateError, match="need --engine ray"):
        synth_condor(name="x", num_workers=2)


def test_bad_engine_settings():
    with pytest.raises(CurateError, match="--engine 'spark'"):
        Engine("spark")
    with pytest.raises(CurateError, match="--num-workers"):
        Engine("ray", num_workers=0)
    with pytest.raises(CurateError, match="--gpus-per-worker"):
        Engine("ray", gpus_per_worker=-1)
    with pytest.raises(CurateError, match="need --engine ray"):
        Engine("local", num_workers=4)
    with pytest.raises(CurateError, match="--engine"):
        curate.rollout("x", engine="dask")
    with pytest.raises(CurateError, match="not an in-process function"):
        list(run_batches([(["k"], [1])], engine=Engine("ray"), fn=lambda xs: xs))


def test_compare_runs_arms_on_ray_with_the_local_results_and_one_cache(tmp_path, tiny_model_path, one_thread):
    """Each (arm, seed) run trains and scores on a Ray worker; the numbers, the version id and the metrics cache are
    the local engine's, so a compare finished on Ray is free locally and the other way round."""
    runs = {"epochs": 1, "max_steps": 1, "batch_size": 2, "max_len": 96, "model": tiny_model_path}
    kw = {"eval_ref": "heldout", "arms": ("length", "random", "base"), "budget": 3, "seeds": 1, **runs}
    versions = {}
    for engine, where in (({}, "local"), (RAY, "ray")):
        store = Store(tmp_path / where)
        curate.sample("sample-sft", n=10, name="pool", store=store)
        curate.sample("sample-sft", n=3, seed=7, name="heldout", store=store)
        versions[where] = curate.compare("pool", name="cmp", store=store, **kw, **engine)
    local, remote = (versions[w].to_pylist() for w in ("local", "ray"))
    assert versions["local"].id == versions["ray"].id  # the engine never enters the recipe
    assert [(r["arm"], r["seed"], r["trained_tokens"]) for r in local] == [
        (r["arm"], r["seed"], r["trained_tokens"]) for r in remote
    ]
    for a, b in zip(local, remote, strict=True):
        assert a["row_counts"] == b["row_counts"]
        np.testing.assert_allclose(a["row_sums"], b["row_sums"], rtol=1e-5)
        assert b["train_s"] is not None and b["score_s"] is not None
    # the Ray run filled the cache: the same compare under another name, locally, trains nothing
    calls = []
    real = curate.train.TRAINERS["sft"]
    counting = curate.train.Trainer(real.config, lambda *a, **k: calls.append(1) or real.run(*a, **k))
    try:
        curate.train.TRAINERS["sft"] = counting
        again = curate.compare("pool", name="cmp2", store=tmp_path / "ray", **kw)
    finally:
        curate.train.TRAINERS["sft"] = real
    assert calls == [] and [r["row_sums"] for r in again.to_pylist()] == [r["row_sums"] for r in remote]
