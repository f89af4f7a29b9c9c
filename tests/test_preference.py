"""From rollouts to training data: best-of-n SFT rows (``--method rejection``), chosen/rejected pairs (``--method
pairs``), and the preference exports (``trl-dpo``, ``llamafactory-dpo``, ``openrlhf-dpo``) read back and consumed.

Golden picks on 13 fixed rollouts (ties in reward, in length and in both), each export read back to the same rows,
TRL's own DPOTrainer preparing (and taking one step on) the TRL export, the layouts LLaMA-Factory and OpenRLHF
document checked field by field, and one end-to-end run from a real rollout of the tiny model.

Shrunken settings: 4 prompts x up to 4 rollouts; the tiny random Llama (hidden 32, 2 layers, byte-level tokenizer);
the end-to-end rollout samples 3 prompts x 4 completions of 6 tokens (the selection is under test, not the text).
"""

from __future__ import annotations

import json
import math

import pytest

import curate
from curate.errors import CurateError, InputError
from curate.formats import FORMATS, read_export
from curate.rewards import math_reward
from curate.selectors import SELECTORS, make_selector
from curate.selectors.pairs import PairsSelector
from curate.selectors.rejection import RejectionSelector

PAIRWISE = ["trl-dpo", "llamafactory-dpo", "openrlhf-dpo"]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    # The lead wires SELECTORS; until then (and harmlessly after) the tests register the methods themselves.
    monkeypatch.setitem(SELECTORS, "rejection", RejectionSelector)
    monkeypatch.setitem(SELECTORS, "pairs", PairsSelector)


def length_parity(completion: str, answer: str | None, **row) -> float:
    """A reward with both outcomes on the tiny model's random text."""
    return float(len(completion) % 2)


def shaped_math(completion: str, answer: str | None, **row) -> float:
    """Correctness plus a brevity bonus below 1: SmolLM2-135M rarely solves a problem, and pairs need a reward gap."""
    return math_reward(completion, answer) + 1.0 / (1 + len(completion))


# (prompt, sample, reward, completion tokens). Stored interleaved, so groups are found by prompt_id, not position.
ROLLOUTS = [
    ("a", 0, 1.0, 5),
    ("c", 0, 0.2, 1),
    ("a", 1, 0.0, 4),
    ("c", 1, 0.9, 4),
    ("b", 0, 0.5, 3),
    ("b", 1, 0.5, 2),
    ("a", 2, 1.0, 3),
    ("c", 2, 0.5, 2),
    ("b", 2, 0.5, 2),
    ("a", 3, 0.0, 4),
    ("c", 3, 0.9, 4),
    ("b", 3, 0.5, 6),
    ("d", 0, 1.0, 2),
]


def _rows(tokens: bool = True) -> list[dict]:
    rows = []
    for p, s, r, n in ROLLOUTS:
        row = {
            "id": f"{p}{s}",
            "prompt_id": p,
            "sample": s,
            "prompt": [{"role": "user", "content": f"Question {p}?"}],
            "answer": "42",
            "data_source": "toy",
            "completion": f"{p}{s}:" + "w" * n,
            "reward": r,
            "finish_reason": "stop",
            "level": "hard" if p in "ac" else "easy",
        }
        if tokens:
            row["completion_tokens"] = n
        rows.append(row)
    return rows


@pytest.fixture
def rollouts(store):
    return curate.save(_rows(), name="ro", store=store)


def _reasons(v) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in v.decisions().to_pylist()}


# ------------------------------------------------------------------------------------------------ rejection
def test_rejection_golden_best_of_n(store, rollouts):
    v = curate.select(rollouts, method="rejection", name="bon", store=store)
    # a: a0 and a2 tie at 1.0, a2 is shorter; b: all 0.5, b1 and b2 tie at 2 tokens, b1 samples first.
    assert v.to_arrow().column("id").to_pylist() == ["a2", "c1", "b1", "d0"]
    assert v.columns == ["id", "messages", "prompt", "answer", "data_source", "prompt_id", "reward", "level"]
    first = v.to_pylist()[0]
    assert first["messages"] == [
        {"role": "user", "content": "Question a?"},
        {"role": "assistant", "content": "a2:www"},
    ]
    assert first["prompt"] == first["messages"][:1] and first["reward"] == 1.0
    assert _reasons(v) == {
        **{i: "below_k" for i in ("a0", "a1", "a3", "c0", "c2", "c3", "b0", "b2", "b3")},
        **{i: "" for i in ("a2", "c1", "b1", "d0")},
    }
    d = v.decisions().to_pylist()
    assert [r["score"] for r in d] == [r for _, _, r, _ in ROLLOUTS] and d[0]["prompt_id"] == "a"
    assert v.manifest["stats"] == {
        "kept": 4,
        "dropped": 9,
        "reasons": {"below_k": 9},
        "prompts": 4,
        "prompts_kept": 4,
    }


