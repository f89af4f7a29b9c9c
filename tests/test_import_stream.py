"""Streaming import: a JSONL file read in chunks gives the version one read in one go gives (same id, rows, types,
ids, errors), and peak memory does not grow with the file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import curate
import curate.io as cio
import curate.records as records
from curate.errors import InputError
from curate.store import Store
from tests.test_import import snapshot

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=i % 2 == 0) + "\n" for i, r in enumerate(rows)))
    return str(path)


def _drifting(n: int) -> list[dict]:
    """Rows whose pass-through columns change type along the file, as real exports do."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        r: dict = {"prompt": f"q{i} " + "x" * rng.randint(0, 200), "answer": str(i % 7)}
        r["meta"] = rng.random() if i > n // 2 else rng.randint(0, 5)  # int64 early, float64 late
        if i > n // 3:
            r["tags"] = ["a", "b"][: rng.randint(0, 2)]  # absent, then list<null>, then list<string>
        r["obj"] = {f"k{i % 3 if i > n // 2 else 0}": i}  # a struct that gains fields
        if i > n * 3 // 4:
            r["mixed"] = "s" if i % 2 else 1  # int64 early, then text and numbers: JSON text for the whole
        elif i > n // 4:
            r["mixed"] = 2
        if i > n * 2 // 3:
            r["late"] = {}  # an empty object, Parquet cannot write it: JSON text
        if i % 5 == 0:
            r["id"] = f"given{i}"
        if i % 97 == 0:
            r["prompt"] = "dup"  # same content: hashed ids with -n suffixes
        r["ctrl"] = 'é\u2028\x01\\"' if i % 11 == 0 else None
        rows.append(r)
    return rows


def _import(store, src: str, name: str, chunk: int, monkeypatch) -> curate.Version:
    monkeypatch.setattr(cio, "CHUNK_BYTES", chunk)
    return curate.import_data(src, name=name, store=store)


def _whole_and_chunked(store, src: str, chunk: int, monkeypatch) -> tuple[curate.Version, curate.Version]:
    """The same import (same name: the default data_source is the name) read in one go and in chunks."""
    whole = _import(store, src, "d", 1 << 30, monkeypatch)
    return whole, _import(Store(store.root.parent / "other-store"), src, "d", chunk, monkeypatch)


def test_chunked_import_equals_whole_import(store, tmp_path, monkeypatch):
    rows = _drifting(3000)
    src = _write(tmp_path / "d.jsonl", rows)
    whole = _import(store, src, "whole", 1 << 30, monkeypatch)
    # a given id equal to the content hash of an earlier row (which then steps past it to "-1")
    rows.append({"id": whole.to_pylist()[1]["id"], "prompt": "late given id"})
    src = _write(tmp_path / "d.jsonl", rows)
    redone = []
    real_redo = records._redo
    monkeypatch.setattr(records, "_redo", lambda *a: redone.append(1) or real_redo(*a))
    whole, chunked = _whole_and_chunked(store, src, 16_000, monkeypatch)  # ~50 chunks
    assert redone == [1]  # the late id and the JSON-text column need the second reading
    assert chunked.id == whole.id  # the same recipe: the id never depends on how the file was read
    a, b = whole.to_arrow(), chunked.to_arrow()
    assert b.schema == a.schema
    assert b.equals(a)
    assert a.schema.field("meta").type == pa.float64()
    assert a.schema.field("mixed").type == pa.string() and a.schema.field("late").type == pa.string()
    assert a.column("id").to_pylist()[1].endswith("-1")
    assert len(chunked.data_files) == 1 and len(chunked) == 3001


