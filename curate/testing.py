"""The tiny random test model: a Llama with a real byte-level tokenizer and SmolLM2's ChatML, built offline.

Tests and benchmarks never need a download: `tiny_causal_lm` builds the model in milliseconds, one token per byte
(ids 3..258) after SmolLM2's three special tokens (ids 0..2), and `save_tiny_model` writes it as a local folder
that every loader in `curate.models` accepts like any checkpoint.

    >>> model, tok = tiny_causal_lm(seed=0)
    >>> model.config.vocab_size
    259
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.models import CHATML_TEMPLATE, ENDOFTEXT, IM_END, IM_START

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["save_tiny_model", "tiny_causal_lm"]


def _byte_symbols() -> list[str]:
    """The printable character byte-level BPE uses for each byte 0..255 (the GPT-2 convention)."""
    direct = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, shifted = {}, 0
    for byte in range(256):
        if byte in direct:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + shifted)
            shifted += 1
    return [symbols[b] for b in range(256)]


def _tiny_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [ENDOFTEXT, IM_START, IM_END]  # ids 0, 1, 2 as in SmolLM2
    vocab = {tok: i for i, tok in enumerate(specials)}
    for symbol in _byte_symbols():  # byte b -> id b + 3
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
        chat_template=CHATML_TEMPLATE,
        # The default cleanup rewrites " ." to "." on decode, which breaks the text round trip.
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def tiny_causal_lm(
    *, seed: int = 0, vocab_extra: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny random Llama (fp32, eval mode) and a byte-level ChatML tokenizer, built offline in milliseconds.

    Same seed, same weights; the global torch RNG is left untouched. `vocab_extra` adds embedding rows no
    token maps to, as real checkpoints pad their vocab past the tokenizer's size.

    >>> model, tok = tiny_causal_lm(seed=1)
    >>> tok.decode(tok("héllo").input_ids)
    'héllo'
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden % heads or (hidden // heads) % 2:
        raise ValueError(f"hidden={hidden} must split into {heads} heads of even size (rotary embeddings)")
    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer) + vocab_extra,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def save_tiny_model(path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write `tiny_causal_lm(**kwargs)` with save_pretrained, loadable like any local model.

    >>> import tempfile
    >>> from curate.models import load_causal_lm
    >>> folder = save_tiny_model(tempfile.mkdtemp(), seed=3)
    >>> load_causal_lm(folder)[0].config.hidden_size
    32
    """
    model, tokenizer = tiny_causal_lm(**kwargs)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
