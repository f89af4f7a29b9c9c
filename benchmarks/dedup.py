"""Dedup and decontamination: speed against plain baselines in the same run, and recall on planted copies.

1. Decontamination, 13-gram, against the built-in GSM8K test split (1,319 items), on GSM8K train rows (7,473,
   repeated x4 = 29,892 unless --quick). `--method decontam` (hashed word n-grams in numpy, read from the store in
   record batches) against a straightforward Python loop: a set of the benchmark's n-gram strings, and for each
   row its n-gram strings looked up one by one (the open-r1 script's way), on the same normalisation and words.
   The rows the n-gram rule flags are asserted identical. Both sides start from the store version (the baseline
   reads it with to_pylist). Rows/s is in CPU seconds of this one process (numpy here is single-threaded: one
   core). The benchmark index is built once per process (its cost is shown on its own) and the baseline's n-gram
   set once per run. Also shown: with the LCS rule on (the default), which also catches edited copies.
2. Near dedup (Jaccard 0.8, word 5-gram shingles, 128 permutations) against datasketch: `MinHash.bulk` +
   `MinHashLSH` with the same bands and rows (weights 0.1/0.9: 14 bands of 9), every candidate pair checked by exact
   Jaccard, as curate does. Recall is over the planted copies (found = the copy is paired with the row it copies).
   Peak memory is Python's tracemalloc peak (numpy allocations included) during the run.
3. Planted recall (the numbers tests/test_decontam.py and tests/test_dedup.py assert): 2,000 GSM8K train rows,
   50 test items verbatim, 50 edited (numbers changed, a phrase reworded), 50 copies of train rows (25 exact up to
   case/space/Unicode form, 25 with one word changed).

Each timing is the min and median of --repeats runs (default 5, --quick 3).

    python benchmarks/dedup.py            # ~2 min on 2 CPU cores
    python benchmarks/dedup.py --quick    # ~30 s
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
import unicodedata
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATE_QUIET", "1")

from _util import table  # noqa: E402

import curate  # noqa: E402
from curate.selectors import make_selector  # noqa: E402
from curate.selectors.dedup import lsh_params  # noqa: E402
from curate.store import Store  # noqa: E402
from curate.text import row_texts  # noqa: E402
from tests.test_decontam import GSM8K, chat, planted_rows  # noqa: E402

_WORD = re.compile(r"[^\W_]+")


def words_of(text: str) -> list[str]:
    """The plain-Python spelling of curate.text.words: NFKC, case-folded, runs of letters and digits."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus, out


def mm(xs: list[float]) -> str:
    return f"{min(xs):.3f} / {statistics.median(xs):.3f}"


# ---------------------------------------------------------------------------------------------- 1. decontam


def baseline_grams(bench_texts: list[str], n: int) -> set[str]:
    grams: set[str] = set()
    for t in bench_texts:
        w = words_of(t)
        grams.update(" ".join(w[i : i + n]) for i in range(len(w) - n + 1))
    return grams


def baseline_decontam(version, grams: set[str], n: int) -> set[int]:
    rows = version.to_arrow(columns=["messages"]).to_pylist()
    flagged = set()
    for r, row in enumerate(rows):
        w = words_of("\n".join(m["content"] for m in row["messages"]))
        if any(" ".join(w[i : i + n]) in grams for i in range(len(w) - n + 1)):
            flagged.add(r)
    return flagged


def bench_decontam(copies: int, repeats: int, store: Store) -> list[list]:
    import json

    train = [json.loads(line) for line in (GSM8K / "train.jsonl").read_text().splitlines()]
    rows = [chat(r["question"], r["answer"], f"t{c}-{i}") for c in range(copies) for i, r in enumerate(train)]
    v = curate.save(rows, name="decontam-bench", store=store)
    bench = [json.loads(line) for line in (GSM8K / "test.jsonl").read_text().splitlines()]
    bench_texts = [r["question"] for r in bench] + [r["answer"] for r in bench]
    n = len(rows)

    from curate.selectors import decontam

    c = time.process_time()
    grams = baseline_grams(bench_texts, 13)
    base_setup = time.process_time() - c
    decontam._INDEXES.clear()
    c = time.process_time()
    make_selector("decontam", against="gsm8k", lcs_threshold=None).fit(
        v.store.commit(v.to_arrow().slice(0, 0), name="empty", op={"name": "e"})
    )
    ours_setup = time.process_time() - c
    base_w, base_c, flagged = timed(lambda: baseline_decontam(v, grams, 13), repeats)
    ours_w, ours_c, sel = timed(lambda: make_selector("decontam", against="gsm8k", lcs_threshold=None).fit(v), repeats)
    ours_flagged = {i for i, r in enumerate(sel.reasons_) if r}
    assert ours_flagged == flagged, (len(ours_flagged), len(flagged))
    lcs_w, lcs_c, lcs = timed(lambda: make_selector("decontam", against="gsm8k").fit(v), repeats)
    print(
        f"benchmark set-up, once per process (CPU s): python n-gram set {base_setup:.3f}, "
        f"curate index (read, normalise, hash the 1,319 items; LCS probes too) {ours_setup:.3f}"
    )
    out = [
        ["python set-of-n-grams loop", n, mm(base_w), mm(base_c), int(n / min(base_c)), "1x", len(flagged)],
        [
            "decontam (13-gram)",
            n,
            mm(ours_w),
            mm(ours_c),
            int(n / min(ours_c)),
            f"{min(base_c) / min(ours_c):.1f}x",
            len(ours_flagged),
        ],
        [
            "decontam (13-gram + LCS 0.5)",
            n,
            mm(lcs_w),
            mm(lcs_c),
            int(n / min(lcs_c)),
            f"{min(base_c) / min(lcs_c):.1f}x",
            sum(map(bool, lcs.reasons_)),
        ],
    ]
    return out


