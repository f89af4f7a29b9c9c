"""Generation backends: hf on a tiny model (shapes, seeds, greedy, padding), vllm's missing-install error, and the
openai backend against a real local HTTP server (retries, Retry-After, fallbacks, concurrency)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from curate.errors import CurateError
from curate.generation import (
    GENERATORS,
    Completion,
    HFGenerator,
    OpenAIGenerator,
    Sampling,
    make_generator,
)
from tests.openai_server import OpenAIServer, save_sharp_tiny_model

# Prompts of different lengths, so batches need padding (short on purpose: the tiny model is byte-level).
PROMPTS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about cats and dogs."}],
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": "Count to five, slowly."}],
]
MAX_TOKENS = 12  # shrunk: enough tokens to tell outputs apart, ~10 ms per step on the tiny model


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    return save_sharp_tiny_model(tmp_path_factory.mktemp("sharp") / "model")


def _manual_greedy(path: str, messages, max_tokens: int) -> list[int]:
    """Greedy decoding by hand: full forward pass per step, argmax, stop after the end-of-turn token."""
    from curate.chat import prompt_ids
    from curate.models import load_causal_lm

    model, tok = load_causal_lm(path)
    ids = prompt_ids(tok, messages)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
            if out[-1] == tok.eos_token_id:
                break
    return out


# --------------------------------------------------------------------------------------------------- hf


def test_hf_returns_n_completions_per_prompt(sharp_model):
    from curate.chat import prompt_ids
    from curate.models import load_tokenizer

    g = HFGenerator(sharp_model, batch_size=2)
    out = g.generate(PROMPTS, n=3, sampling=Sampling(max_tokens=MAX_TOKENS, seed=1))
    assert len(out) == len(PROMPTS) and all(len(o) == 3 for o in out)
    tok = load_tokenizer(sharp_model)
    for prompt, completions in zip(PROMPTS, out, strict=True):
        for c in completions:
            assert isinstance(c, Completion) and isinstance(c.text, str)
            assert 1 <= c.tokens <= MAX_TOKENS
            assert c.finish_reason == ("length" if c.tokens == MAX_TOKENS else "stop")
            assert c.prompt_tokens == len(prompt_ids(tok, prompt))
        assert len({c.text for c in completions}) > 1  # sampling: the n samples differ
    assert g.completions_generated == 15
    assert g.generate([], n=2, sampling=Sampling()) == []


def test_hf_same_seed_same_outputs_and_independent_of_batching(sharp_model):
    s = Sampling(max_tokens=MAX_TOKENS, seed=7, top_p=0.9)
    a = HFGenerator(sharp_model, batch_size=4).generate(PROMPTS, n=2, sampling=s)
    b = HFGenerator(sharp_model, batch_size=4).generate(PROMPTS, n=2, sampling=s)
    assert a == b
    # Per-(prompt, sample) seeds: one at a time, in reverse order, gives the same completions.
    c = HFGenerator(sharp_model, batch_size=1).generate(PROMPTS[::-1], n=2, sampling=s)[::-1]
    assert [[x.text for x in o] for o in c] == [[x.text for x in o] for o in a]
    d = HFGenerator(sharp_model, batch_size=4).generate(PROMPTS, n=2, sampling=Sampling(max_tokens=MAX_TOKENS, seed=8))
    assert [[x.text for x in o] for o in d] != [[x.text for x in o] for o in a]


def test_hf_greedy_equals_manual_greedy_decode(sharp_model):
    from curate.models import load_tokenizer

    tok = load_tokenizer(sharp_model)
    out = HFGenerator(sharp_model).generate(PROMPTS[1:2], n=2, sampling=Sampling(temperature=0, max_tokens=MAX_TOKENS))
    manual = _manual_greedy(sharp_model, PROMPTS[1], MAX_TOKENS)
    assert out[0][0] == out[0][1]  # greedy: every sample is the same
    assert out[0][0].text == tok.decode(manual, skip_special_tokens=True)
    assert out[0][0].tokens == len(manual)


def test_hf_left_padded_batch_equals_one_at_a_time(sharp_model):
    s = Sampling(temperature=0, max_tokens=MAX_TOKENS)
    batched = HFGenerator(sharp_model, batch_size=len(PROMPTS)).generate(PROMPTS, n=1, sampling=s)
    single = HFGenerator(sharp_model, batch_size=1).generate(PROMPTS, n=1, sampling=s)
    assert batched == single
    assert len({o[0].text for o in batched}) == len(PROMPTS)  # outputs depend on the prompt: the test has teeth


def test_hf_ignores_the_checkpoints_generation_config(sharp_model):
    from curate.models import load_causal_lm

    s = Sampling(temperature=0, max_tokens=MAX_TOKENS)
    g = HFGenerator(sharp_model, batch_size=5)
    before = g.generate(PROMPTS, n=1, sampling=s)
    model, _ = load_causal_lm(sharp_model)  # the shared cached model HFGenerator uses
    saved = model.generation_config
    try:
        model.generation_config = saved.__class__.from_dict(
            {
                **saved.to_dict(),
                "repetition_penalty": 5.0,
                "no_repeat_ngram_size": 2,
                "min_new_tokens": 10,
                "suppress_tokens": list(range(3, 40)),
                "do_sample": True,
                "temperature": 0.1,
            }
        )
        after = g.generate(PROMPTS, n=1, sampling=s)
    finally:
        model.generation_config = saved
    assert after == before


def test_hf_tiny_top_p_is_greedy_and_stop_strings_cut(sharp_model):
    g = HFGenerator(sharp_model, batch_size=5)
    greedy = g.generate(PROMPTS, n=1, sampling=Sampling(temperature=0, max_tokens=MAX_TOKENS))
    nucleus = g.generate(PROMPTS, n=1, sampling=Sampling(temperature=1.0, top_p=1e-6, max_tokens=MAX_TOKENS))
    assert [o[0].text for o in nucleus] == [o[0].text for o in greedy]
    # Stop at the third character of a greedy completion: the text ends right before it.
    full = greedy[2][0].text
    stop = full[2]
    cut = g.generate(PROMPTS[2:3], n=1, sampling=Sampling(temperature=0, max_tokens=MAX_TOKENS, stop=[stop]))
    assert cut[0][0].text == full[: full.index(stop)]
    assert cut[0][0].finish_reason == "stop"


def test_sampling_and_registry_errors():
    assert set(GENERATORS) == {"hf", "vllm", "openai", "llamacpp"}
    with pytest.raises(
        CurateError, match=r"--backend .nope.: unknown backend \(available: hf, vllm, openai, llamacpp"
    ):
        make_generator("nope", "m")
    with pytest.raises(CurateError, match="backend hf does not take option 'base_url'"):
        make_generator("hf", "m", base_url="http://x")
    with pytest.raises(CurateError, match="--top-p"):
        Sampling(top_p=0)
    with pytest.raises(CurateError, match="--temperature"):
        Sampling(temperature=-1)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_is_a_clear_error(tiny_model_path):
    # Only generating needs vllm: the identity (all a cached run or a Ray driver asks for) does not.
    g = make_generator("vllm", tiny_model_path)
    assert g.identity()["backend"] == "vllm"
    with pytest.raises(CurateError, match=r"backend vllm needs `pip install curate\[vllm\]`"):
        g.generate([[{"role": "user", "content": "hi"}]], n=1, sampling=Sampling())


# ------------------------------------------------------------------------------------------------ openai


def _client(server: OpenAIServer, **kw) -> OpenAIGenerator:
    # Shrunk backoff: a retry test must not sleep for seconds; Retry-After tests set it high on purpose.
    kw.setdefault("backoff", 0.001)
    return OpenAIGenerator("tiny", base_url=server.base_url, api_key="test", **kw)


def test_openai_round_trip_against_a_real_server(sharp_model):
    with OpenAIServer(HFGenerator(sharp_model)) as server:
        g = _client(server)
        s = Sampling(max_tokens=MAX_TOKENS, seed=3)
        out = g.generate(PROMPTS[:3], n=3, sampling=s)
        again = g.generate(PROMPTS[:3], n=3, sampling=s)
    assert len(out) == 3 and all(len(o) == 3 for o in out)
    assert out == again  # the request seed is derived from (seed, prompt): same call, same answer
    assert len(server.requests) == 6 and all(r["n"] == 3 and r["max_tokens"] == MAX_TOKENS for r in server.requests)
    # chat messages, not token ids: the server applies its own chat template
    assert sorted(map(repr, (r["messages"] for r in server.requests[:3]))) == sorted(map(repr, PROMPTS[:3]))
    for o in out:
        assert all(c.finish_reason in ("stop", "length") and c.prompt_tokens > 0 for c in o)
        assert sum(c.tokens for c in o) <= 3 * MAX_TOKENS
    assert g.identity() == {"backend": "openai", "model": "tiny", "base_url": server.base_url}


def test_openai_retries_429_honouring_retry_after(sharp_model):
    fail = [(429, {"Retry-After": "0"}), (429, {"Retry-After": "2"})]
    with OpenAIServer(HFGenerator(sharp_model), fail=fail) as server:
        g = _client(server, backoff=10.0)  # a backoff of 10 s would show up in the waits if Retry-After were ignored
        waits: list[float] = []
        g._sleep = waits.append
        out = g.generate(PROMPTS[:1], n=2, sampling=Sampling(max_tokens=MAX_TOKENS))
    assert len(out[0]) == 2
    assert server.statuses == [429, 429, 200]
    assert waits == [0.0, 2.0]


def test_openai_retries_500_then_succeeds(sharp_model):
    with OpenAIServer(HFGenerator(sharp_model), fail=[(500, {}), (503, {})]) as server:
        out = _client(server).generate(PROMPTS[:1], n=1, sampling=Sampling(max_tokens=MAX_TOKENS))
    assert len(out[0]) == 1 and server.statuses == [500, 503, 200]


def test_openai_always_500_gives_clear_error_after_retry_cap(sharp_model):
    with OpenAIServer(HFGenerator(sharp_model), always_fail=500) as server:
        g = _client(server, max_retries=3, backoff=1.0, max_backoff=2.5)
        waits: list[float] = []
        g._sleep = waits.append
        with pytest.raises(CurateError, match=r"chat/completions: failed after 4 attempts, last HTTP 500"):
            g.generate(PROMPTS[:1], n=1, sampling=Sampling(max_tokens=MAX_TOKENS))
    assert server.statuses == [500] * 4
    # exponential backoff with jitter in [0.5, 1.5) x backoff * 2**attempt, capped at max_backoff
    assert len(waits) == 3 and 0.5 <= waits[0] < 1.5 and 1.0 <= waits[1] <= 2.5 and 2.0 <= waits[2] <= 2.5


def test_openai_client_errors_are_not_retried(sharp_model):
    with (
        OpenAIServer(HFGenerator(sharp_model), fail=[(400, {})]) as server,
        pytest.raises(CurateError, match="HTTP 400"),
    ):
        _client(server).generate(PROMPTS[:1], n=1, sampling=Sampling(max_tokens=MAX_TOKENS))
    assert server.statuses == [400]


def test_openai_falls_back_to_single_requests_when_server_caps_n(sharp_model):
    with OpenAIServer(HFGenerator(sharp_model), max_n=1) as server:
        out = _client(server).generate(PROMPTS[:2], n=3, sampling=Sampling(max_tokens=MAX_TOKENS))
    assert [len(o) for o in out] == [3, 3]
    assert len(server.requests) == 6  # 1 request asking for n=3 + 2 single ones, per prompt
    assert sorted(r["n"] for r in server.requests) == [1, 1, 1, 1, 3, 3]
    assert len({c.text for c in out[0]}) == 3  # each follow-up carries its own seed: different samples


def test_openai_concurrency_limit_is_respected(sharp_model):
    prompts = PROMPTS * 2  # 10 requests
    # delay: each request stays in flight long enough for the next ones to overlap it
    with OpenAIServer(HFGenerator(sharp_model), delay=0.15) as server:
        _client(server, concurrency=3).generate(prompts, n=1, sampling=Sampling(max_tokens=4))
    assert len(server.requests) == 10
    assert server.max_in_flight == 3


def test_openai_needs_a_key_or_base_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CURATE_API_KEY", raising=False)
    with pytest.raises(CurateError, match="set OPENAI_API_KEY"):
        OpenAIGenerator("gpt-x")
    monkeypatch.setenv("CURATE_API_KEY", "k")
    assert OpenAIGenerator("gpt-x").client.api_key == "k"


def test_vllm_engine_starts_on_first_generate_only(monkeypatch, tiny_model_path):
    # vllm is not installed here: a stand-in module records engine starts. What is under test is curate's side:
    # identity() (what the cache key and the driver of an --engine ray run need) never starts an engine.
    import types

    started = []
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kw: started.append(kw) or "engine"
    monkeypatch.setitem(sys.modules, "vllm", fake)
    g = make_generator("vllm", tiny_model_path, dtype="float32")
    assert g.identity()["backend"] == "vllm" and started == []
    assert g.llm == "engine" and g.llm == "engine"  # built once, on first use
    assert len(started) == 1 and started[0]["dtype"] == "float32" and started[0]["model"] == tiny_model_path


def test_hf_identity_names_the_dtype_it_computes_in(tiny_model_path):
    # fp32 and bf16 sample differently, so the cache key must say which one ran (None would hide it).
    from curate.engine import Engine
    from curate.generation import engine_options

    assert HFGenerator(tiny_model_path).identity()["dtype"] == "float32"  # this machine: CPU
    assert HFGenerator(tiny_model_path, dtype="bf16").identity()["dtype"] == "bfloat16"
    # A Ray run pins its workers' dtype, so the driver's identity is the workers' even when their hardware differs.
    assert engine_options("hf", Engine("ray", num_workers=2)) == {"dtype": "float32"}
    assert engine_options("hf", Engine("ray", gpus_per_worker=0.5)) == {"dtype": "bfloat16"}
    assert engine_options("openai", Engine("ray")) == {} and engine_options("hf", Engine()) == {}


def test_inverse_cdf_draws_match_the_tempered_softmax_exactly():
    import numpy as np

    from curate.generation import inverse_cdf_draws

    p = np.array([0.1, 0.0, 0.2, 0.3, 0.4])
    logits = np.log(np.where(p > 0, p, 1e-300)).astype(np.float32)  # token 1: exp underflows, no mass
    logits[1] = -1e30
    n = 10_000
    u = (np.arange(n) + 0.5) / n  # evenly spread uniforms: each token's count is n * p to within 1
    counts = np.bincount(inverse_cdf_draws(np.repeat(logits[None], n, 0), 1.0, u), minlength=5)
    assert np.all(np.abs(counts - n * p) <= 1) and counts[1] == 0
    # Temperature 0.5 squares the probabilities (renormalised); 2 takes their square roots.
    for t, q in ((0.5, p**2), (2.0, np.sqrt(p))):
        counts = np.bincount(inverse_cdf_draws(np.repeat(logits[None], n, 0), t, u), minlength=5)
        assert np.all(np.abs(counts - n * q / q.sum()) <= 1)
    # Golden: the first token whose running mass passes u; a row's draw ignores the other rows; u at the very top
    # of [0, 1) still lands on the last token with mass, never on a massless one.
    rows = np.log(np.array([[1, 3, 1], [4, 1, 1]], dtype=np.float32))
    rows[:, 2] = -1e30  # no mass
    assert inverse_cdf_draws(rows, 1.0, [0.24, 0.79]) == [0, 0]
    assert inverse_cdf_draws(rows, 1.0, [0.26, 0.81]) == [1, 1]
    assert inverse_cdf_draws(rows[:1], 1.0, [0.26]) == [1]
    assert inverse_cdf_draws(rows, 1.0, [1 - 1e-17, 1 - 1e-17]) == [1, 1]
    big = np.array([[1e4, 1e4 - 1.0]], dtype=np.float32)  # no overflow: the max is taken off first
    assert inverse_cdf_draws(big, 1.0, [0.5]) == [0]
    with pytest.raises(CurateError, match="NaN or infinite logits"):
        inverse_cdf_draws(np.array([[0.0, np.nan]], dtype=np.float32), 1.0, [0.5])
