"""Chat templating for training and generation: which tokens of a conversation SFT trains on, and prompt ids.

Every consumer tokenizes a chat through these functions, so the ids a generator is prompted with prefix the ids
the trainer and the scorers see for the same conversation. The template is the tokenizer's own
(``tokenizer.chat_template``); nothing here knows a model family.

    >>> from curate.testing import tiny_causal_lm
    >>> _, tok = tiny_causal_lm()
    >>> chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    >>> ids, mask = assistant_token_mask(tok, chat)
    >>> prompt = prompt_ids(tok, chat[:1])
    >>> ids[: len(prompt)] == prompt, mask[len(prompt)]
    (True, 1)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from curate.errors import CurateError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["ChatTemplateError", "assistant_token_mask", "chat_template_hash", "prompt_ids"]


class ChatTemplateError(CurateError):
    """A chat template whose renderings are not prefixes of each other, so turns cannot be located."""


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]], gen: bool, kw: dict) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=gen, **kw)
    except Exception as err:  # jinja raise_exception(), missing template, bad roles
        raise ChatTemplateError(f"chat template failed on {len(messages)} message(s): {err}") from err


def _first_head(tokenizer: PreTrainedTokenizerBase, message: Mapping[str, Any], kw: dict) -> str:
    """The text before an opening assistant turn's content (templates cannot render an empty conversation)."""
    sentinel = "\u27e6curate:content\u27e7"
    probe = _render(tokenizer, [{**message, "content": sentinel}], False, kw)
    if sentinel not in probe:
        raise ChatTemplateError(
            "chat template does not render message 0's content verbatim: its turn cannot be located"
        )
    return probe[: probe.index(sentinel)]


def assistant_token_mask(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]], **template_kwargs: Any
) -> tuple[list[int], list[int]]:
    """Chat-template a conversation; return `(input_ids, mask)`, mask 1 on the tokens SFT trains on.

    Those are each assistant turn's content and its end-of-turn token (`<|im_end|>` in ChatML); system and
    user turns, role headers and the whitespace between turns get 0. Turns are located by rendering the
    conversation up to each assistant turn, so any template works whose renderings of a prefix are a
    prefix of the whole, in text and in tokens; otherwise this raises `ChatTemplateError`.

    >>> from curate.testing import tiny_causal_lm
    >>> _, tok = tiny_causal_lm()
    >>> chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    >>> ids, mask = assistant_token_mask(tok, chat)
    >>> tok.decode([i for i, m in zip(ids, mask) if m])
    'yo<|im_end|>'
    """
    full = _render(tokenizer, messages, False, template_kwargs)
    cuts: list[tuple[int, int]] = []  # character spans of the trained text
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if i == 0:  # an empty conversation cannot be rendered
            head = _first_head(tokenizer, message, template_kwargs)
        else:
            head = _render(tokenizer, messages[:i], True, template_kwargs)
        turn = _render(tokenizer, messages[: i + 1], False, template_kwargs)
        if not (turn.startswith(head) and full.startswith(turn)):
            raise ChatTemplateError(
                f"chat template is not prefix-stable at message {i}: rendering the conversation up to a turn "
                "does not give a prefix of the whole, so assistant tokens cannot be located"
            )
        # What follows the turn's end-of-turn token (ChatML's "\n") is formatting between turns, not output.
        cuts.append((len(head), max(len(head), len(turn.rstrip()))))

    texts = [full] + [full[:edge] for span in cuts for edge in span]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    ids, prefixes = list(encoded[0]), encoded[1:]
    for text, prefix in zip(texts[1:], prefixes, strict=True):
        if ids[: len(prefix)] != list(prefix):
            raise ChatTemplateError(
                f"tokens are not prefix-stable at character {len(text)}: the text up to an assistant turn "
                "tokenizes differently alone than inside the conversation"
            )
    mask = [0] * len(ids)
    for start, end in zip(prefixes[0::2], prefixes[1::2], strict=True):
        mask[len(start) : len(end)] = [1] * (len(end) - len(start))
    return ids, mask


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt_messages: Sequence[Mapping[str, Any]], **template_kwargs: Any
) -> list[int]:
    """Token ids of a prompt with the assistant header appended, ready for generation.

    Tokenized exactly as `assistant_token_mask` tokenizes, so these ids prefix the full conversation's.

    >>> from curate.testing import tiny_causal_lm
    >>> _, tok = tiny_causal_lm()
    >>> tok.decode(prompt_ids(tok, [{"role": "user", "content": "hi"}]))
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    text = _render(tokenizer, prompt_messages, True, template_kwargs)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_template_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """First 16 hex of the sha256 of the tokenizer's chat template (`"none"` without one), for manifests.

    >>> from curate.testing import tiny_causal_lm
    >>> _, tok = tiny_causal_lm()
    >>> len(chat_template_hash(tok))
    16
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return "none"
    if not isinstance(template, str):  # named templates: {"default": ..., "tool_use": ...}
        template = json.dumps(template, sort_keys=True)
    return hashlib.sha256(template.encode()).hexdigest()[:16]