def test_chunked_import_without_drift_streams_the_spill(store, tmp_path, monkeypatch):
    src = _write(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "score": i / 7} for i in range(2000)])
    redone = []
    monkeypatch.setattr(records, "_redo", lambda *a: redone.append(1))
    whole, chunked = _whole_and_chunked(store, src, 4096, monkeypatch)
    assert redone == [] and chunked.to_arrow().equals(whole.to_arrow())


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"prompt": NaN, "x": 1}', r"line 1801: field 'prompt': expected a non-empty list of \{role, content\}"),
        ('{"prompt": "a", "n": 123456789012345678901234}', r"line 1801: field 'n': an integer too large for 64 bits"),
        ('{"prompt": "\\ud800"}', r"line 1801: field 'prompt': text holds a lone surrogate"),
        ('{"prompt": "a", "id": "given5"}', r"line 1801: field 'id': duplicate id 'given5' \(first at line 6\)"),
        ('{"prompt": oops}', r"line 1801: invalid JSON"),
    ],
)
def test_an_error_in_a_late_chunk_names_its_line_and_stores_nothing(store, tmp_path, monkeypatch, line, match):
    rows = [{"prompt": f"q{i}", **({"id": f"given{i}"} if i == 5 else {})} for i in range(1800)]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + line + "\n" + '{"prompt": "after"}\n')
    before = snapshot(store.root)
    with pytest.raises(InputError, match=r"bad\.jsonl: " + match) as e:
        _import(store, str(path), "bad", 4096, monkeypatch)
    assert "\n" not in str(e.value)
    assert snapshot(store.root) == before


def test_bad_utf8_bom_nan_and_big_numbers_in_a_chunked_file(store, tmp_path, monkeypatch):
    path = tmp_path / "u.jsonl"
    body = "".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(1500)).encode()
    tail = b'{"prompt": "n", "x": NaN, "big": 9223372036854775807, "neg": -9223372036854775808}\n'
    path.write_bytes(b"\xef\xbb\xbf" + body + tail)
    v = _import(store, str(path), "u", 4096, monkeypatch)
    rows = v.to_pylist()
    assert len(v) == 1501 and rows[0]["prompt"][0]["content"] == "q0"
    assert str(rows[-1]["x"]) == "nan" and rows[-1]["neg"] == -(2**63)
    assert rows[-1]["big"] == 2**63 - 1  # read by json (19 digits), exactly as orjson would: int64's largest
    path.write_bytes(body + b'{"prompt": "n", "big": 18446744073709551615}\n')  # orjson's int, json's error
    with pytest.raises(InputError, match=r"line 1501: field 'big': an integer too large for 64 bits"):
        _import(store, str(path), "u3", 4096, monkeypatch)
    path.write_bytes(body + b'{"prompt": "\xff"}\n')
    with pytest.raises(InputError, match=r"line 1501: not UTF-8 text \(byte 0xff\)"):
        _import(store, str(path), "u2", 4096, monkeypatch)


# ------------------------------------------------------------------------------------------ memory
_CHILD = """
import json, os, resource, sys
import pandas, pyarrow.parquet  # imported by any import: loaded before the baseline, not counted as growth
import curate, curate.formats, curate.io as cio
from curate.store import Store
cio.CHUNK_BYTES = int(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
curate.import_data(sys.argv[1], name="m", store=Store(sys.argv[2]))
print(json.dumps({"growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def _peak_growth(src: Path, store: Path, chunk: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(store), str(chunk)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])["growth_mb"]


def _chat_file(path: Path, rows: int) -> Path:
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    with open(path, "w") as f:
        for _ in range(rows):
            user = " ".join(rng.choices(words, k=60))
            msgs = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": " ".join(rng.choices(words, k=120))},
            ]
            f.write(json.dumps({"messages": msgs, "score": rng.random()}) + "\n")
    return path


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    chunk = 256 << 10
    small = _chat_file(tmp_path / "small.jsonl", 3_000)  # ~3 MB: a dozen chunks
    big = _chat_file(tmp_path / "big.jsonl", 9_000)  # 3x the rows
    assert big.stat().st_size > 8 * chunk * 3
    g_small = _peak_growth(small, tmp_path / "s1", chunk)
    g_big = _peak_growth(big, tmp_path / "s2", chunk)
    # the whole file as Python objects would be ~10x its size: 3x the file must not move the peak by more
    # than a few MB (the ids of the rows seen so far, and allocator noise)
    assert g_big - g_small < 16, (g_small, g_big)
    assert g_big < 80, (g_small, g_big)


def test_chunked_import_into_an_object_store(store, tmp_path, monkeypatch):
    import uuid

    src = _write(tmp_path / "r.jsonl", _drifting(1200))
    local = _import(store, src, "d", 1 << 30, monkeypatch)
    remote_store = Store(f"memory://curate-test-{uuid.uuid4().hex[:8]}/store")
    remote = _import(remote_store, src, "d", 16_000, monkeypatch)
    assert remote.id == local.id and remote.to_arrow().equals(local.to_arrow())
    assert remote_store.verify() == []
