"""Rollouts: long format, caching (a re-run generates nothing), resume after a kill, errors before generation,
NaN rewards, per-prompt stats, and one run of the real embedded model."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from curate.errors import CurateError
from curate.generation import HFGenerator, Sampling
from curate.ops import save
from curate.rollouts import RolloutConfig, generate_rollouts, prompt_stats, rollout

N = 3
MAX_TOKENS = 6  # shrunk: the rollout machinery is under test, not the text; 6 tokens keep each batch ~0.1 s
COLUMNS = [
    "id",
    "prompt_id",
    "sample",
    "prompt",
    "answer",
    "data_source",
    "completion",
    "reward",
    "completion_tokens",
    "prompt_tokens",
    "finish_reason",
    "level",
    "pass_rate",
    "reward_mean",
    "reward_std",
]


class CountingGenerator(HFGenerator):
    """An ``hf`` generator (same identity, so the same cache) that records its calls and can die mid-run."""

    def __init__(self, *args, fail_on_call: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.prompts_generated = 0

    def generate(self, prompts, *, n, sampling):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("killed")  # stands in for a crash or Ctrl-C mid-run
        self.prompts_generated += len(prompts)
        return super().generate(prompts, n=n, sampling=sampling)


def length_parity(completion: str, answer: str | None, **row) -> float:
    """A user reward with both outcomes on random text (the tiny model never gets math right)."""
    return float(len(completion) % 2)


def nan_on_q3(completion: str, answer: str | None, **row) -> float:
    return math.nan if row["id"] == "q3" else 1.0


def _prompts(with_answer: bool = True) -> list[dict]:
    rows = []
    for i in range(5):
        row = {
            "id": f"q{i}",
            "prompt": [{"role": "user", "content": f"What is {i} + {i}? " + "Think. " * i}],
            "data_source": "toy",
            "level": i % 3,
        }
        if with_answer:
            row["answer"] = str(2 * i)
        rows.append(row)
    return rows


@pytest.fixture
def prompts(store):
    return save(_prompts(), name="toy", store=store)


def _config(path: str, **kw) -> RolloutConfig:
    # batch_size 2: five prompts make three batches, so a kill after the first leaves work to resume
    return RolloutConfig(**{"n": N, "model": path, "max_tokens": MAX_TOKENS, "batch_size": 2, **kw})


def test_rollout_long_format_with_stats(store, prompts, tiny_model_path):
    gen = CountingGenerator(tiny_model_path, batch_size=2)
    v = rollout(prompts, _config(tiny_model_path), store=store, generator=gen)
    t = v.to_arrow()
    assert v.name == "toy-rollouts" and t.num_rows == 15 and t.column_names == COLUMNS
    rows = t.to_pylist()
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(f"q{i}", j) for i in range(5) for j in range(N)]
    assert [r["id"] for r in rows[:3]] == ["q0-0", "q0-1", "q0-2"]
    assert t.schema.field("reward").type == pa.float64() and t.schema.field("completion_tokens").type == pa.int64()
    src = {r["id"]: r for r in prompts.to_pylist()}
    for r in rows:
        p = src[r["prompt_id"]]
        assert r["prompt"] == p["prompt"] and r["answer"] == p["answer"] and r["level"] == p["level"]
        assert r["reward"] in (0.0, 1.0)  # math reward on random text
        assert 1 <= r["completion_tokens"] <= MAX_TOKENS and r["prompt_tokens"] > 10
        assert r["finish_reason"] in ("stop", "length")
    assert gen.calls == 3 and gen.prompts_generated == 5
    assert v.op["generator"]["backend"] == "hf" and "batch_size" not in v.op["config"]
    stats = v.manifest["stats"]
    assert stats["rows"] == 15 and stats["prompts"] == 5 and sum(stats["pass_rate_histogram"]["counts"]) == 5


def test_per_prompt_stats_joined_and_summarised(store, prompts, tiny_model_path):
    v = rollout(prompts, _config(tiny_model_path, reward="tests.test_rollout:length_parity"), store=store)
    t = v.to_arrow().to_pylist()
    rewards = {}
    for r in t:
        assert r["reward"] == float(len(r["completion"]) % 2)
        rewards.setdefault(r["prompt_id"], []).append(r["reward"])
    for r in t:
        mine = np.array(rewards[r["prompt_id"]])
        assert r["pass_rate"] == pytest.approx(np.mean(mine > 0.5))
        assert r["reward_mean"] == pytest.approx(mine.mean()) and r["reward_std"] == pytest.approx(mine.std())
    rates = [np.mean(np.array(x) > 0.5) for x in rewards.values()]
    assert v.manifest["stats"]["mean_pass_rate"] == pytest.approx(np.mean(rates))
    assert (
        v.manifest["stats"]["pass_rate_histogram"]["counts"] == np.histogram(rates, np.linspace(0, 1, 11))[0].tolist()
    )


def test_prompt_stats_golden():
    t = pa.table({"prompt_id": ["b", "a", "b", "a", "b"], "reward": [1.1, 0.0, 0.1, 0.5, 1.0]})
    s = prompt_stats(t).to_pylist()
    assert [r["prompt_id"] for r in s] == ["b", "a"]  # first appearance
    assert s[0]["n_rollouts"] == 3 and s[0]["pass_rate"] == pytest.approx(2 / 3)  # graded: > 0.5 passes
    assert s[0]["reward_mean"] == pytest.approx(2.2 / 3) and s[0]["reward_std"] == pytest.approx(
        np.std([1.1, 0.1, 1.0])
    )
    assert s[1]["pass_rate"] == 0.0 and s[1]["reward_std"] == pytest.approx(0.25)  # 0.5 is not > 0.5; ddof=0


def test_second_run_generates_nothing(store, prompts, tiny_model_path):
    first = rollout(prompts, _config(tiny_model_path), store=store)
    gen = CountingGenerator(tiny_model_path, batch_size=2)
    assert rollout(prompts, _config(tiny_model_path), store=store, generator=gen).id == first.id
    # Below the store lookup too: the completion cache answers, and a new reward only rescores.
    again = generate_rollouts(prompts, _config(tiny_model_path), store=store, generator=gen)
    assert again.column("completion").to_pylist() == first.to_arrow().column("completion").to_pylist()
    other = rollout(prompts, _config(tiny_model_path, reward="contains"), store=store, generator=gen)
    assert other.id != first.id and gen.calls == 0
    # Sampling settings are in the cache key: another seed generates.
    rollout(prompts, _config(tiny_model_path, seed=1), store=store, generator=gen)
    assert gen.prompts_generated == 5


def test_killed_run_resumes_without_regenerating(store, prompts, tiny_model_path, tmp_path):
    from curate.store import Store

    dying = CountingGenerator(tiny_model_path, batch_size=2, fail_on_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        rollout(prompts, _config(tiny_model_path), store=store, generator=dying)
    assert dying.prompts_generated == 2 and store.datasets() == ["toy"]  # one batch done, nothing committed
    resumed = CountingGenerator(tiny_model_path, batch_size=2)
    v = rollout(prompts, _config(tiny_model_path), store=store, generator=resumed)
    assert resumed.prompts_generated == 3 and len(v) == 15  # only the rest
    # Per-(prompt, sample) seeds: the resumed run equals one that was never interrupted.
    clean_store = Store(tmp_path / "clean")
    clean = rollout(save(_prompts(), name="toy", store=clean_store), _config(tiny_model_path), store=clean_store)
    assert v.id == clean.id
    assert v.to_arrow().column("completion").to_pylist() == clean.to_arrow().column("completion").to_pylist()


def test_missing_answer_fails_before_generation(store, tiny_model_path):
    v = save(_prompts(with_answer=False), name="noans", store=store)
    gen = CountingGenerator(tiny_model_path)
    with pytest.raises(CurateError, match=r"noans@v1: row 'q0': field 'answer': missing, and reward 'math' needs"):
        rollout(v, _config(tiny_model_path), store=store, generator=gen)
    assert gen.calls == 0 and store.datasets() == ["noans"]
    assert not (store.root / "cache" / "rollouts").exists()
    # A user reward that does not declare needs_answer runs without one.
    ok = rollout(v, _config(tiny_model_path, reward="tests.test_rollout:length_parity"), store=store)
    assert len(ok) == 15 and ok.to_arrow().column("answer").null_count == 15


def test_nan_reward_fails_and_writes_nothing(store, prompts, tiny_model_path):
    with pytest.raises(
        CurateError, match=r"prompt id 'q3' sample 0: reward 'tests.test_rollout:nan_on_q3' returned nan"
    ):
        rollout(prompts, _config(tiny_model_path, reward="tests.test_rollout:nan_on_q3"), store=store)
    assert store.datasets() == ["toy"]


def test_bad_input_and_config_errors(store, tiny_model_path):
    with pytest.raises(CurateError, match="--n must be an integer >= 1"):
        RolloutConfig(n=0)
    with pytest.raises(CurateError, match=r"--backend 'tgi': unknown backend \(available: hf, vllm, openai, llamacpp"):
        RolloutConfig(backend="tgi")
    with pytest.raises(CurateError, match="--base-url applies to --backend openai only"):
        RolloutConfig(base_url="http://localhost:8000/v1")
    with pytest.raises(CurateError, match="unknown reward .*math, exact, contains"):
        RolloutConfig(reward="mathh")
    with pytest.raises(CurateError, match="--top-p"):
        RolloutConfig(top_p=1.5)
    sft = save(
        [{"id": "a", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}],
        name="sft",
        store=store,
    )
    with pytest.raises(CurateError, match="sft@v1: field 'prompt': missing"):
        rollout(sft, _config(tiny_model_path), store=store)
    with pytest.raises(CurateError, match="unknown option 'temp'"):
        rollout(sft, store=store, temp=0.5)


def test_rollout_through_the_openai_backend(store, prompts, tiny_model_path):
    from tests.openai_server import OpenAIServer

    with OpenAIServer(HFGenerator(tiny_model_path)) as server:
        v = rollout(
            prompts,
            n=2,
            max_tokens=MAX_TOKENS,
            backend="openai",
            base_url=server.base_url,
            model="tiny",
            concurrency=2,
            store=store,
        )
    assert len(v) == 10 and len(server.requests) == 5 and v.op["generator"]["backend"] == "openai"
    assert all(r["completion_tokens"] >= 1 for r in v.to_pylist())


@pytest.mark.slow
def test_real_model_rollout_rewards_are_binary(store):
    from curate.ops import sample

    v = sample("sample-math", n=4, store=store)  # four prompts: the embedded model runs ~200 tokens/s here
    out = rollout(v, n=2, max_tokens=64, store=store, name="math-rollouts")
    t = out.to_arrow()
    assert t.num_rows == 8 and set(t.column("reward").to_pylist()) <= {0.0, 1.0}
    assert all(1 <= k <= 64 for k in t.column("completion_tokens").to_pylist())
    assert all(len(c) > 0 for c in t.column("completion").to_pylist())
    assert Sampling().max_tokens == 256  # the default the slow run overrides