def test_rejection_threshold_and_k(store, rollouts):
    v = curate.select(rollouts, method="rejection", k=2, min_reward=0.5, name="bon2", store=store)
    # c: c1 and c3 tie in reward and length, so sample order; b keeps two of its four 0.5 rewards (0.5 >= 0.5).
    assert v.to_arrow().column("id").to_pylist() == ["a2", "a0", "c1", "c3", "b1", "b2", "d0"]
    reasons = _reasons(v)
    assert {i for i, r in reasons.items() if r == "below_min_reward"} == {"a1", "a3", "c0"}
    assert {i for i, r in reasons.items() if r == "below_k"} == {"c2", "b0", "b3"}
    correct = curate.select(rollouts, method="rejection", k=None, min_reward=1.0, name="rft", store=store)
    assert correct.to_arrow().column("id").to_pylist() == ["a2", "a0", "d0"]
    assert correct.manifest["stats"]["prompts_kept"] == 2


def test_rejection_ties_by_characters_without_token_counts(store):
    rows = _rows(tokens=False)
    v = curate.save(rows, name="ro-chars", store=store)
    out = curate.select(v, method="rejection", name="bon-chars", store=store)
    # Same lengths in characters ("a2:www" < "a0:wwwww"), so the same picks as with token counts.
    assert out.to_arrow().column("id").to_pylist() == ["a2", "c1", "b1", "d0"]


def test_rejection_drops_generation_columns_and_stale_ranks(store, rollouts):
    varied = curate.select(rollouts, method="variance", keep_per_prompt=4, name="var", store=store)
    assert "variance_rank" in varied.columns
    out = curate.select(varied, method="rejection", name="var-bon", store=store)
    assert not {"variance_rank", "sample", "completion", "completion_tokens", "finish_reason", "advantage"} & set(
        out.columns
    )
    assert "variance_score" in out.columns  # a score says something about the row; only ranks would re-order it


