"""Import round trips from issue #20: OpenRLHF SFT rows, all-NaN score columns, folders of data files, and
``--data-source`` from the CLI. Each imports, exports where the item is about an export, and reads back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate
from curate.errors import InputError
from curate.store import Store
from tests.cli_helpers import run_cli


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ------------------------------------------------------------------------------------------ OpenRLHF SFT
def test_openrlhf_sft_input_output_builds_messages_and_exports(store, tmp_path):
    src = _jsonl(
        tmp_path / "sft.jsonl",
        [
            {"input": "2+2?", "output": "4"},
            {
                "input": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "output": "Hey",
            },
        ],
    )
    v = curate.import_data(src, name="orl", store=store)
    assert v.manifest["stats"]["layout"] == "input-output"
    rows = v.to_pylist()
    assert rows[0]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert rows[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert rows[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey"},
    ]
    assert "input" not in v.columns and "output" not in v.columns
    # the export that needs messages now works, and its rows come back as the same conversations
    out = curate.export(v, format="jsonl", out=tmp_path / "exp", store=store)
    back = curate.import_data(str(out.files[0]), name="orl-back", store=store)
    assert [r["messages"] for r in back.to_pylist()] == [r["messages"] for r in rows]
    curate.export(v, format="trl-sft", out=tmp_path / "trl", store=store)


def test_input_output_comes_after_every_older_layout(store, tmp_path):
    # a file an older layout read keeps its meaning: prompt + input + output stays prompt-only
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "input": "x", "output": "y"}])
    v = curate.import_data(src, name="p", store=store)
    assert v.manifest["stats"]["layout"] == "prompt-only"
    assert v.to_pylist()[0]["input"] == "x"


def test_openrlhf_sft_output_that_is_not_text_names_line_and_field(store, tmp_path):
    src = _jsonl(tmp_path / "bad.jsonl", [{"input": "a", "output": "b"}, {"input": "a", "output": {"x": 1}}])
    with pytest.raises(InputError, match=r"bad\.jsonl: line 2: field 'output': expected a non-empty list"):
        curate.import_data(src, name="bad", store=store)


# ------------------------------------------------------------------------------------------ NaN scores
def test_all_nan_score_column_comes_back_float64(store, tmp_path):
    rows = [{"id": str(i), "prompt": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    table = curate.ops.as_table(rows)
    for col in ("score", "random_score", "pass_rate"):
        table = table.append_column(col, pa.array([math.nan] * 3, pa.float64()))
    table = table.append_column("note", pa.array([None] * 3, pa.null()))
    v = curate.save(table, name="scored", op={"name": "save"}, store=store)
    out = curate.export(v, format="jsonl", out=tmp_path / "exp", store=store)
    assert '"score": null' in Path(out.files[0]).read_text()  # strict JSON: NaN is written as null
    back = curate.import_data(str(out.files[0]), name="scored-back", store=store).to_arrow()
    for col in ("score", "random_score", "pass_rate"):
        assert back.schema.field(col).type == pa.float64(), col
        assert back.column(col).null_count == 3
    assert back.schema.field("note").type == pa.null()  # not a score: nothing to restore


def test_null_score_column_typed_float64_across_chunks(store, tmp_path, monkeypatch):
    import curate.io as cio

    monkeypatch.setattr(cio, "CHUNK_BYTES", 4096)  # a few dozen rows a chunk: many chunks, one of them null
    src = _jsonl(tmp_path / "s.jsonl", [{"prompt": f"q{i}" * 30, "score": None} for i in range(1500)])
    t = curate.import_data(src, name="s", store=store).to_arrow()
    assert t.schema.field("score").type == pa.float64() and t.column("score").null_count == 1500


# ------------------------------------------------------------------------------------------ folders
def test_folder_holding_one_jsonl_imports_as_that_file(store, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    src = _jsonl(folder / "data.jsonl", [{"question": "1+1?", "answer": "#### 2"}])
    (folder / "curate.json").write_text("{}")  # what an export writes beside its data: not data
    a = curate.import_data(str(folder), name="f", store=store)
    b = curate.import_data(src, name="f", store=store)
    assert a.id == b.id and a.to_pylist() == b.to_pylist()
    assert a.to_pylist()[0]["answer"] == "2"


def test_folder_of_several_jsonl_reads_them_in_order_and_names_the_file(store, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    _jsonl(folder / "b.jsonl", [{"prompt": "second"}])
    _jsonl(folder / "a.jsonl", [{"prompt": "first"}])
    v = curate.import_data(str(folder), name="parts", store=store)
    assert [r["prompt"][0]["content"] for r in v.to_pylist()] == ["first", "second"]
    (folder / "c.jsonl").write_text('{"prompt": "x"}\n{"prompt": ""}\n')
    with pytest.raises(InputError, match=r"c\.jsonl: line 2: field 'prompt': empty"):
        curate.import_data(str(folder), name="parts2", store=store)


def test_folder_of_parquet_files_imports(store, tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"prompt": ["a", "b"]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"prompt": ["c"]}), folder / "part-1.parquet")
    v = curate.import_data(str(folder), name="pq", store=store)
    assert [r["prompt"][0]["content"] for r in v.to_pylist()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({}, r"not a saved Hugging Face dataset .* and no data files"),
        ({"a.jsonl": '{"prompt": "x"}\n', "b.csv": "prompt\nx\n"}, r"more than one kind \(csv, jsonl\)"),
    ],
)
def test_folder_problems_are_one_line(store, tmp_path, files, match):
    folder = tmp_path / "d"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(InputError, match=match) as e:
        curate.import_data(str(folder), name="d", store=store)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ --data-source
def test_cli_data_source_replaces_the_rows_own(tmp_path):
    src = _jsonl(
        tmp_path / "g.jsonl",
        [{"question": "1+1?", "answer": "#### 2", "data_source": "gsm8k"}, {"question": "2+2?", "answer": "#### 4"}],
    )
    store = tmp_path / "store"
    p = run_cli(store, "import", src, "--name", "g", "--data-source", "openai/gsm8k")
    assert p.returncode == 0, p.stderr
    rows = curate.load("g", store=Store(store)).to_pylist()
    assert [r["data_source"] for r in rows] == ["openai/gsm8k", "openai/gsm8k"]
    # without the flag a row keeps its own, and one without gets the dataset name
    p = run_cli(store, "import", src, "--name", "h")
    assert p.returncode == 0, p.stderr
    assert [r["data_source"] for r in curate.load("h", store=Store(store)).to_pylist()] == ["gsm8k", "h"]


# ------------------------------------------------------------------------------------------ trainer readers
def test_openrlhf_reader_builds_messages_from_input_and_output(store, tmp_path):
    src = _jsonl(tmp_path / "orl.jsonl", [{"input": "2+2?", "output": "4"}, {"input": "Hi", "label": "x"}])
    v = curate.import_data(src, name="orl-fmt", format="openrlhf", store=store)
    rows = v.to_pylist()
    assert rows[0]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert rows[1].get("messages") is None and rows[1]["answer"] == "x"  # an RL prompt row stays a prompt


def test_verl_extra_info_answer_reads_back_as_answer_without_the_sidecar(store, tmp_path):
    src = _jsonl(tmp_path / "m.jsonl", [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+3?", "answer": "5"}])
    v = curate.import_data(src, name="m", store=store)
    curate.export(v, format="verl", out=tmp_path / "verl", store=store)
    (tmp_path / "verl" / "curate.json").unlink()  # a file from elsewhere: no record of what curate added
    (data,) = [p for p in (tmp_path / "verl").iterdir() if p.suffix == ".parquet"]
    back = curate.import_data(str(data), name="m-back", format="verl", store=store)
    assert [r["answer"] for r in back.to_pylist()] == ["2", "5"]
    assert "extra_answer" not in back.columns
