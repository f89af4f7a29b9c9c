"""Training chat templates: the chat templates of the models curate knows, with ``{% generation %}`` markers.

TRL's ``SFTConfig(assistant_only_loss=True)`` builds its loss mask from ``apply_chat_template(...,
return_assistant_tokens_mask=True)``, which needs ``{% generation %}`` / ``{% endgeneration %}`` around each
assistant turn. TRL patches the templates of the model families it lists (``trl.chat_template_utils``: Qwen, Llama 3,
Gemma, ...) but not SmolLM2's ChatML, so SFTTrainer refuses curate's default model with "The chat template is not
training-compatible". ``TRAINING_TEMPLATES`` holds, per template name, the model's own template rewritten so that
each assistant turn's content and its ``<|im_end|>`` (so the model learns to stop) sit inside the markers; the text
it renders is the original's, character for character (``tests/test_exports_cli.py`` checks both). The ``trl-sft``
export writes one next to the data and prints ``SFTConfig(chat_template_path=...)`` to load it.

    curate export sft-fisher --format trl-sft --out exports/sft                   # smollm2 (the default)
    curate export sft-fisher --format trl-sft --out exports/sft --chat-template chatml
"""

from __future__ import annotations

#: SmolLM2-Instruct's own template (the tokenizer of ``smollm2-135m``), which injects a default system turn
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# SmolLM2's template writes its newlines as real newline characters inside the Jinja strings: kept so, the text
# equals the tokenizer's and ``training_template`` recognises it.
_SMOLLM2_SYSTEM_TURN = (
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    + SMOLLM2_SYSTEM
    + "<|im_end|>\n' }}{% endif %}"
)
_SMOLLM2_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
_CHATML_TURN = "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"


def _trained(turn: str, newline: str) -> str:
    return (
        f"{{% if message['role'] == 'assistant' %}}{{{{ '<|im_start|>assistant{newline}' }}}}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        f"{{{{ '{newline}' }}}}{{% else %}}{turn}{{% endif %}}"
    )


def _template(system: str, turn: str, newline: str) -> str:
    prompt = f"{{% if add_generation_prompt %}}{{{{ '<|im_start|>assistant{newline}' }}}}{{% endif %}}"
    return "{% for message in messages %}" + system + turn + "{% endfor %}" + prompt


#: the inference templates, as the tokenizers carry them: SmolLM2's, and plain ChatML (``curate.models``)
TEMPLATES = {
    "smollm2": _template(_SMOLLM2_SYSTEM_TURN, _SMOLLM2_TURN, "\n"),
    "chatml": _template("", _CHATML_TURN, "\\n"),
}
#: the same templates with ``{% generation %}`` markers around each assistant turn
TRAINING_TEMPLATES = {
    "smollm2": _template(_SMOLLM2_SYSTEM_TURN, _trained(_SMOLLM2_TURN, "\n"), "\n"),
    "chatml": _template("", _trained(_CHATML_TURN, "\\n"), "\\n"),
}


def training_template(chat_template: str | None) -> str | None:
    """The training version of a template curate knows (by its exact text), else None.

    >>> from curate.models import CHATML_TEMPLATE
    >>> "{% generation %}" in training_template(CHATML_TEMPLATE)
    True
    """
    for name, text in TEMPLATES.items():
        if chat_template == text:
            return TRAINING_TEMPLATES[name]
    return None
