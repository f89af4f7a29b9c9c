"""FisherSFT at scale: what float16 storage, the QR reduction and `--dim` do to the picks, and what a row costs.

`curate select --method fisher` keeps its features on disk (`scoring.feature_matrix`): row i's block is X_i
(M_i x d) when M_i <= d, else the d x d R of its QR (R^T R = X_i^T X_i, so the gains are the same up to
rounding), stored as float16. Bytes per row: 2 x min(M_i, d) x d. `--dim D` projects the features to D columns
first (`scoring.projection_matrix`): fewer bytes, less exact. This script measures both on a real pool: the
first N rows of GSM8K (test split, /work/shared/data/gsm8k), features of the embedded SmolLM2-135M (d = 576),
greedy k picks, each variant against the exact reference (the float32 features, unreduced, as
`extract_features` returns them).

The projected variants apply `projection_matrix(576, D, seed=0)` to the cached full features: the same
float32 product `extract_features(dim=D)` computes right after the forward pass, without a forward pass per D.

Columns: overlap = |picks & reference picks| / k; prefix = how many first picks agree in order; gain rel. diff =
the largest relative difference of a pick's gain from the reference's, over that prefix (d' = d only); KB/row =
the flat file (what `select` keeps on disk and reads), against float32 M x d (the row cache) and float64 M x d
(what the greedy held in memory before); greedy s = min/median of the greedy over the variant's rows.

Features are cached in the store (`--store`, default ~/.cache/curate/bench-fisher-scale): the first run runs the
model over the rows (minutes on a CPU), later runs only the greedy.

    python benchmarks/fisher_scale.py            # 240 rows, k = 24
    python benchmarks/fisher_scale.py --quick    # 64 rows, k = 8, one timing (< 3 min once the features are cached)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATE_QUIET", "1")

from _util import table  # noqa: E402

import curate.ops as api  # noqa: E402
from curate.errors import CurateError  # noqa: E402
from curate.scoring import extract_features, feature_matrix, flat_features, projection_matrix  # noqa: E402
from curate.selectors.fisher import greedy_logdet  # noqa: E402

GSM8K = Path("/work/shared/data/gsm8k/test.jsonl")


def pool(store: Path, rows: int):
    """The first ``rows`` rows of GSM8K as a version in ``store`` (imported once)."""
    name = f"gsm8k-{rows}"
    try:
        return api.load(name, store=store)
    except CurateError:
        full = api.import_data(str(GSM8K), name="gsm8k", store=store)
        return api.save(full.to_arrow().slice(0, rows), name=name, store=store)


def greedy(rows: list[np.ndarray], k: int, repeats: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    times, out = [], None
    for _ in range(repeats):
        t = time.process_time()
        out = greedy_logdet(rows, k)
        times.append(time.process_time() - t)
    return out[0], out[1], times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 rows, k = 8")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "curate" / "bench-fisher-scale"))
    args = ap.parse_args()
    n_rows = args.rows or (64 if args.quick else 240)
    k = args.k or (8 if args.quick else 24)
    repeats = args.repeats or (1 if args.quick else 3)
    dims = (64, 128, 256)
    print(f"load average: {os.getloadavg()[0]:.1f} (CPU s of the greedy, min/median of {repeats})")

    v = pool(Path(args.store), n_rows)
    stats: dict[str, int] = {}
    t = time.perf_counter()
    raw = extract_features(v, stats=stats)
    print(f"features: {stats} in {time.perf_counter() - t:.0f} s; GSM8K rows {n_rows}, k = {k}")
    d = raw[0].shape[1]
    tokens = np.array([len(x) for x in raw])
    print(f"trained tokens per row: min {tokens.min()}, mean {tokens.mean():.0f}, max {tokens.max()}; d = {d}")
    absmax = max(float(np.abs(x).max()) for x in raw if len(x))
    print(f"largest |hidden state| {absmax:.1f} (float16 holds up to 65504; R's entries stay below it)")

    ref, ref_gains, ref_t = greedy(raw, k, repeats)
    # What `select` uses: the flat float16 file, from the same cache (checked against a float32 one built here).
    on_disk = feature_matrix(v)
    variants = [
        ("float32, QR-reduced", d, flat_features(raw, dtype="float32")),
        ("float16, QR-reduced (select)", d, on_disk),
    ]
    for dim in dims:
        proj = projection_matrix(d, dim, seed=0)
        variants.append((f"--dim {dim}, float16", dim, flat_features(x @ proj for x in raw)))
        if dim == dims[0]:
            variants.append((f"--dim {dim}, float32", dim, flat_features((x @ proj for x in raw), dtype="float32")))

    rows = [["reference: float32 X_i", d, "-", "-", "-", f"{4 * tokens.mean() * d / 1e3:.1f}", *ms(ref_t)]]
    for label, width, ff in variants:
        picks, gains, times = greedy([ff.row(i) for i in range(len(ff))], k, repeats)
        same = np.asarray(picks) == ref[: len(picks)]
        prefix = int(np.argmin(same)) if not same.all() else len(picks)
        # Gains are comparable where the space is the same (d' = d) and the picks so far agree.
        diff = np.abs(gains[:prefix] - ref_gains[:prefix]) / ref_gains[:prefix]
        gain_diff = f"{diff.max():.1e}" if width == d and prefix else "-"
        rows.append(
            [
                label,
                width,
                f"{len(set(picks.tolist()) & set(ref.tolist()))}/{k}",
                prefix,
                gain_diff,
                f"{ff.nbytes() / len(ff) / 1e3:.1f}",
                *ms(times),
            ]
        )
    headers = ["features", "d'", "overlap", "prefix", "gain rel. diff", "KB/row", "greedy s min", "greedy s med"]
    print(table(headers, rows))
    print(
        f"\nper row: float16 flat = 2 x min(M, d') x d' bytes; float32 row cache = 4 x M x {d}; the old in-memory "
        f"float64 = 8 x M x {d} ({8 * tokens.mean() * d / 1e3:.1f} KB at this pool's mean M = {tokens.mean():.0f})."
    )
    m = 200
    print(
        f"a 100,000-row pool at M = {m} tokens: "
        + ", ".join(f"d'={w}: {1e5 * 2 * min(m, w) * w / 1e9:.1f} GB" for w in (d, *dims))
        + f" (float16 on disk); float32 row cache {1e5 * 4 * m * d / 1e9:.0f} GB."
    )


def ms(times: list[float]) -> list[float]:
    return [min(times), float(np.median(times))]


if __name__ == "__main__":
    main()
