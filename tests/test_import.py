"""Import: every layout, GSM8K, readers, and bad input that leaves the store untouched."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate
from curate.errors import CurateError, InputError
from curate.records import final_answer

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under the store and its hash: 'byte-for-byte unchanged' is equality of two snapshots."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_gsm8k_import_and_reimport_is_free(store):
    v = curate.import_data(str(GSM8K / "test.jsonl"), name="gsm8k", store=store)
    assert len(v) == 1319
    assert {"prompt", "answer", "messages", "id"} <= set(v.columns)
    row = v.to_pylist()[0]
    assert row["answer"] == "18"
    assert row["prompt"] == [{"role": "user", "content": row["messages"][0]["content"]}]
    assert row["messages"][1]["role"] == "assistant" and row["messages"][1]["content"].endswith("#### 18")
    before = snapshot(store.root)
    again = curate.import_data(str(GSM8K / "test.jsonl"), name="gsm8k", store=store)
    assert again.id == v.id and snapshot(store.root) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so #### 72", "72"),
        ("#### 1,072", "1072"),
        ("no marker 5", "no marker 5"),
        ("#### -3.5", "-3.5"),
        ("a #### b #### 9 ", "9"),
    ],
)
def test_final_answer(text, expected):
    assert final_answer(text) == expected


LAYOUTS = {
    "alpaca": (
        {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be brief."},
        [("system", "Be brief."), ("user", "Add\n\n2 and 3"), ("assistant", "5")],
    ),
    "sharegpt": (
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        [("user", "Hi"), ("assistant", "Hello")],
    ),
    "openai": (
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        [("user", "Q"), ("assistant", "A")],
    ),
    "prompt-completion": ({"prompt": "Say hi", "completion": "hi"}, [("user", "Say hi"), ("assistant", "hi")]),
    "question-answer": (
        {"question": "1+1?", "answer": "1+1=2\n#### 2"},
        [("user", "1+1?"), ("assistant", "1+1=2\n#### 2")],
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout(store, tmp_path, layout):
    raw, expected = LAYOUTS[layout]
    v = curate.import_data(_jsonl(tmp_path / "d.jsonl", [raw, {**raw, "extra": 1}]), name="d", store=store)
    assert v.manifest["stats"]["layout"] == layout
    rows = v.to_pylist()
    assert [(m["role"], m["content"]) for m in rows[0]["messages"]] == expected
    assert rows[0]["prompt"] == [m for m in rows[0]["messages"][:-1]]
    assert rows[1]["extra"] == 1 and rows[0]["data_source"] == "d"
    assert len({r["id"] for r in rows}) == 2


def test_prompt_only_rl_layout_and_map(store, tmp_path):
    src = _jsonl(tmp_path / "rl.jsonl", [{"problem": "2+2?", "solution": "4", "uid": 7}])
    v = curate.import_data(src, name="rl", mapping=["prompt=problem", "answer=solution", "id=uid"], store=store)
    (row,) = v.to_pylist()
    assert row == {"id": "7", "prompt": [{"role": "user", "content": "2+2?"}], "answer": "4", "data_source": "rl"}


def test_readers_json_csv_parquet_hf(store, tmp_path):
    rows = [{"question": f"q{i}", "answer": f"s #### {i}"} for i in range(4)]
    (tmp_path / "a.json").write_text(json.dumps({"data": rows}))
    with open(tmp_path / "a.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hfdir"))
    answers = None
    for src in ("a.json", "a.csv", "a.parquet", "hfdir"):
        v = curate.import_data(str(tmp_path / src), name=f"x{src.replace('.', '')}", store=store)
        got = [r["answer"] for r in v.to_pylist()]
        answers = answers or got
        assert got == answers == ["0", "1", "2", "3"], src


def test_hub_id_offline_is_a_clear_error(store):
    with pytest.raises(InputError, match="hub could not provide it"):
        curate.import_data("nobody/nothing", name="x", store=store)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"question": "a", "answer": "b"}\n{"question": oops}\n', r"bad\.jsonl: line 2: invalid JSON"),
        ('{"question": "a"}\n', r"cannot tell the layout"),
        (
            '{"question": "a", "answer": "#### 1"}\n{"question": "", "answer": "x"}\n',
            r"line 2: field 'question': empty",
        ),
        ('{"messages": [{"role": "wizard", "content": "x"}]}\n', r"line 1: field 'messages\[0\]\.role'"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n', r"line 1: field 'messages': no assistant turn"),
        ("", r"empty file"),
        ("[1, 2]\n", r"line 1: expected a JSON object"),
    ],
)
def test_bad_input_names_file_line_field_and_changes_nothing(store, tmp_path, content, match):
    curate.save(pa.table({"id": ["a"]}), name="existing", store=store)
    before = snapshot(store.root)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(CurateError, match=match):
        curate.import_data(str(bad), name="bad", store=store)
    assert snapshot(store.root) == before


def test_duplicate_source_ids_are_refused(store, tmp_path):
    src = _jsonl(tmp_path / "d.jsonl", [{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}])
    with pytest.raises(InputError, match=r"line 2: field 'id': duplicate id '1'"):
        curate.import_data(src, name="d", store=store)


def test_unknown_map_field(store, tmp_path):
    src = _jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    with pytest.raises(InputError, match="not in the data: nope"):
        curate.import_data(src, name="d", mapping=["answer=nope"], store=store)
