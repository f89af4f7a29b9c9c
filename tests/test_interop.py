"""Trainer interop: every export is read by the real libraries (TRL, datasets) or checked field by field against the
trainer's documented schema (verl, OpenRLHF, LLaMA-Factory), reads back to the same canonical rows, and refuses what
a format cannot hold.

Shrunken settings: 6 toy rows, a tiny random Llama (hidden 32, 2 layers) with a byte-level tokenizer, one optimiser
step (SFT) and one GRPO step with 2 completions of 4 tokens: enough to show the trainer consumes the export as is.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate
from curate.errors import CurateError
from curate.formats import FORMATS, read_export

# preference-pair formats take a pairs version: tests/test_preference.py exports, imports and trains them
EXPORTERS = sorted(name for name, cls in FORMATS.items() if not cls.pairwise)
IMPORTERS = sorted(name for name, cls in FORMATS.items() if cls.readable() and not cls.pairwise)
CARRIES_LABELS = [name for name, cls in FORMATS.items() if cls.carries_labels]

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def _rows(n: int = 6) -> list[dict]:
    rows = []
    for i in range(n):
        system = [{"role": "system", "content": "Answer briefly."}] if i % 3 == 0 else []
        prompt = [*system, {"role": "user", "content": f"What is {i} + {i}?"}]
        rows.append(
            {
                "id": f"q{i}",
                "messages": [*prompt, {"role": "assistant", "content": f"{i} + {i} = {2 * i}. #### {2 * i}"}],
                "prompt": prompt,
                "answer": str(2 * i),
                "data_source": "toy-math" if i % 2 else "other-math",
                "pass_rate": i / 8,
                "level": ["easy", "hard"][i % 2],
                "fisher_score": None if i == 5 else 1.0 - i / 10,
            }
        )
    return rows


@pytest.fixture
def base(store):
    return curate.save(_rows(), name="toy", store=store)


@pytest.fixture
def curriculum(store):
    # Stored out of curriculum order on purpose: the export must sort by stage, then rank.
    rows = _rows()
    for r, stage, rank in zip(rows, [2, 1, 3, 1, 2, 3], [3, 2, 6, 1, 4, 5], strict=True):
        r["stage"], r["difficulty_rank"] = stage, rank
    return curate.save(rows, name="toy-cur", store=store)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.testing import save_tiny_model

    path = save_tiny_model(tmp_path_factory.mktemp("tiny") / "m")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _token_version(store, tok):
    """A token-cleaning-style version: assistant tokens trained, except every second one (set to -100)."""
    from curate.chat import assistant_token_mask

    rows = []
    for r in _rows(4):
        ids, mask = assistant_token_mask(tok, r["messages"])
        labels, k = [], 0
        for t, m in zip(ids, mask, strict=True):
            labels.append(t if m and k % 2 == 0 else -100)
            k += m
        rows.append({"id": r["id"], "messages": r["messages"], "input_ids": ids, "labels": labels})
    return curate.save(rows, name="toy-tok", store=store)


def _load(result, fmt: str):
    import datasets

    datasets.disable_progress_bars()
    if fmt == "hf":
        return datasets.load_from_disk(str(result.out_dir))
    data = result.files[0]
    kind = "parquet" if data.suffix == ".parquet" else "json"
    return datasets.load_dataset(kind, data_files=str(data), split="train", cache_dir=str(result.out_dir / ".cache"))


def _store_files(store) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ TRL
def test_trl_sft_messages_recognised_and_prepared_by_trl(store, base, tiny, tmp_path):
    from trl import SFTConfig, SFTTrainer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    model, tok = tiny
    result = curate.export(base, format="trl-sft", out=tmp_path / "sft", store=store)
    ds = _load(result, "trl-sft")
    # A `prompt` column beside `messages` would make TRL treat the rows as prompt-completion.
    assert "prompt" not in ds.column_names and "messages" in ds.column_names
    row = ds[0]
    assert is_conversational(row)
    assert maybe_apply_chat_template(row, tok)["text"] == tok.apply_chat_template(
        _rows()[0]["messages"], tokenize=False
    )
    args = SFTConfig(output_dir=str(tmp_path / "run"), bf16=False, use_cpu=True, report_to=[], dataset_num_proc=None)
    prepared = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset
    assert len(prepared) == len(base)
    assert tok.decode(prepared[0]["input_ids"]) == tok.apply_chat_template(_rows()[0]["messages"], tokenize=False)


def test_trl_sft_prompt_completion_style(store, base, tiny, tmp_path):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    _, tok = tiny
    result = curate.export(base, format="trl-sft", out=tmp_path / "pc", style="prompt-completion", store=store)
    row = _load(result, "trl-sft")[3]
    assert set(row) >= {"prompt", "completion"} and "messages" not in row
    assert is_conversational(row)
    text = maybe_apply_chat_template(row, tok)
    assert text["prompt"] == tok.apply_chat_template(_rows()[3]["prompt"], tokenize=False, add_generation_prompt=True)
    assert text["completion"].startswith("3 + 3 = 6. #### 6")
    assert "prompt-completion" in result.note


def test_trl_sft_pretokenised_labels_used_as_is_in_one_step(store, tiny, tmp_path):
    import torch
    from trl import SFTConfig, SFTTrainer

    model, tok = tiny
    v = _token_version(store, tok)
    ours = {r["id"]: r["labels"] for r in v.to_pylist()}
    for lab in ours.values():  # token cleaning leaves gaps inside the response, not only a masked prompt
        start = next(j for j, t in enumerate(lab) if t != -100)
        assert -100 in lab[start:]
    result = curate.export(v, format="trl-sft", out=tmp_path / "tok", store=store)
    assert "labels" in result.note and "-100" in result.note
    ds = _load(result, "trl-sft")
    args = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=2,
        train_sampling_strategy="sequential",
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        learning_rate=1e-2,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    assert trainer.train_dataset["labels"] == [ours[i] for i in trainer.train_dataset["id"]]
    batch = next(iter(trainer.get_train_dataloader()))
    width = batch["labels"].shape[1]
    expected = [ours[i] + [-100] * (width - len(ours[i])) for i in ds["id"][:2]]
    assert batch["labels"].tolist() == expected
    # The loss TRL reports is the mean over exactly our unmasked tokens: recompute it from our labels.
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        want = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), torch.tensor(expected)[:, 1:].flatten(), ignore_index=-100
        ).item()
    before = [p.detach().clone() for p in model.parameters()]
    out = trainer.train()
    assert out.global_step == 1 and math.isclose(out.training_loss, want, rel_tol=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_trl_grpo_reward_functions_receive_solution_and_scores(store, curriculum, tiny, tmp_path):
    from trl import GRPOConfig, GRPOTrainer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    model, tok = tiny
    result = curate.export(curriculum, format="trl-grpo", out=tmp_path / "grpo", store=store)
    assert "shuffle_dataset=False" in result.note
    ds = _load(result, "trl-grpo")
    assert "messages" not in ds.column_names and "answer" not in ds.column_names
    assert is_conversational(ds[0])
    first = _rows()[3]  # stage 1, rank 1
    assert ds[0]["id"] == first["id"] == "q3"
    assert maybe_apply_chat_template(ds[0], tok)["prompt"] == tok.apply_chat_template(
        first["prompt"], tokenize=False, add_generation_prompt=True
    )
    seen = []

    def record(completions, solution, **kwargs):
        seen.append({"solution": list(solution), **{k: list(kwargs[k]) for k in ("id", "pass_rate", "stage")}})
        return [0.0] * len(completions)

    args = GRPOConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        shuffle_dataset=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    GRPOTrainer(model=model, reward_funcs=record, args=args, train_dataset=ds, processing_class=tok).train()
    assert seen[0] == {"solution": ["6", "6"], "id": ["q3", "q3"], "pass_rate": [3 / 8] * 2, "stage": [1, 1]}


# ------------------------------------------------------------------------------------------------ schemas
def test_verl_parquet_matches_documented_schema(store, curriculum, tmp_path):
    result = curate.export(curriculum, format="verl", out=tmp_path / "verl", store=store)
    schema = pq.read_schema(result.files[0])
    assert schema.names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert schema.field("data_source").type == pa.string()
    assert pa.types.is_list(schema.field("prompt").type) and schema.field("prompt").type.value_type == MESSAGE
    assert schema.field("ability").type == pa.string()
    assert schema.field("reward_model").type == pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
    info = {f.name: f.type for f in schema.field("extra_info").type}
    assert info == {
        "index": pa.int64(),
        "split": pa.string(),
        "id": pa.string(),
        "dataset_version": pa.string(),
        "dataset_ref": pa.string(),
        "pass_rate": pa.float64(),
        "level": pa.string(),
        "fisher_score": pa.float64(),
        "stage": pa.int64(),
        "difficulty_rank": pa.int64(),
        "answer": pa.string(),  # where verl's gsm8k preprocessing keeps it; curate import reads it back as answer
    }
    rows = _load(result, "verl").to_list()
    assert [r["extra_info"]["id"] for r in rows] == ["q3", "q1", "q0", "q4", "q5", "q2"]  # stage, then rank
    assert [r["extra_info"]["index"] for r in rows] == list(range(6))
    r = rows[0]
    assert r["reward_model"] == {"style": "rule", "ground_truth": "6"} and r["data_source"] == "toy-math"
    assert r["prompt"] == _rows()[3]["prompt"] and r["ability"] == "general"
    assert r["extra_info"]["dataset_version"] == curriculum.id and r["extra_info"]["split"] == "train"
    assert r["extra_info"]["answer"] == "6"
    assert "data.shuffle=False" in result.note and "data.train_files=" in result.note


def test_openrlhf_and_llamafactory_files_follow_their_docs(store, base, tmp_path):
    rl = curate.export(base, format="openrlhf", out=tmp_path / "orl", store=store)
    row = _load(rl, "openrlhf")[0]
    assert row["input"] == _rows()[0]["prompt"] and row["label"] == "0" and row["datasource"] == "other-math"
    assert "--data.input_key input --data.label_key label" in rl.note and "--data.apply_chat_template" in rl.note

    lf = curate.export(base, format="llamafactory", out=tmp_path / "lf", dataset_name="toy_sft", store=store)
    entry = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())["toy_sft"]
    assert entry["formatting"] == "sharegpt" and (tmp_path / "lf" / entry["file_name"]).is_file()
    tags, key = entry["tags"], entry["columns"]["messages"]
    for row in _load(lf, "llamafactory"):
        turns = row[key]
        if turns[0][tags["role_tag"]] == tags["system_tag"]:
            turns = turns[1:]
        roles = [t[tags["role_tag"]] for t in turns]
        # LLaMA-Factory's sharegpt converter: user turns at even positions, assistant at odd, an even count.
        assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2) and len(roles) % 2 == 0
    assert "dataset: toy_sft" in lf.note and "disable_shuffling" not in lf.note


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_datasets_loads_every_export_and_curate_json_records_it(store, base, tmp_path, fmt):
    result = curate.export(base, format=fmt, out=tmp_path / fmt, store=store)
    assert result.note.startswith(f"Exported {base.ref}") and result.files[-1].name == "curate.json"
    assert _load(result, fmt).num_rows == len(base)
    meta = json.loads(result.files[-1].read_text())
    assert {k: meta[k] for k in ("ref", "version_id", "format", "rows")} == {
        "ref": base.ref,
        "version_id": base.id,
        "format": fmt,
        "rows": 6,
    }
    assert not [p for p in result.out_dir.rglob("*.tmp")]
    assert "Curriculum" not in result.note


def test_plain_export_writes_strict_json(store, tmp_path):
    v = curate.save([{"id": "a", "score": float("nan")}, {"id": "b", "score": 1.5}], name="nan", store=store)
    result = curate.export(v, format="jsonl", out=tmp_path / "nan.jsonl", store=store)
    assert result.files[0] == tmp_path / "nan.jsonl"  # --out may name the file itself
    assert _load(result, "jsonl")["score"] == [None, 1.5]  # NaN is not JSON: it becomes null


# ------------------------------------------------------------------------------------------------ round trips
CARRIES = {
    "trl-sft": ("messages", "prompt"),
    "trl-grpo": ("prompt",),
    "verl": ("prompt",),
    "verl-sft": ("messages", "prompt"),
    "openrlhf": ("prompt",),
    "llamafactory": ("messages", "prompt"),
    "hf": ("messages", "prompt"),
}


def test_every_importable_format_is_covered():
    assert set(CARRIES) == set(IMPORTERS)


@pytest.mark.parametrize("fmt", sorted(IMPORTERS))
def test_round_trip_gives_back_the_canonical_rows(store, base, tmp_path, fmt):
    result = curate.export(base, format=fmt, out=tmp_path / fmt, store=store)
    back = read_export(result.out_dir, format=fmt)
    dropped = {"messages"} - set(CARRIES[fmt])
    assert back.column_names == [c for c in base.columns if c not in dropped]
    keys = ["id", *CARRIES[fmt], "answer", "data_source", "pass_rate", "level", "fisher_score"]
    assert back.select(keys).to_pylist() == base.to_arrow().select(keys).to_pylist()
    if fmt == "hf":
        assert back.equals(base.to_arrow())


@pytest.mark.parametrize("fmt", ["trl-sft", "hf"])
def test_round_trip_keeps_token_labels(store, tiny, tmp_path, fmt):
    v = _token_version(store, tiny[1])
    back = read_export(curate.export(v, format=fmt, out=tmp_path / fmt, store=store).out_dir, format=fmt)
    keys = ["id", "messages", "input_ids", "labels"]
    assert back.select(keys).to_pylist() == v.to_arrow().select(keys).to_pylist()
    assert back.schema.field("labels").type == pa.list_(pa.int32())


def test_import_data_with_format_commits_once(store, curriculum, tmp_path):
    curate.export(curriculum, format="verl", out=tmp_path / "verl", store=store)
    v = curate.import_data(str(tmp_path / "verl"), name="back", format="verl", store=store)
    again = curate.import_data(str(tmp_path / "verl" / "toy-cur.parquet"), name="back", format="verl", store=store)
    assert again.id == v.id and len(store.versions("back")) == 1
    assert v.manifest["stats"]["layout"] == "verl"
    assert v.to_arrow().column("id").to_pylist() == ["q3", "q1", "q0", "q4", "q5", "q2"]


def test_reads_a_third_party_verl_file(tmp_path):
    # gsm8k.py-style rows: ground truth as a one-element list (verl's README), no id in extra_info, no curate.json.
    info = {"split": "train", "index": 0, "answer": "48/2 = 24 #### 72", "question": "Natalia sold clips..."}
    table = pa.table(
        {
            "data_source": ["openai/gsm8k"],
            "prompt": [[{"role": "user", "content": "Natalia ..."}]],
            "ability": ["math"],
            "reward_model": [{"style": "rule", "ground_truth": ["72"]}],
            "extra_info": [info],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    row = read_export(tmp_path / "train.parquet", format="verl").to_pylist()[0]
    assert row["answer"] == "72" and row["data_source"] == "openai/gsm8k" and row["ability"] == "math"
    assert row["question"] == "Natalia sold clips..." and row["extra_answer"] == "48/2 = 24 #### 72"
    assert row["split"] == "train" and "index" not in row and len(row["id"]) == 16


def test_reads_a_third_party_trl_prompt_completion_file(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "The sky is", "completion": " blue."}) + "\n")
    row = read_export(tmp_path / "d.jsonl", format="trl-sft").to_pylist()[0]
    assert row["messages"] == [{"role": "user", "content": "The sky is"}, {"role": "assistant", "content": " blue."}]
    assert row["prompt"] == [{"role": "user", "content": "The sky is"}]


# ------------------------------------------------------------------------------------------------ curricula
@pytest.mark.parametrize(
    ("fmt", "switch"),
    [
        ("trl-sft", 'train_sampling_strategy="sequential"'),
        ("trl-grpo", "shuffle_dataset=False"),
        ("verl", "data.shuffle=False"),
        ("verl-sft", "shuffle=True"),
        ("openrlhf", "one stage per run"),
        ("llamafactory", "disable_shuffling: true"),
        ("hf", "shuffling off"),
        ("parquet", "shuffling off"),
    ],
)
def test_curriculum_exports_in_order_and_says_how_to_keep_it(store, curriculum, tmp_path, fmt, switch):
    result = curate.export(curriculum, format=fmt, out=tmp_path / fmt, store=store)
    assert "Curriculum: rows are in stage, then difficulty_rank order" in result.note and switch in result.note
    ids = (
        read_export(result.out_dir, format=fmt).column("id").to_pylist()
        if fmt in IMPORTERS
        else pq.read_table(result.files[0]).column("id").to_pylist()
    )
    assert ids == ["q3", "q1", "q0", "q4", "q5", "q2"]


# ------------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("fmt", sorted(set(EXPORTERS) - set(CARRIES_LABELS)))
def test_token_labels_refused_where_they_cannot_go(store, tiny, tmp_path, fmt):
    v = _token_version(store, tiny[1])
    before = _store_files(store)
    with pytest.raises(CurateError, match=r"formats that can: trl-sft, hf, parquet, jsonl") as e:
        curate.export(v, format=fmt, out=tmp_path / fmt, store=store)
    assert v.ref in str(e.value) and fmt in str(e.value)
    assert not (tmp_path / fmt).exists() and _store_files(store) == before


def test_drop_labels_exports_the_text(store, tiny, tmp_path):
    v = _token_version(store, tiny[1])
    result = curate.export(v, format="llamafactory", out=tmp_path / "lf", drop_labels=True, store=store)
    assert "labels" not in _load(result, "llamafactory").column_names


@pytest.mark.parametrize("fmt", ["trl-grpo", "verl", "openrlhf"])
def test_rl_formats_refuse_a_version_without_prompt(store, tmp_path, fmt):
    v = curate.save([{"id": r["id"], "messages": r["messages"]} for r in _rows()], name="noprompt", store=store)
    with pytest.raises(CurateError, match=rf"--format {fmt} needs a 'prompt' column"):
        curate.export(v, format=fmt, out=tmp_path / fmt, store=store)
    assert not (tmp_path / fmt).exists()


def test_other_refusals_are_explicit(store, base, tmp_path):
    with pytest.raises(CurateError) as e:
        curate.export(base, format="axolotl", out=tmp_path / "x", store=store)
    assert all(name in str(e.value) for name in [*EXPORTERS, "jsonl", "parquet"])
    with pytest.raises(CurateError, match=r"unknown option\(s\) splt \(accepted: split, ability, reward_style"):
        curate.export(base, format="verl", out=tmp_path / "x", splt="test", store=store)
    rollouts = curate.save(
        [{"id": f"r{k}", "prompt_id": "p", "sample": k, "prompt": _rows()[0]["prompt"]} for k in range(2)],
        name="ro",
        store=store,
    )
    with pytest.raises(CurateError, match="one row per prompt"):
        curate.export(rollouts, format="verl", out=tmp_path / "x", store=store)
    broken = curate.save(
        [
            {
                "id": "u2",
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ],
            }
        ],
        name="bad",
        store=store,
    )
    with pytest.raises(CurateError, match=r"row 0 \(id u2\).*alternating"):
        curate.export(broken, format="llamafactory", out=tmp_path / "x", store=store)
    half = curate.save(
        [{"id": "a", "messages": _rows()[0]["messages"]}, {"id": "b", "messages": None}], name="half", store=store
    )
    with pytest.raises(CurateError, match=r"row 1: field 'messages': empty"):
        curate.export(half, format="trl-sft", out=tmp_path / "x", store=store)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CurateError, match="not an hf export"):
        curate.export(base, format="hf", out=tmp_path / "mine", store=store)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "x").exists()
    with pytest.raises(CurateError, match="readable: hf, llamafactory"):
        read_export(tmp_path, format="axolotl")


# ------------------------------------------------------------------------------------------------ provenance
def test_hf_card_records_lineage_and_reexport_replaces_it(store, base, tmp_path):
    child = curate.save(
        _rows()[:3], name="toy-small", parents=[base], op={"name": "select", "method": "fisher"}, store=store
    )
    first = curate.export(child, format="hf", out=tmp_path / "hf", store=store)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert child.ref in card and child.id in card and base.ref in card and "select" in card
    assert card.index(child.ref) < card.index(base.ref)  # the tree runs from the export down to the import
    again = curate.export(child, format="hf", out=tmp_path / "hf", store=store)
    assert [p.name for p in again.files] == [p.name for p in first.files]
    assert _load(again, "hf").num_rows == 3


def test_reexport_is_byte_identical(store, curriculum, tmp_path):
    a = curate.export(curriculum, format="verl", out=tmp_path / "a", store=store)
    b = curate.export(curriculum, format="verl", out=tmp_path / "b", store=store)
    assert a.files[0].read_bytes() == b.files[0].read_bytes()
    assert a.files[-1].read_text() == b.files[-1].read_text()