# ------------------------------------------------------------------------------------------------ pairs
def test_pairs_max_min_golden(store, rollouts):
    v = curate.select(rollouts, method="pairs", name="pairs", store=store)
    rows = v.to_pylist()
    # a: best a2 (shorter of the two 1.0s), worst a1 (a1 and a3 tie in reward and length: sample order).
    assert [r["id"] for r in rows] == ["a2>a1", "c1>c0"]
    assert v.columns == [
        "id",
        "prompt_id",
        "prompt",
        "chosen",
        "rejected",
        "margin",
        "chosen_reward",
        "rejected_reward",
        "chosen_id",
        "rejected_id",
        "answer",
        "data_source",
        "level",
    ]
    assert rows[0] == {
        "id": "a2>a1",
        "prompt_id": "a",
        "prompt": [{"role": "user", "content": "Question a?"}],
        "chosen": [{"role": "assistant", "content": "a2:www"}],
        "rejected": [{"role": "assistant", "content": "a1:wwww"}],
        "margin": 1.0,
        "chosen_reward": 1.0,
        "rejected_reward": 0.0,
        "chosen_id": "a2",
        "rejected_id": "a1",
        "answer": "42",
        "data_source": "toy",
        "level": "hard",
    }
    assert rows[1]["margin"] == pytest.approx(0.7, abs=1e-15)
    reasons = _reasons(v)
    assert {i for i, r in reasons.items() if r == "no_pair"} == {"b0", "b1", "b2", "b3", "d0"}
    assert {i for i, r in reasons.items() if r == "not_extreme"} == {"a0", "a3", "c2", "c3"}
    assert {i for i, r in reasons.items() if r == ""} == {"a2", "a1", "c1", "c0"}
    assert [r["pairs"] for r in v.decisions().to_pylist()] == [0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    stats = v.manifest["stats"]
    assert stats == {
        "kept": 4,
        "dropped": 9,
        "reasons": {"no_pair": 5, "not_extreme": 4},
        "prompts": 4,
        "prompts_paired": 2,
        "pairs": 2,
        "margin_mean": 0.85,
    }
    assert PairsSelector.summary_lines(stats, {}) == ["2 pairs from 2 of 4 prompts, mean margin 0.85"]


def test_pairs_max_min_margin(store, rollouts):
    v = curate.select(rollouts, method="pairs", margin=0.8, name="pairs-m", store=store)
    assert v.to_arrow().column("id").to_pylist() == ["a2>a1"]
    reasons = _reasons(v)
    assert {i for i, r in reasons.items() if r == "below_margin"} == {"c0", "c1", "c2", "c3"}


def test_pairs_all_golden(store, rollouts):
    v = curate.select(rollouts, method="pairs", mode="all", name="pairs-all", store=store)
    # chosen best first, rejected worst first: each prompt's first pair is its max-min pair
    assert v.to_arrow().column("id").to_pylist() == [
        "a2>a1",
        "a2>a3",
        "a0>a1",
        "a0>a3",
        "c1>c0",
        "c1>c2",
        "c3>c0",
        "c3>c2",
        "c2>c0",
    ]
    assert v.to_arrow().column("margin").to_pylist() == pytest.approx([1, 1, 1, 1, 0.7, 0.4, 0.7, 0.4, 0.3])
    assert {i for i, r in _reasons(v).items() if r == ""} == {"a0", "a1", "a2", "a3", "c0", "c1", "c2", "c3"}
    wide = curate.select(rollouts, method="pairs", mode="all", margin=0.5, name="pairs-wide", store=store)
    assert wide.to_arrow().column("id").to_pylist() == ["a2>a1", "a2>a3", "a0>a1", "a0>a3", "c1>c0", "c3>c0"]
    assert _reasons(wide)["c2"] == "below_margin"
    assert [r["pairs"] for r in wide.decisions().to_pylist() if r["prompt_id"] == "c"] == [2, 1, 0, 1]


def test_pairs_float_noise_is_no_preference(store):
    prompt = [{"role": "user", "content": "q"}]
    rows = [
        {"id": f"x{s}", "prompt_id": "x", "sample": s, "prompt": prompt, "completion": c, "reward": r}
        for s, (c, r) in enumerate([("a", 0.1 + 0.2), ("bb", 0.3)])  # 0.30000000000000004 against 0.3
    ]
    v = curate.select(curate.save(rows, name="noise", store=store), method="pairs", mode="all", name="np", store=store)
    assert len(v) == 0 and set(_reasons(v).values()) == {"no_pair"}


def test_one_row_all_ties_and_empty_inputs(store):
    ties = [r for r in _rows() if r["prompt_id"] == "b"]
    empty = store.commit(curate.as_table(_rows()).slice(0, 0), name="ro-empty", op={"name": "empty"})
    for method in ("rejection", "pairs"):
        for tag, src in (
            ("one", curate.save(_rows()[:1], name=f"{method}-one", store=store)),
            ("ties", curate.save(ties, name=f"{method}-ties", store=store)),
            ("empty", empty),
        ):
            out = curate.select(src, method=method, name=f"{method}-{tag}-out", store=store)
            assert out.decisions().num_rows == len(src)
            sel = make_selector(method).fit(src)
            again = make_selector(method).fit(src)
            assert sel.scores_.tolist() == again.scores_.tolist() and sel.select().reasons == again.select().reasons
    assert len(curate.select(empty, method="pairs", name="pe", store=store)) == 0


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("rejection", {"k": 0}, r"--k must be a positive integer \(or none for every completion\), got 0"),
        ("rejection", {"k": True}, r"--k must be a positive integer"),
        ("rejection", {"min_reward": math.nan}, r"--min-reward must be a finite number, got nan"),
        ("pairs", {"mode": "best"}, r"--mode must be one of max-min, all, got 'best'"),
        ("pairs", {"margin": -0.1}, r"--margin must be a finite number >= 0, got -0.1"),
        ("pairs", {"margin": math.inf}, r"--margin must be a finite number >= 0, got inf"),
    ],
)
def test_bad_options_are_one_line_errors(store, rollouts, method, params, message):
    with pytest.raises(CurateError, match=message) as e:
        curate.select(rollouts, method=method, name="bad", store=store, **params)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["rejection", "pairs"])
