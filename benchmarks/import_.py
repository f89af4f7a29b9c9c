"""Import of a JSONL file: `curate import` against polars `read_ndjson` + `write_parquet` of the same file.

Data: generated chat rows (a system turn in a third of them, a user and an assistant turn of 20-160 words, a
category and a float score), 200,000 rows (~230 MB) by default, 40,000 (~45 MB) with --quick. Each side runs in
its own fresh subprocess, interleaved (polars, curate, polars, curate, ...), one thread each
(POLARS_MAX_THREADS=1, OMP_NUM_THREADS=1); the CPU seconds are those of the import call alone, after the
library is imported, and the peak RSS is the child's, read from `getrusage` (it includes the library's own
footprint, shown as "RSS before"). curate's figure includes everything an import does: the source digest, the
line parser, the checks and normalisation of every row, content ids, and the zstd Parquet files of the store.

Issue #19's target: curate <= 1.3x polars' CPU, and peak memory that does not grow with the file (the import
streams the file in chunks of `curate.io.CHUNK_BYTES`). Measured on the shared 2-core machine (200,000 rows,
217 MB): curate 11.25 / 11.62 s CPU (min / median), polars 8.65 / 8.84 s: 1.30x; peak RSS 306 MB for curate
(237 MB over the imported library), 1,139 MB for polars. Before streaming: 2.3-2.7x, and 881 MB for 109 MB.
Where curate's time goes (50,000 rows): orjson parsing and line checks ~25%, per-row normalisation and checks
~14%, content ids ~14%, Arrow conversion ~12%, zstd Parquet ~16%, pyarrow's one-off import of pandas ~12%.

    python benchmarks/import_.py            # ~4 min on 2 CPU cores
    python benchmarks/import_.py --quick    # ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Chat rows of random words: about 1.1 KB of JSON each."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]

    def text(k: int) -> str:
        return " ".join(rng.choices(words, k=k))

    with open(path, "w") as f:
        for i in range(rows):
            msgs = [
                {"role": "user", "content": text(rng.randint(20, 80))},
                {"role": "assistant", "content": text(rng.randint(40, 160))},
            ]
            if i % 3 == 0:
                msgs.insert(0, {"role": "system", "content": text(10)})
            row = {"messages": msgs, "category": rng.choice("abc"), "score": rng.random()}
            f.write(json.dumps(row) + "\n")


def child(side: str, src: str, out: str) -> None:
    """Run one import in this (fresh) process and print its CPU seconds and peak RSS as JSON."""
    import resource

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if side == "polars":
        import polars as pl

        before = rss_mb()
        w, c = time.perf_counter(), time.process_time()
        pl.read_ndjson(src).write_parquet(Path(out) / "out.parquet")
    else:
        os.environ.setdefault("CURATE_QUIET", "1")
        import curate
        from curate.store import Store

        store = Store(Path(out) / "store")
        before = rss_mb()
        w, c = time.perf_counter(), time.process_time()
        curate.import_data(src, name="bench", store=store)
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    print(json.dumps({"cpu": cpu, "wall": wall, "rss_before": before, "rss_peak": rss_mb()}))


def run_child(side: str, src: Path) -> dict:
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as out:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", side, str(src), out],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if proc.returncode:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mm(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40,000 rows, 3 repeats")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = args.rows or (40_000 if args.quick else 200_000)
    with tempfile.TemporaryDirectory(prefix="bench-import-src-") as tmp:
        src = Path(tmp) / "chat.jsonl"
        generate(src, rows)
        mb = src.stat().st_size / 2**20
        print(f"{rows:,} chat rows, {mb:.0f} MB of JSONL; {args.repeats} interleaved runs per side, one thread each")
        res: dict[str, list[dict]] = {"polars": [], "curate": []}
        for _ in range(args.repeats):
            for side in res:
                res[side].append(run_child(side, src))
    cpu = {s: [r["cpu"] for r in rs] for s, rs in res.items()}
    out = []
    for side, rs in res.items():
        ratio = min(cpu[side]) / min(cpu["polars"])
        out.append(
            [
                "polars read_ndjson + write_parquet" if side == "polars" else "curate import",
                mm(cpu[side]),
                mm([r["wall"] for r in rs]),
                f"{ratio:.2f}x",
                f"{statistics.median(r['rss_before'] for r in rs):.0f}",
                f"{max(r['rss_peak'] for r in rs):.0f}",
                f"{max(r['rss_peak'] - r['rss_before'] for r in rs):.0f}",
            ]
        )
    heads = [
        "",
        "CPU s min / median",
        "wall s min / median",
        "CPU vs polars",
        "RSS before MB",
        "peak RSS MB",
        "growth MB",
    ]
    print(table(heads, out))
    print(f"curate / polars CPU (min over runs): {min(cpu['curate']) / min(cpu['polars']):.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