# ---------------------------------------------------------------------------------------------- 2. near dedup


def datasketch_near(texts: list[str], threshold: float, num_perm: int, k: int) -> set[tuple[int, int]]:
    from datasketch import MinHash, MinHashLSH

    sets = []
    for t in texts:
        w = words_of(t)
        s = {" ".join(w[i : i + k]).encode() for i in range(len(w) - k + 1)} if len(w) >= k else {" ".join(w).encode()}
        sets.append(s if w else set())
    live = [i for i, s in enumerate(sets) if s]
    hashes = MinHash.bulk([list(sets[i]) for i in live], num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    for i, m in zip(live, hashes, strict=True):
        lsh.insert(i, m)
    pairs = set()
    for i, m in zip(live, hashes, strict=True):
        for j in lsh.query(m):
            if j < i:
                a, b = sets[j], sets[i]
                if len(a & b) / len(a | b) >= threshold:
                    pairs.add((j, i))
    return pairs


def bench_near(n_train: int, repeats: int, store: Store) -> tuple[list[list], dict]:
    rows, kinds = planted_rows(n_train=n_train)
    v = curate.save(rows, name=f"near-bench-{n_train}", store=store)
    ids = [r["id"] for r in rows]
    index = {rid: i for i, rid in enumerate(ids)}
    copies = [(index[c.rsplit("-of-", 1)[1]], index[c]) for k in ("exact", "near") for c in kinds[k]]
    texts = row_texts(v.to_arrow(columns=["messages"]))

    def peak(fn):
        tracemalloc.start()
        out = fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return out, top / 2**20

    ds_w, ds_c, _ = timed(lambda: datasketch_near(texts, 0.8, 128, 5), repeats)
    ds_pairs, ds_mb = peak(lambda: datasketch_near(texts, 0.8, 128, 5))
    ours_w, ours_c, _ = timed(lambda: make_selector("dedup", level="near").fit(v), repeats)
    sel, ours_mb = peak(lambda: make_selector("dedup", level="near").fit(v))
    ours_found = sum(sel.reasons_[c] == f"duplicate_of:{ids[o]}" for o, c in copies)
    ds_found = sum((o, c) in ds_pairs for o, c in copies)
    b, r = lsh_params(0.8, 128)
    n = len(rows)
    out = [
        [
            "datasketch MinHashLSH",
            n,
            f"{b}x{r}",
            mm(ds_w),
            mm(ds_c),
            f"{ds_found}/{len(copies)}",
            f"{ds_mb:.1f}",
            "1x",
        ],
        [
            "dedup --level near",
            n,
            f"{b}x{r}",
            mm(ours_w),
            mm(ours_c),
            f"{ours_found}/{len(copies)}",
            f"{ours_mb:.1f}",
            f"{min(ds_c) / min(ours_c):.1f}x",
        ],
    ]
    return out, {"ours": ours_found, "datasketch": ds_found, "copies": len(copies)}


# ---------------------------------------------------------------------------------------------- 3. planted


def planted(store: Store) -> list[list]:
    rows, kinds = planted_rows()
    v = curate.save(rows, name="planted", store=store)
    ids = [r["id"] for r in rows]
    out = []
    sel = make_selector("decontam", against="gsm8k").fit(v)
    dropped = {rid for rid, r in zip(ids, sel.reasons_, strict=True) if r}
    others = kinds["train"] + kinds["exact"] + kinds["near"]
    out.append(
        [
            "decontam gsm8k (13-gram + LCS 0.5)",
            f"verbatim {len(dropped & set(kinds['verbatim']))}/50",
            f"edited {len(dropped & set(kinds['edited']))}/50",
            f"{len(dropped & set(others))}/{len(others)}",
        ]
    )
    for level in ("exact", "near"):
        sel = make_selector("dedup", level=level).fit(v)
        reason = dict(zip(ids, sel.reasons_, strict=True))

        def found(kind, reason=reason):
            return sum(reason[c] == f"duplicate_of:{c.rsplit('-of-', 1)[1]}" for c in kinds[kind])

        drops = {rid for rid, r in reason.items() if r}
        non = kinds["train"] + kinds["verbatim"] + kinds["edited"]
        out.append(
            [
                f"dedup --level {level}",
                f"exact copies {found('exact')}/25",
                f"near copies {found('near')}/25",
                f"{len(drops & set(non))}/{len(non)}",
            ]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="GSM8K train x1, near dedup on 2,150 rows, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"load average: {os.getloadavg()[0]:.1f} (other processes slow both sides alike; CPU s steadier than wall)")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        print("\n1. decontamination against GSM8K test, 13-gram (flagged rows asserted identical)")
        print(
            table(
                ["method", "rows", "wall s min/med", "cpu s min/med", "rows/s (cpu)", "speed-up (cpu)", "flagged"],
                bench_decontam(1 if args.quick else 4, repeats, store),
            )
        )
        print("\n2. near dedup, Jaccard 0.8, 5-gram shingles, 128 permutations (candidates verified exactly)")
        rows, _ = bench_near(2000 if args.quick else 7473, repeats, store)
        print(
            table(
                [
                    "method",
                    "rows",
                    "bands x rows",
                    "wall s min/med",
                    "cpu s min/med",
                    "copies found",
                    "peak MB",
                    "speed-up (cpu)",
                ],
                rows,
            )
        )
        print("\n3. planted copies (2,000 GSM8K train rows + 150 plants)")
        print(table(["selector", "found", "found", "false drops"], planted(store)))


if __name__ == "__main__":
    main()
