"""Benchmark decontamination (curate/selectors/decontam.py) on real data, tiny goldens and bad input.

The planted test: 2,000 GSM8K train rows, plus 50 GSM8K test items copied verbatim, 50 copied with every number
changed and one or two phrases reworded (a deterministic editor below), and 50 copies of train rows (the dedup
plants, which decontam must leave alone). The built-in ``gsm8k`` benchmark must catch >= 95% of the verbatim and
>= 80% of the edited plants and drop < 1% of the other rows. ``benchmarks/dedup.py`` prints the same numbers.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess

import numpy as np
import pytest

import curate
from curate.errors import CurateError
from curate.selectors import make_selector
from curate.selectors.decontam import BUILTIN_DIR, BUILTINS, longest_common_run
from curate.text import canonical
from tests.cli_helpers import CLI, refused, run_cli
from tests.test_import import GSM8K

# ---------------------------------------------------------------------------------------------- the plants

_NUMBER = re.compile(r"\d+")
_REWORD = [
    ("How many", "What is the number of"),
    ("How much", "What is the amount of"),
    ("how many", "what number of"),
    (" has ", " owns "),
    (" buys ", " purchases "),
    (" bought ", " purchased "),
    (" each ", " every "),
    (" total ", " overall "),
    (" wants to ", " would like to "),
    (" needs ", " requires "),
]


def edit_item(question: str, answer: str, k: int) -> tuple[str, str]:
    """A benchmark item as a careless copy would have it: every number changed (consistently in question and
    answer) and the first two phrases of ``_REWORD`` found in the question reworded (or a lead-in added)."""
    new: dict[str, str] = {}

    def renumber(m: re.Match) -> str:
        return new.setdefault(m.group(0), str(int(m.group(0)) + 1 + k % 3))

    q, a = _NUMBER.sub(renumber, question), _NUMBER.sub(renumber, answer)
    done = 0
    for old, repl in _REWORD:
        if old in q and done < 2:
            q, done = q.replace(old, repl, 1), done + 1
    return (q if done else "Suppose that " + q[0].lower() + q[1:]), a


def copy_row(question: str, answer: str, k: int) -> tuple[str, str]:
    """A duplicate of a row: even k the same text up to case, spacing and Unicode form (exact after
    normalisation), odd k that plus one word of the answer replaced (a near duplicate)."""
    q = question.upper() if k % 4 == 0 else question.replace(" ", "  ", 3)
    a = answer.replace("1", "\uff11")  # FULLWIDTH DIGIT ONE: NFKC maps it back to 1
    if k % 2:
        words = a.split(" ")
        words[len(words) // 2] = "banana"
        a = " ".join(words)
    return q, a


def chat(question: str, answer: str, rid: str) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def planted_rows(n_train: int = 2000, n_each: int = 50, seed: int = 0) -> tuple[list[dict], dict[str, list[str]]]:
    """(rows, ids by kind): train rows ``train-i``, test items ``verbatim-k-of-test-j`` / ``edited-k-of-test-j``,
    and copies ``exact-k-of-train-i`` / ``near-k-of-train-i``."""
    train = [json.loads(line) for line in (GSM8K / "train.jsonl").read_text().splitlines()][:n_train]
    test = [json.loads(line) for line in (GSM8K / "test.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(seed)
    items = rng.choice(len(test), 2 * n_each, replace=False)
    sources = rng.choice(n_train, n_each, replace=False)
    rows = [chat(r["question"], r["answer"], f"train-{i}") for i, r in enumerate(train)]
    kinds: dict[str, list[str]] = {
        "train": [r["id"] for r in rows],
        "verbatim": [],
        "edited": [],
        "exact": [],
        "near": [],
    }
    for k, j in enumerate(items[:n_each]):
        rows.append(chat(test[j]["question"], test[j]["answer"], f"verbatim-{k}-of-test-{j}"))
        kinds["verbatim"].append(rows[-1]["id"])
    for k, j in enumerate(items[n_each:]):
        rows.append(chat(*edit_item(test[j]["question"], test[j]["answer"], k), f"edited-{k}-of-test-{j}"))
        kinds["edited"].append(rows[-1]["id"])
    for k, i in enumerate(sources):
        kind = "near" if k % 2 else "exact"
        rows.append(chat(*copy_row(train[i]["question"], train[i]["answer"], k), f"{kind}-{k}-of-train-{i}"))
        kinds[kind].append(rows[-1]["id"])
    return rows, kinds


def decisions_by_id(version) -> dict[str, dict]:
    return {d["id"]: d for d in version.decisions().to_pylist()}


# ---------------------------------------------------------------------------------------------- planted test


def test_planted_gsm8k_test_items_are_found_and_train_rows_kept(store):
    rows, kinds = planted_rows()
    v = curate.save(rows, name="planted", store=store)
    out = curate.select(v.ref, method="decontam", against="gsm8k", name="planted-clean", store=store)
    d = decisions_by_id(out)
    dropped = {i for i, x in d.items() if not x["kept"]}
    verbatim = len(dropped & set(kinds["verbatim"])) / len(kinds["verbatim"])
    edited = len(dropped & set(kinds["edited"])) / len(kinds["edited"])
    others = [i for k in ("train", "exact", "near") for i in kinds[k]]
    false_drops = len(dropped & set(others)) / len(others)
    print(f"decontam planted: verbatim {verbatim:.0%}, edited {edited:.0%}, false drops {false_drops:.2%}")
    assert verbatim >= 0.95 and edited >= 0.80 and false_drops < 0.01
    # The reason names the planted item, and the overlap is that item's own text.
    for rid in kinds["verbatim"]:
        if rid in dropped:
            assert d[rid]["reason"] == f"contaminated:gsm8k:test-{rid.rsplit('-', 1)[1]}"
            assert d[rid]["score"] == 1.0 and d[rid]["bench"] == "gsm8k"
            assert d[rid]["overlap"] in canonical(re.sub(r"[^\w\s]|_", " ", rows_by_id(rows)[rid]))
    named = sum(d[r]["reason"].endswith(f":test-{r.rsplit('-', 1)[1]}") for r in kinds["edited"] if r in dropped)
    assert named == len(dropped & set(kinds["edited"]))
    assert len(out) == len(v) - len(dropped)
    leaks = out.manifest["stats"]["leaks"]
    assert sum(x["rows"] for x in leaks) >= len(dropped)
    assert {f"test-{r.rsplit('-', 1)[1]}" for r in kinds["verbatim"] if r in dropped} <= {x["item"] for x in leaks}


def rows_by_id(rows: list[dict]) -> dict[str, str]:
    return {r["id"]: "\n".join(m["content"] for m in r["messages"]) for r in rows}


def test_ngram_only_misses_edited_items_that_the_lcs_rule_catches(store):
    rows, kinds = planted_rows(n_train=200, n_each=20)
    v = curate.save(rows, name="p", store=store)
    plain = make_selector("decontam", against="gsm8k", lcs_threshold=None).fit(v)
    both = make_selector("decontam", against="gsm8k").fit(v)
    ids = v.to_arrow(columns=["id"]).column("id").to_pylist()
    edited = [i for i, rid in enumerate(ids) if rid in kinds["edited"]]
    caught_plain = sum(bool(plain.reasons_[i]) for i in edited)
    caught_both = sum(bool(both.reasons_[i]) for i in edited)
    assert caught_plain < caught_both == len(edited)
    # The LCS rule only adds drops: every n-gram drop is still there.
    assert all(b for a, b in zip(plain.reasons_, both.reasons_, strict=True) if a)


# ---------------------------------------------------------------------------------------------- goldens

BENCH = [
    {
        "id": "q1",
        "question": "Alice has three red apples and gives one to Bob. How many apples are left?",
        "answer": "2",
    },
    {"id": "q2", "question": "A train leaves at noon traveling sixty miles per hour towards the city.", "answer": "x"},
]


def write_bench(path, rows=BENCH):
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_golden_ngram_hits_reasons_and_overlap(store, tmp_path):
    bench = write_bench(tmp_path / "mini.jsonl")
    rows = [
        chat("Tell me: ALICE has three red apples, and gives one to Bob!", "ok", "a"),  # 10 words of q1 in a row
        chat("Alice has three red apples.", "She gives one to Bob.", "b"),  # 5 + 5 words: no 8-run
        chat("Unrelated question about cooking pasta tonight.", "Boil water first.", "c"),
    ]
    v = curate.save(rows, name="g", store=store)
    out = curate.select(
        v.ref, method="decontam", against=str(bench), ngram=8, lcs_threshold=None, name="g-c", store=store
    )
    d = decisions_by_id(out)
    assert d["a"]["reason"] == "contaminated:mini:q1" and d["a"]["bench"] == "mini" and d["a"]["bench_item"] == "q1"
    assert d["a"]["overlap"] == "alice has three red apples and gives one to bob"
    # The score is the LCS ratio: the 10 common words of the question's 15.
    assert d["a"]["score"] == pytest.approx(10 / 15)
    assert d["b"]["kept"] and d["c"]["kept"] and d["b"]["reason"] == "" and d["b"]["overlap"] is None
    assert out.to_arrow().column("id").to_pylist() == ["b", "c"]
    assert out.manifest["stats"]["leaks"] == [{"bench": "mini", "item": "q1", "rows": 1}]
    assert out.manifest["stats"]["reasons"] == {"contaminated:mini": 1}
    # With --ngram 5 the split copy shares 5-word runs too.
    five = curate.select(
        v.ref, method="decontam", against=str(bench), ngram=5, lcs_threshold=None, name="g5", store=store
    )
    assert [x["id"] for x in five.decisions().to_pylist() if not x["kept"]] == ["a", "b"]


def test_golden_lcs_rule_with_numbers_changed(store, tmp_path):
    # A number at least every 12 words: changing them all leaves no run of 13 words.
    question = (
        "Tom buys 12 pencils for 3 dollars each and sells them all for 50 dollars in total at the fair on day 2."
    )
    item = {"id": "n1", "question": question + " How much profit in 2 days does Tom make?", "answer": "14"}
    bench = write_bench(tmp_path / "nums.jsonl", [item])
    copy = item["question"].replace("12", "15").replace("50", "70").replace("3", "4").replace("2", "5")
    rows = [chat(copy, "ok", "copy"), chat("Tom buys pencils at the school fair.", "ok", "short")]
    v = curate.save(rows, name="n", store=store)
    ngram_only = make_selector("decontam", against=str(bench), lcs_threshold=None).fit(v)
    assert ngram_only.reasons_ == ["", ""]  # no 13 words in a row survive the number changes
    sel = make_selector("decontam", against=str(bench), lcs_threshold=0.5).fit(v)
    assert sel.reasons_ == ["contaminated:nums:n1", ""]
    assert sel.scores_[0] == 1.0  # numbers masked, every word of the question in one run
    strict = make_selector("decontam", against=str(bench), lcs_threshold=0.5, fields=("response",)).fit(v)
    assert strict.reasons_ == ["", ""]  # the copy's response is "ok": nothing to compare


def test_longest_common_run_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.integers(0, 4, rng.integers(0, 30)).astype(np.uint64)
        y = rng.integers(0, 4, rng.integers(0, 30)).astype(np.uint64)
        best = 0
        for i in range(len(x)):
            for j in range(len(y)):
                k = 0
                while i + k < len(x) and j + k < len(y) and x[i + k] == y[j + k]:
                    k += 1
                best = max(best, k)
        n, ex, ey = longest_common_run(x, y)
        assert n == best
        assert (x[ex - n : ex] == y[ey - n : ey]).all()


def test_benchmark_from_a_store_ref_is_a_parent_and_files_enter_the_version_id(store, tmp_path):
    rows = [chat(BENCH[0]["question"], "ok", "a"), chat("Nothing to see here at all today.", "ok", "b")]
    v = curate.save(rows, name="t", store=store)
    bench_v = curate.save(
        [{"id": r["id"], "prompt": [{"role": "user", "content": r["question"]}]} for r in BENCH],
        name="minibench",
        store=store,
    )
    out = curate.select(v.ref, method="decontam", against=bench_v.ref, ngram=8, name="t-c", store=store)
    assert [p["name"] for p in out.parents] == ["t", "minibench"]
    assert decisions_by_id(out)["a"]["reason"] == "contaminated:minibench:q1"
    # A bare dataset name works too when no built-in has that name.
    again = curate.select(v.ref, method="decontam", against="minibench", ngram=8, name="t-c2", store=store)
    assert decisions_by_id(again)["a"]["reason"] == "contaminated:minibench:q1"
    # The same file path with other contents is another recipe: another version.
    bench = write_bench(tmp_path / "b.jsonl")
    first = curate.select(v.ref, method="decontam", against=str(bench), name="t-f", store=store)
    write_bench(bench, BENCH[1:])
    second = curate.select(v.ref, method="decontam", against=str(bench), name="t-f", store=store)
    assert first.id != second.id and len(first) == 1 and len(second) == 2


def test_builtin_gsm8k_ships_the_whole_test_split():
    with gzip.open(BUILTIN_DIR / BUILTINS["gsm8k"], "rt") as f:
        shipped = [json.loads(line) for line in f]
    original = [json.loads(line) for line in (GSM8K / "test.jsonl").read_text().splitlines()]
    assert [{k: r[k] for k in ("question", "answer")} for r in shipped] == original
    assert [r["id"] for r in shipped] == [f"test-{i}" for i in range(len(original))]
    assert (BUILTIN_DIR / "LICENSE-gsm8k").read_text().startswith("MIT License")


def test_report_flag_prints_leaks_and_keeps_the_version_id(tmp_path):
    s = tmp_path / "store"
    rows = [chat(r["question"], r["answer"], f"r{i}") for i, r in enumerate(BENCH)] + [chat("Hi there.", "Yo.", "z")]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = write_bench(tmp_path / "mini.jsonl")

    def cli(*args):
        return subprocess.run([*CLI, "--store", str(s), *args], capture_output=True, text=True, timeout=300)

    assert cli("import", str(src), "--name", "rows").returncode == 0
    plain = cli("select", "rows", "--method", "decontam", "--against", str(bench), "--ngram", "8", "--name", "c")
    report = cli(
        "select", "rows", "--method", "decontam", "--against", str(bench), "--ngram", "8", "--report", "--name", "c"
    )
    assert plain.returncode == report.returncode == 0, report.stderr
    assert "mini q1: 1 row" in report.stdout and "mini q2: 1 row" in report.stdout
    assert "mini q1" not in plain.stdout
    assert plain.stdout.split()[1] == report.stdout.split()[1]  # id=...: --report changes no data


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--against", "nosuch"], "--against nosuch: not a built-in benchmark"),
        (["--against", "EMPTY"], "empty file"),
        (["--against", "BLANK"], "empty benchmark"),
        (["--against", "gsm8k", "--lcs-threshold", "1.5"], "--lcs-threshold must be in (0, 1]"),
        (["--against", "gsm8k", "--lcs-threshold", "0"], "--lcs-threshold must be in (0, 1]"),
        (["--against", "gsm8k", "--ngram", "0"], "--ngram must be an integer"),
        (["--against", "gsm8k", "--fields", "answer"], "--fields answer"),
        ([], "needs --against"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    s = tmp_path / "store"
    (tmp_path / "empty.jsonl").write_text("")
    write_bench(tmp_path / "blank.jsonl", [{"id": "e", "question": "?!", "answer": "..."}])  # no word at all
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(chat("Hi there.", "Yo.", "a")) + "\n")
    subprocess.run([*CLI, "--store", str(s), "import", str(rows), "--name", "rows"], check=True, capture_output=True)
    args = [
        str(tmp_path / "empty.jsonl") if a == "EMPTY" else str(tmp_path / "blank.jsonl") if a == "BLANK" else a
        for a in args
    ]
    refused(run_cli(s, "select", "rows", "--method", "decontam", *args, "--name", "x"), message)


def test_empty_store_benchmark_is_an_error(store):
    v = curate.save([chat("Hi there.", "Yo.", "a")], name="rows", store=store)
    empty = store.commit(curate.as_table([chat("x y", "z", "e")]).slice(0, 0), name="nobench", op={"name": "e"})
    with pytest.raises(CurateError, match="empty benchmark"):
        make_selector("decontam", against=empty.ref).fit(v)