@pytest.mark.parametrize("prompt", [None, []])
def test_a_rollout_without_a_prompt_is_refused(store, method, prompt):
    # Its SFT row would open with the answer, and its pair has a prompt no preference format can write.
    rows = _rows()
    rows[4]["prompt"] = prompt
    v = curate.save(rows, name="noprompt", store=store)
    with pytest.raises(CurateError, match=r"^noprompt@v1: row 4 \(id b0\): field 'prompt' is null or empty$"):
        curate.select(v, method=method, name="x", store=store)


@pytest.mark.parametrize("method", ["rejection", "pairs"])
def test_bad_input_is_refused(store, method):
    sft = curate.save(
        [{"id": "s", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
        name="sft",
        store=store,
    )
    with pytest.raises(
        CurateError, match=rf"--method {method} needs a rollouts version .*run `curate rollout sft` first"
    ):
        curate.select(sft, method=method, name="x", store=store)
    rows = _rows()
    rows[2]["reward"] = None
    with pytest.raises(CurateError, match=r"prompt_id 'a' \(row 2\): field 'reward' is null"):
        curate.select(curate.save(rows, name="nullr", store=store), method=method, name="x", store=store)
    rows = _rows()
    rows[3]["completion"] = None
    with pytest.raises(CurateError, match=r"row 3: field 'completion' is null"):
        curate.select(curate.save(rows, name="nullc", store=store), method=method, name="x", store=store)


# ------------------------------------------------------------------------------------------------ exports
@pytest.fixture
def pairs(store, rollouts):
    rows = _rows()
    for r in rows:  # a system turn, so the exports must keep it at the head of the prompt
        r["prompt"] = [{"role": "system", "content": "Be brief."}, *r["prompt"]]
    v = curate.save(rows, name="ro-sys", store=store)
    return curate.select(v, method="pairs", mode="all", name="toy-pairs", store=store)


KEYS = [
    "id",
    "prompt",
    "chosen",
    "rejected",
    "margin",
    "chosen_reward",
    "rejected_reward",
    "chosen_id",
    "rejected_id",
    "prompt_id",
    "answer",
    "data_source",
    "level",
]


@pytest.mark.parametrize("fmt", PAIRWISE)
def test_export_import_round_trip(store, pairs, tmp_path, fmt):
    result = curate.export(pairs, format=fmt, out=tmp_path / fmt, store=store)
    assert FORMATS[fmt].pairwise and result.files[-1].name == "curate.json"
    back = read_export(result.out_dir, format=fmt)
    assert back.select(KEYS).to_pylist() == pairs.to_arrow().select(KEYS).to_pylist()
    assert back.schema.field("chosen").type == pairs.to_arrow().schema.field("chosen").type
    imported = curate.import_data(str(result.out_dir), name=f"back-{fmt}", format=fmt, store=store)
    assert imported.to_arrow().select(KEYS).to_pylist() == pairs.to_arrow().select(KEYS).to_pylist()
    again = curate.import_data(str(result.files[0]), name=f"back-{fmt}", format=fmt, store=store)
    assert again.id == imported.id


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trl_dpo_export_is_prepared_and_trained_by_trl(store, pairs, tmp_path, tiny_model_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    result = curate.export(pairs, format="trl-dpo", out=tmp_path / "dpo", store=store)
    assert "DPOTrainer" in result.note and "RewardTrainer" in result.note
    first = _jsonl(result.files[0])[0]
    assert list(first)[:4] == ["id", "prompt", "chosen", "rejected"] and "messages" not in first
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(
        "json", data_files=str(result.files[0]), split="train", cache_dir=str(tmp_path / "cache")
    )
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_path), AutoTokenizer.from_pretrained(tiny_model_path)
    row = ds[0]
    assert is_conversational(row)
    text = maybe_apply_chat_template(row, tok)
    prompt = tok.apply_chat_template(pairs.to_pylist()[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert text == {"prompt": prompt, "chosen": "a2:www<|im_end|>\n", "rejected": "a1:wwww<|im_end|>\n"}
    args = DPOConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        per_device_train_batch_size=2,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        learning_rate=1e-2,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    prepared = trainer.train_dataset
    assert len(prepared) == len(pairs)
    assert tok.decode(prepared[0]["prompt_ids"]) == prompt
    assert tok.decode(prepared[0]["chosen_ids"]) == "a2:www<|im_end|>\n"
    assert tok.decode(prepared[0]["rejected_ids"]) == "a1:wwww<|im_end|>\n"
    # Before the first update the policy is its own reference, so every pair's DPO loss is -log sigmoid(0) = ln 2.
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss == pytest.approx(math.log(2), rel=1e-5)


def test_trl_reward_trainer_reads_the_margin_the_note_says_it_does(store, pairs, tmp_path, tiny_model_path):
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    result = curate.export(pairs, format="trl-dpo", out=tmp_path / "rm", store=store)
    assert "RewardTrainer, which reads `margin`" in result.note
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(result.files[0]), split="train", cache_dir=str(tmp_path / "c"))
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(
        output_dir=str(tmp_path / "run"), use_cpu=True, report_to=[], dataset_num_proc=None, bf16=False
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    prepared = trainer.train_dataset
    # The margin survives TRL's preparation and reaches the loss's inputs: -log sigmoid(r_c - r_r - margin).
    batch = trainer.data_collator([prepared[0], prepared[1]])
    assert batch["margin"].tolist() == pytest.approx([r["margin"] for r in pairs.to_pylist()[:2]])


def test_llamafactory_dpo_follows_the_documented_preference_layout(store, pairs, tmp_path):
    result = curate.export(pairs, format="llamafactory-dpo", out=tmp_path / "lf", dataset_name="toy_dpo", store=store)
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info == {
        "toy_dpo": {
            "file_name": "toy-pairs.jsonl",
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
                "observation_tag": "tool",
            },
        }
    }
    assert "stage: dpo" in result.note and "dataset: toy_dpo" in result.note and "stage: rm" in result.note
    tags = info["toy_dpo"]["tags"]
    for row in _jsonl(tmp_path / "lf" / "toy-pairs.jsonl"):
        turns = row["messages"]
        assert turns[0][tags["role_tag"]] == tags["system_tag"]
        roles = [t[tags["role_tag"]] for t in turns[1:]]
        # data/README.md and the sharegpt converter: with ranking, the conversation ends on the user (odd count)
        # and chosen / rejected are single message objects of the assistant.
        assert roles == [tags["user_tag"]] and len(roles) % 2 == 1
        for side in ("chosen", "rejected"):
            assert isinstance(row[side], dict) and row[side][tags["role_tag"]] == tags["assistant_tag"]
    first = _jsonl(tmp_path / "lf" / "toy-pairs.jsonl")[0]
    assert first["chosen"] == {"role": "assistant", "content": "a2:www"}


def test_openrlhf_dpo_renders_as_reward_dataset_reads_it(store, pairs, tmp_path, tiny_model_path):
    from transformers import AutoTokenizer

    result = curate.export(pairs, format="openrlhf-dpo", out=tmp_path / "orl", store=store)
    assert "--data.prompt_key prompt --data.chosen_key chosen --data.rejected_key rejected" in result.note
    assert "--data.apply_chat_template" in result.note and "margin_loss_enable" in result.note
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    for row in _jsonl(result.files[0]):
        assert row["margin"] == pytest.approx(row["chosen_reward"] - row["rejected_reward"])
        # reward_dataset.py with prompt_key and apply_chat_template: the response is what follows the rendered prompt.
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        chosen = tok.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
        assert chosen.startswith(prompt) and chosen[len(prompt) :] == row["chosen"][0]["content"] + "<|im_end|>\n"


def test_reads_third_party_preference_layouts(tmp_path):
    q, a, b = ({"role": r, "content": c} for r, c in (("user", "Q?"), ("assistant", "yes"), ("assistant", "no")))
    # TRL's implicit prompt (conversational) and its standard (string) form
    (tmp_path / "implicit.jsonl").write_text(
        json.dumps({"chosen": [q, a], "rejected": [q, b]})
        + "\n"
        + json.dumps({"prompt": "Q?", "chosen": "yes", "rejected": "no"})
        + "\n"
    )
    rows = read_export(tmp_path / "implicit.jsonl", format="trl-dpo").to_pylist()
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [([q], [a], [b])] * 2
    assert len(rows[0]["id"]) == 16 and rows[1]["id"] == rows[0]["id"] + "-1"  # same pair: content ids, numbered
    # LLaMA-Factory's README examples: alpaca pairs, and sharegpt pairs with from/value tags
    lf = tmp_path / "lf"
    lf.mkdir()
    (lf / "alpaca.json").write_text(
        json.dumps([{"instruction": "Q?", "input": "", "chosen": "yes", "rejected": "no"}])
    )
    (lf / "sharegpt.json").write_text(
        json.dumps(
            [
                {
                    "conversations": [{"from": "human", "value": "Q?"}],
                    "chosen": {"from": "gpt", "value": "yes"},
                    "rejected": {"from": "gpt", "value": "no"},
                }
            ]
        )
    )
    (lf / "dataset_info.json").write_text(
        json.dumps(
            {
                "alp": {
                    "file_name": "alpaca.json",
                    "ranking": True,
                    "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"},
                },
                "sg": {
                    "file_name": "sharegpt.json",
                    "formatting": "sharegpt",
                    "ranking": True,
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
                },
            }
        )
    )
    for name in ("alpaca.json", "sharegpt.json"):
        row = read_export(lf / name, format="llamafactory-dpo").to_pylist()[0]
        assert (row["prompt"], row["chosen"], row["rejected"]) == ([q], [a], [b]), name
    # OpenRLHF without a prompt key: chosen / rejected are whole conversations
    (tmp_path / "orl.jsonl").write_text(json.dumps({"chosen": [q, a], "rejected": [q, b], "margin": 1}) + "\n")
    row = read_export(tmp_path / "orl.jsonl", format="openrlhf-dpo").to_pylist()[0]
    assert (row["prompt"], row["chosen"], row["rejected"], row["margin"]) == ([q], [a], [b], 1)


def test_pairs_and_sft_formats_refuse_each_other(store, pairs, rollouts, tmp_path):
    for fmt in ("trl-sft", "llamafactory", "verl-sft"):
        with pytest.raises(
            CurateError,
            match=r"holds preference pairs: export it with a pairwise format \(trl-dpo, llamafactory-dpo, "
            r"openrlhf-dpo\)",
        ):
            curate.export(pairs, format=fmt, out=tmp_path / fmt, store=store)
    for fmt in ("trl-grpo", "verl", "openrlhf"):
        with pytest.raises(CurateError, match=r"wants one RL prompt per row, but this version holds preference pairs"):
            curate.export(pairs, format=fmt, out=tmp_path / fmt, store=store)
    sft = curate.select(rollouts, method="rejection", name="bon", store=store)
    for fmt in PAIRWISE:
        with pytest.raises(
            CurateError,
            match=rf"--format {fmt} writes preference pairs and needs columns prompt, chosen and rejected "
            r"\(missing chosen, rejected; make them from rollouts with curate select REF --method pairs\)",
        ):
            curate.export(sft, format=fmt, out=tmp_path / f"sft-{fmt}", store=store)
    # and on the way back in: each reader names the one that fits
    dpo = curate.export(pairs, format="trl-dpo", out=tmp_path / "dpo", store=store)
    with pytest.raises(InputError, match=r"a preference row \(chosen, rejected\): import it with --format trl-dpo"):
        read_export(dpo.files[0], format="trl-sft")
    orl = curate.export(pairs, format="openrlhf-dpo", out=tmp_path / "orl", store=store)
    with pytest.raises(InputError, match=r"import it with --format openrlhf-dpo"):
        read_export(orl.files[0], format="openrlhf")
    lf = curate.export(pairs, format="llamafactory-dpo", out=tmp_path / "lfd", store=store)
    with pytest.raises(
        InputError, match=r"is a preference dataset \(ranking: true\); import it with --format llamafactory-dpo"
    ):
        read_export(lf.out_dir, format="llamafactory")
    lf_sft = curate.export(sft, format="llamafactory", out=tmp_path / "lfs", store=store)
    with pytest.raises(
        InputError, match=r"is not a preference dataset \(no ranking: true\); import it with --format llamafactory$"
    ):
        read_export(lf_sft.out_dir, format="llamafactory-dpo")


def test_llamafactory_dpo_refuses_what_its_converter_would_skip(store, tmp_path):
    row = {
        "id": "p",
        "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "chosen": [{"role": "assistant", "content": "x"}],
        "rejected": [{"role": "assistant", "content": "y"}],
    }
    bad_prompt = curate.save([row], name="bad-prompt", store=store)
    with pytest.raises(CurateError, match=r"row 0 \(id p\): field 'prompt': .*ends with the user \(2 turns after"):
        curate.export(bad_prompt, format="llamafactory-dpo", out=tmp_path / "a", store=store)
    two = {**row, "prompt": row["prompt"][:1], "chosen": [{"role": "assistant", "content": "x"}] * 2}
    with pytest.raises(CurateError, match=r"field 'chosen': LLaMA-Factory takes one assistant message here, got 2"):
        curate.export(
            curate.save([two], name="two", store=store), format="llamafactory-dpo", out=tmp_path / "b", store=store
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ end to end
def _prompts(store, n: int = 3):
    rows = [
        {"id": f"q{i}", "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(n)
    ]
    return curate.save(rows, name="toy-prompts", store=store)


def _check_against_rollouts(ro, bon, prs) -> None:
    """The picks agree with the rollouts' rewards: each prompt's best completion, and its best against its worst."""
    groups: dict[str, list[dict]] = {}
    for r in ro.to_pylist():
        groups.setdefault(r["prompt_id"], []).append(r)
    best = {p: max(g, key=lambda r: (r["reward"], -r["completion_tokens"], -r["sample"])) for p, g in groups.items()}
    worst = {p: min(g, key=lambda r: (r["reward"], r["completion_tokens"], r["sample"])) for p, g in groups.items()}
    assert bon.to_arrow().column("id").to_pylist() == [best[p]["id"] for p in groups]
    for row in bon.to_pylist():
        assert row["messages"][-1] == {"role": "assistant", "content": best[row["prompt_id"]]["completion"]}
    spread = [p for p in groups if best[p]["reward"] > worst[p]["reward"]]
    assert spread, "the seed gives at least one prompt both rewards"
    assert prs.to_arrow().column("id").to_pylist() == [f"{best[p]['id']}>{worst[p]['id']}" for p in spread]


def test_end_to_end_from_a_tiny_model_rollout(store, tmp_path, tiny_model_path):
    import datasets
    from transformers import AutoTokenizer
    from trl.data_utils import maybe_apply_chat_template

    ro = curate.rollout(
        _prompts(store),
        n=4,
        model=tiny_model_path,
        max_tokens=6,
        reward="tests.test_preference:length_parity",
        name="toy-rollouts",
        store=store,
    )
    bon = curate.select(ro, method="rejection", name="toy-bon", store=store)
    prs = curate.select(ro, method="pairs", name="toy-pairs", store=store)
    _check_against_rollouts(ro, bon, prs)
    sft = curate.export(bon, format="trl-sft", out=tmp_path / "sft", store=store)
    assert [r["messages"] for r in _jsonl(sft.files[0])] == [r["messages"] for r in bon.to_pylist()]
    dpo = curate.export(prs, format="trl-dpo", out=tmp_path / "dpo", store=store)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(dpo.files[0]), split="train", cache_dir=str(tmp_path / "c"))
    for row, pair in zip(ds, prs.to_pylist(), strict=True):
        text = maybe_apply_chat_template(row, tok)
        assert text["chosen"] == pair["chosen"][0]["content"] + "<|im_end|>\n"
    back = curate.import_data(str(dpo.out_dir), name="toy-pairs-back", format="trl-dpo", store=store)
    assert (
        back.to_arrow()
        .select(["id", "prompt", "chosen", "rejected", "margin"])
        .equals(prs.to_arrow().select(["id", "prompt", "chosen", "rejected", "margin"]))
    )


@pytest.mark.slow
def test_end_to_end_on_sample_math_with_the_embedded_model(store, tmp_path):
    from trl.data_utils import maybe_apply_chat_template

    from curate.models import load_tokenizer

    # Two prompts x two completions of 24 tokens: the embedded model runs ~2 tokens/s/core on this busy box.
    v = curate.sample("sample-math", n=2, store=store)
    ro = curate.rollout(v, n=2, max_tokens=24, reward="tests.test_preference:shaped_math", store=store, name="mr")
    bon = curate.select(ro, method="rejection", name="math-bon", store=store)
    prs = curate.select(ro, method="pairs", name="math-pairs", store=store)
    _check_against_rollouts(ro, bon, prs)
    dpo = curate.export(prs, format="trl-dpo", out=tmp_path / "dpo", store=store)
    tok = load_tokenizer()  # the embedded model's, the one that made the rollouts
    for row, pair in zip(_jsonl(dpo.files[0]), prs.to_pylist(), strict=True):
        text = maybe_apply_chat_template(row, tok)
        assert text["prompt"].endswith("<|im_start|>assistant\n")
        assert text["chosen"].startswith(pair["chosen"][0]["content"])
