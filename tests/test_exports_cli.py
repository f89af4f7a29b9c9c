"""Exports as each trainer's own code reads them: TRL's SFTTrainer runs the printed config (assistant-only loss
through the shipped training chat template), verl's notes name what verl 0.9.1 accepts, ``--out -`` streams jsonl,
a single-file export keeps its sidecar next to the file, and only curricula say to turn shuffling off.

Shrunken settings: a handful of toy rows, SmolLM2's real tokenizer (the embedded model's) on a tiny random Llama of
its vocabulary (hidden 32, 2 layers: the loss mask, not the model, is under test), one optimiser step on CPU.
"""

from __future__ import annotations

import ast
import json
import math
import re

import pyarrow.parquet as pq
import pytest

import curate
from curate.errors import CurateError
from curate.formats import read_export
from curate.formats.templates import TEMPLATES, TRAINING_TEMPLATES, training_template


def _sft_rows(n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        turns = [
            {"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"It is {2 * i}."},
        ]
        if i % 2:  # multi-turn rows too: assistant_only_loss must mask every user turn, not only the first
            turns += [{"role": "user", "content": "And doubled?"}, {"role": "assistant", "content": f"{4 * i}."}]
        rows.append({"id": f"s{i}", "messages": turns})
    return rows


@pytest.fixture(scope="module")
def smol_tokenizer():
    import copy

    from curate.models import load_tokenizer

    return copy.deepcopy(load_tokenizer("smollm2-135m"))  # shared per process: copy before TRL mutates it


def _printed_config(note: str) -> dict:
    """The keyword arguments of the ``SFTConfig(...)`` the export note prints, evaluated as Python literals."""
    call = re.search(r"SFTConfig\((.*)\)\)\.train\(\)", note).group(1)
    tree = ast.parse(f"f({call})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}


# ------------------------------------------------------------------------------------------------ TRL
def test_training_templates_render_the_models_own_text(smol_tokenizer):
    from curate.models import CHATML_TEMPLATE

    assert TEMPLATES["smollm2"] == smol_tokenizer.chat_template and TEMPLATES["chatml"] == CHATML_TEMPLATE
    assert training_template(smol_tokenizer.chat_template) == TRAINING_TEMPLATES["smollm2"]
    assert training_template("{{ messages }}") is None
    turns = [{"role": "system", "content": "Be brief."}, *_sft_rows(2)[1]["messages"]]
    for name in TEMPLATES:
        for conversation in (turns, turns[1:]):  # with and without a system turn (SmolLM2 then adds its own)
            for gen in (False, True):
                kw = {"tokenize": False, "add_generation_prompt": gen}
                assert smol_tokenizer.apply_chat_template(
                    conversation, chat_template=TRAINING_TEMPLATES[name], **kw
                ) == smol_tokenizer.apply_chat_template(conversation, chat_template=TEMPLATES[name], **kw)
        out = smol_tokenizer.apply_chat_template(
            turns,
            chat_template=TRAINING_TEMPLATES[name],
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        kept = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
        assert smol_tokenizer.decode(kept) == "It is 2.<|im_end|>4.<|im_end|>"


def test_trl_sft_printed_config_trains_on_assistant_tokens_only(store, smol_tokenizer, tmp_path, one_thread):
    import torch
    from datasets import load_dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    v = curate.save(_sft_rows(), name="chat", store=store)
    result = curate.export(v, format="trl-sft", out=tmp_path / "sft", store=store)
    template = tmp_path / "sft" / "chat.chat_template.jinja"
    assert [p.name for p in result.files] == ["chat.jsonl", template.name, "curate.json"]
    config = _printed_config(result.note)
    assert config == {"output_dir": "out", "assistant_only_loss": True, "chat_template_path": str(template)}
    assert template.read_text() == TRAINING_TEMPLATES["smollm2"]
    ds = load_dataset("json", data_files=str(result.files[0]), split="train", cache_dir=str(tmp_path / "c"))
    torch.manual_seed(0)
    # SmolLM2's vocabulary on a tiny random Llama: the tokenizer is the embedded model's, the weights are not
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(smol_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=smol_tokenizer.pad_token_id,
            eos_token_id=smol_tokenizer.eos_token_id,
        )
    )
    args = SFTConfig(
        **{**config, "output_dir": str(tmp_path / "run")},
        max_steps=1,
        per_device_train_batch_size=4,
        train_sampling_strategy="sequential",
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        learning_rate=1e-2,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=smol_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"]
    for row, lab in zip(_sft_rows(), labels.tolist(), strict=True):
        trained = [t for t in lab if t != -100]
        want = "".join(m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant")
        assert smol_tokenizer.decode(trained) == want  # no user, system or role-header token carries loss
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        want_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        ).item()
    out = trainer.train()
    assert out.global_step == 1 and math.isclose(out.training_loss, want_loss, rel_tol=1e-4)


def test_trl_sft_chat_template_options(store, tmp_path):
    v = curate.save(_sft_rows(2), name="chat", store=store)
    plain = curate.export(v, format="trl-sft", out=tmp_path / "chatml", chat_template="chatml", store=store)
    assert plain.files[1].read_text() == TRAINING_TEMPLATES["chatml"]
    none = curate.export(v, format="trl-sft", out=tmp_path / "none", chat_template="none", store=store)
    assert [p.name for p in none.files] == ["chat.jsonl", "curate.json"]
    assert _printed_config(none.note) == {"output_dir": "out", "assistant_only_loss": True}
    pc = curate.export(v, format="trl-sft", out=tmp_path / "pc", style="prompt-completion", store=store)
    assert [p.name for p in pc.files] == ["chat.jsonl", "curate.json"] and _printed_config(pc.note) == {
        "output_dir": "out"
    }
    with pytest.raises(CurateError, match=r"chat_template must be one of smollm2, chatml, none, got 'llama'"):
        curate.export(v, format="trl-sft", out=tmp_path / "x", chat_template="llama", store=store)
    # the template travels with the export: re-reading the folder reads the data only
    assert read_export(tmp_path / "chatml", format="trl-sft").num_rows == 2


# ------------------------------------------------------------------------------------------------ verl
def _rl_rows(source: str, n: int = 3) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "answer": str(i + 1),
            "data_source": source,
        }
        for i in range(n)
    ]


def test_verl_sft_note_names_the_current_trainer(store, tmp_path):
    v = curate.save(_sft_rows(2), name="chat", store=store)
    note = curate.export(v, format="verl-sft", out=tmp_path / "vs", store=store).note
    assert "verl 0.9.1 multi-turn SFT parquet" in note
    assert (
        f"-m verl.trainer.sft_trainer data.train_files={tmp_path / 'vs' / 'chat.parquet'} "
        "data.messages_key=messages model.path=<model>"
    ) in note
    assert "fsdp_sft_trainer" not in note and "multiturn" not in note


def test_verl_gsm8k_gets_verls_scorer_name_and_reads_back(store, tmp_path):
    v = curate.save(_rl_rows("gsm8k"), name="gsm8k", store=store)
    result = curate.export(v, format="verl", out=tmp_path / "verl", store=store)
    rows = pq.read_table(result.files[0]).to_pylist()
    assert [r["data_source"] for r in rows] == ["openai/gsm8k"] * 3  # the key default_compute_score dispatches on
    assert [r["extra_info"]["answer"] for r in rows] == [r["reward_model"]["ground_truth"] for r in rows]
    assert [r["extra_info"]["answer"] for r in rows] == ["1", "2", "3"]
    assert [r["extra_info"]["curate_data_source"] for r in rows] == ["gsm8k"] * 3
    assert "Renamed to the names verl's built-in scorer uses: gsm8k -> openai/gsm8k" in result.note
    assert "custom_reward_function.path" not in result.note and "no custom_reward_function needed" in result.note
    back = read_export(result.out_dir, format="verl")
    assert back.column_names == ["id", "prompt", "answer", "data_source"]
    assert back.to_pylist() == v.to_arrow().select(back.column_names).to_pylist()


def test_verl_unknown_source_gets_curates_reward_as_custom_function(store, tmp_path):
    import importlib

    v = curate.save(_rl_rows("toy-math"), name="toy", store=store)
    result = curate.export(v, format="verl", out=tmp_path / "verl", store=store)
    assert pq.read_table(result.files[0]).column("data_source").to_pylist() == ["toy-math"] * 3
    m = re.search(r"custom_reward_function\.path=pkg://(\S+) custom_reward_function\.name=(\w+)", result.note)
    assert m and "verl's built-in scorer (default_compute_score) does not know toy-math" in result.note
    # verl's load_module imports a pkg:// path by its dotted name; then it calls the function as below
    score = getattr(importlib.import_module(m.group(1)), m.group(2))
    assert score("toy-math", "1 + 1 = \\boxed{2}", "2", extra_info={"index": 0}) == 1.0
    assert score("toy-math", "I think it is 3", "2", extra_info=None) == 0.0


# ------------------------------------------------------------------------------------------------ --out
def _cli(cwd, store, *args):
    import os
    import subprocess

    from tests.cli_helpers import CLI

    return subprocess.run(
        [*CLI, "--store", str(store), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_out_dash_writes_jsonl_to_stdout_only(store, tmp_path):
    v = curate.save(_sft_rows(3), name="chat", store=store)
    work = tmp_path / "work"
    work.mkdir()
    p = _cli(work, store.root, "export", "chat", "--format", "jsonl", "--out", "-")
    assert p.returncode == 0, p.stderr
    assert [json.loads(line) for line in p.stdout.splitlines()] == v.to_pylist()
    assert p.stdout.endswith("}\n") and "Exported chat@v1" in p.stderr and "Exported" not in p.stdout
    plain = p.stdout
    p = _cli(work, store.root, "export", "chat", "--format", "trl-sft", "--out", "-")
    assert p.returncode == 0, p.stderr
    assert [json.loads(line)["id"] for line in p.stdout.splitlines()] == ["s0", "s1", "s2"]
    assert "Not written with --out -: chat.chat_template.jinja" in p.stderr
    assert list(work.iterdir()) == []  # nothing left in the working directory
    result = curate.export(v, format="jsonl", out="-", store=store)  # the Python API hands the text back
    assert result.files == [] and result.text == plain
    with pytest.raises(CurateError, match=r"--out -: --format verl-sft does not write one jsonl file \(formats"):
        curate.export(v, format="verl-sft", out="-", store=store)
    p = _cli(work, store.root, "export", "chat", "--format", "jsonl", "--out", "-", "--json")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == ["error: --json and --out - both write to stdout: pick one"]


def test_single_file_export_keeps_its_record_beside_the_file(store, tmp_path):
    v = curate.save(_rl_rows("gsm8k"), name="qa", store=store)
    result = curate.export(v, format="verl", out=tmp_path / "qa.parquet", store=store)
    assert result.files == [tmp_path / "qa.parquet", tmp_path / "qa.parquet.curate.json"]
    assert not (tmp_path / "curate.json").exists()
    meta = json.loads((tmp_path / "qa.parquet.curate.json").read_text())
    assert meta["files"] == ["qa.parquet"] and meta["version_id"] == v.id
    again = curate.export(v, format="verl", out=tmp_path / "qa.parquet", store=store)  # the same export: no refusal
    assert again.files == result.files
    other = curate.save(_rl_rows("gsm8k", 2), name="qa", store=store)
    with pytest.raises(CurateError, match="exists; pass --overwrite"):
        curate.export(other, format="verl", out=tmp_path / "qa.parquet", store=store)
    # the record still tells the reader what the export made up: index and answer do not come back as columns
    back = read_export(tmp_path / "qa.parquet", format="verl")
    assert back.column_names == ["id", "prompt", "answer", "data_source"]
    # a folder import reads the data file, not the record beside it
    assert read_export(tmp_path, format="verl").num_rows == 3


# ------------------------------------------------------------------------------------------------ curricula
def test_shuffle_note_only_for_curricula(store, tmp_path):
    rows = [
        {"id": f"p{p}-{s}", "prompt_id": f"p{p}", "reward": float(s < p), **_rl_rows("toy", 4)[p]}
        for p in range(4)
        for s in range(4)
    ]
    for r in rows:
        r["id"] = f"{r['prompt_id']}-{r['reward']}-{rows.index(r)}"
    roll = curate.save(rows, name="roll", store=store)
    ordered = curate.select(roll.ref, method="difficulty", order="hard-to-easy", name="cur", store=store)
    staged = curate.select(roll.ref, method="difficulty", stages=2, name="staged", store=store)
    picked = curate.select(ordered.ref, method="random", budget=2, name="picked", store=store)
    note = curate.export(ordered, format="trl-grpo", out=tmp_path / "o", store=store).note
    assert "Curriculum: rows are in difficulty_rank (hard-to-easy) order" in note and "shuffle_dataset=False" in note
    note = curate.export(staged, format="verl", out=tmp_path / "s", store=store).note
    assert "Curriculum: rows are in stage, then difficulty_rank order" in note and "data.shuffle=False" in note
    for fmt in ("trl-grpo", "verl", "parquet"):
        note = curate.export(picked, format=fmt, out=tmp_path / f"p-{fmt}", store=store).note
        assert not re.search(r"Curriculum|shuffle_dataset|data\.shuffle|shuffling off", note), (fmt, note)
    meta = json.loads((tmp_path / "p-verl" / "curate.json").read_text())
    assert meta["curriculum"] is None
