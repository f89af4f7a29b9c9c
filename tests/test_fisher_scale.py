"""FisherSFT at scale: features streamed to one file on disk (curate/scoring.py ``feature_matrix``), each row reduced
to its sufficient statistic, and a greedy whose memory does not grow with that file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import curate.ops as api
import curate.scoring as scoring
from curate.cache import RowCache
from curate.errors import CurateError
from curate.scoring import cached_foreach, cached_map, flat_features, sufficient_rows
from curate.selectors.fisher import FisherSelector, greedy_logdet
from tests.test_fisher import conversations

REPO = Path(__file__).resolve().parents[1]


def gain(v: np.ndarray, x: np.ndarray) -> float:
    """log det(V + X^T X) - log det(V), from the definition."""
    return np.linalg.slogdet(v + x.T.astype(np.float64) @ x.astype(np.float64))[1] - np.linalg.slogdet(v)[1]


# ---------------------------------------------------------------------------------------------- the engine


def test_cached_foreach_hands_each_key_once_and_fills_the_cache(store):
    rows = [[1.0, 2.0], [3.0], [1.0, 2.0], [4.0, 5.0, 6.0]]  # rows 0 and 2 are the same content
    keys = ["a", "b", "a", "c"]
    cache = RowCache(store, "toy", "k1")
    calls: list[int] = []

    def double(batch):
        calls.append(len(batch))
        return [np.asarray(x, np.float32) * 2 for x in batch]

    seen: dict[str, list[float]] = {}
    stats: dict[str, int] = {}
    cached_foreach(rows, keys, double, cache, lambda k, a: seen.setdefault(k, a.tolist()), stats=stats)
    assert seen == {"a": [2.0, 4.0], "b": [6.0], "c": [8.0, 10.0, 12.0]} and stats == {"computed": 3, "cached": 0}

    # Second pass: everything from the cache shards, nothing computed, each key still handed over once.
    again: list[str] = []
    stats = {}
    cached_foreach(rows, keys, double, cache, lambda k, a: again.append(k), stats=stats)
    assert sorted(again) == ["a", "b", "c"] and stats == {"computed": 0, "cached": 3} and sum(calls) == 3
    # cached_map over the same cache keeps its contract: one array per row, in row order.
    out = cached_map(rows, keys, double, cache)
    assert [o.tolist() for o in out] == [[2.0, 4.0], [6.0], [2.0, 4.0], [8.0, 10.0, 12.0]]
    with pytest.raises(CurateError, match="3 keys"):
        cached_foreach(rows, keys[:3], double, cache, lambda k, a: None)


# ---------------------------------------------------------------------------------------------- the layout


def test_sufficient_rows_keeps_every_gain():
    rng = np.random.default_rng(0)
    d = 6
    a = rng.standard_normal((d, d))
    v = np.eye(d) + a @ a.T  # a V that is not the identity
    long = (rng.standard_normal((40, d)) * 30).astype(np.float32)
    short = rng.standard_normal((4, d)).astype(np.float32)
    r = sufficient_rows(long)
    assert r.shape == (d, d) and r.dtype == np.float32 and np.allclose(np.tril(r, -1), 0)
    assert gain(v, r) == pytest.approx(gain(v, long), rel=1e-6)
    assert sufficient_rows(short) is short or np.array_equal(sufficient_rows(short), short)
    assert sufficient_rows(np.zeros((0, d))).shape == (0, d)
    with pytest.raises(CurateError, match="2-D"):
        sufficient_rows(np.ones(3))


def test_flat_features_layout_dtypes_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    d = 8
    arrays = [rng.standard_normal((m, d)).astype(np.float32) * 3 for m in (3, 0, 20, 8, 1)]
    ff = flat_features(iter(arrays))  # a generator: each array is reduced as it comes
    assert ff.flat.dtype == np.float16 and ff.path is None and len(ff) == 5 and ff.d == d
    assert ff.lengths.tolist() == [3, 0, 8, 8, 1] and ff.tokens.tolist() == [3, 0, 20, 8, 1]
    assert ff.offsets.tolist() == [0, 3, 3, 11, 19] and ff.flat.shape == (20, d) and ff.nbytes() == 20 * d * 2
    np.testing.assert_array_equal(ff.row(0), arrays[0].astype(np.float16).astype(np.float32))
    assert ff.row(1).shape == (0, d)
    r = ff.row(2).astype(np.float64)
    xtx = arrays[2].T.astype(np.float64) @ arrays[2]
    np.testing.assert_allclose(r.T @ r, xtx, rtol=0, atol=1e-3 * np.abs(xtx).max())  # float16: 2^-11 relative

    # float32 keeps short rows bit for bit; a value beyond float16's range makes the whole file float32.
    exact = flat_features(arrays, dtype="float32", path=tmp_path / "f.bin")
    assert exact.flat.dtype == np.float32 and isinstance(exact.flat, np.memmap) and exact.path == tmp_path / "f.bin"
    np.testing.assert_array_equal(exact.row(4), arrays[4])
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta["bytes"] == os.path.getsize(tmp_path / "f.bin") == 20 * d * 4 and meta["lengths"][2] == 8
    big = flat_features([np.full((2, d), 7e4, np.float32)])
    assert big.flat.dtype == np.float32 and float(big.flat.max()) == 7e4
    assert flat_features([], d=5).flat.shape == (0, 5)
    assert not list(tmp_path.glob(".shard-*")), "no scratch file is left behind"

    with pytest.raises(CurateError, match="different widths"):
        flat_features([np.ones((1, 2)), np.ones((1, 3))])
    with pytest.raises(CurateError, match="NaN"):
        flat_features([np.full((1, 2), np.nan)])
    with pytest.raises(CurateError, match="dtype"):
        flat_features([np.ones((1, 2))], dtype="float64")


def test_greedy_on_flat_features_matches_the_rows():
    # Well-separated gains: float16 storage moves each by ~1e-4 relative, far less than the gaps between them.
    rng = np.random.default_rng(2)
    d = 12
    arrays = [
        (rng.standard_normal((m, d)) * rng.uniform(0.5, 3.0)).astype(np.float32) for m in rng.integers(1, 30, 40)
    ]
    want, want_gains = greedy_logdet(arrays, 10)
    ff = flat_features(arrays)
    got, got_gains = greedy_logdet(ff, 10)
    assert got.tolist() == want.tolist()
    np.testing.assert_allclose(got_gains, want_gains, rtol=2e-3)
    exact = flat_features(arrays, dtype="float32")
    np.testing.assert_allclose(greedy_logdet(exact, 10)[1], want_gains, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- the store


def test_feature_matrix_on_disk_reused_and_checked(tmp_path, tiny_model_path, capsys):
    store = tmp_path / "store"
    v = api.save(conversations(10), name="chats", store=store)
    dim = 4  # below most rows' trained-token counts, so most rows are reduced to a 4 x 4 R
    feats = scoring.extract_features(v, model=tiny_model_path, dim=dim)
    stats: dict[str, int] = {}
    ff = scoring.feature_matrix(v, model=tiny_model_path, dim=dim, stats=stats)
    assert stats == {"computed": 0, "cached": 10}  # the row cache extract_features filled
    assert ff.tokens.tolist() == [len(x) for x in feats]
    assert ff.lengths.tolist() == [min(len(x), dim) for x in feats] and ff.lengths[2] == 0
    assert 0 < sum(len(x) > dim for x in feats) < 10
    for i, x in enumerate(feats):
        r = ff.row(i).astype(np.float64)
        xtx = x.T.astype(np.float64) @ x
        np.testing.assert_allclose(r.T @ r, xtx, rtol=0, atol=2e-3 * max(np.abs(xtx).max(initial=0), 1e-6))
    assert ff.path.parent.parent.name == "features-flat" and ff.path.with_suffix(".json").exists()
    before = np.array(ff.flat)

    # Reuse: the same file, no shard read (the row cache can be gone), checked against its sha256.
    for shard in (store / "cache" / "features").rglob("shard-*.parquet"):
        shard.rename(shard.with_name("moved-" + shard.name))
    stats = {}
    again = scoring.feature_matrix(v, model=tiny_model_path, dim=dim, stats=stats)
    assert again.path == ff.path and stats == {"computed": 0, "cached": 10}
    np.testing.assert_array_equal(np.array(again.flat), before)
    for shard in (store / "cache" / "features").rglob("moved-*.parquet"):
        shard.rename(shard.with_name(shard.name.removeprefix("moved-")))

    # A flipped byte fails the check: one warning, the file is rebuilt from the row cache, equal to before.
    path = ff.path
    del ff, again  # no mapping of the file is left while it is rewritten
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    stats = {}
    rebuilt = scoring.feature_matrix(v, model=tiny_model_path, dim=dim, stats=stats)
    assert "fails its sha256 check" in capsys.readouterr().err and stats == {"computed": 0, "cached": 10}
    np.testing.assert_array_equal(np.array(rebuilt.flat), before)

    # The selector runs on exactly these rows: the same picks and gains as greedy over them one by one.
    sel = FisherSelector(model=tiny_model_path, dim=dim, budget=4).fit(v)
    cand = np.nonzero(rebuilt.lengths)[0]
    want, want_gains = greedy_logdet([rebuilt.row(i) for i in cand], 4)
    assert sel.select().order.tolist() == cand[want].tolist()
    np.testing.assert_allclose(sel.scores_[cand[want]], want_gains, rtol=1e-9)


# ---------------------------------------------------------------------------------------------- memory

_RSS_SCRIPT = """
import json, sys, threading, time
import numpy as np
import curate.selectors.fisher as fisher
from curate.scoring import FlatFeatures

# What the greedy holds besides per-row bookkeeping: the float32 kernel cache, up to its cap (256 MB by
# default), and a few padded float64 batches of _CHUNK_ELEMS elements (32 MB each by default). Smaller caps here,
# so that a file of test size is already far bigger than all of it.
fisher._CACHE_BYTES = 8 << 20
fisher._CHUNK_ELEMS = 1 << 20

path, n, d, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lengths = np.load(path + ".lengths.npy")
flat = np.memmap(path, np.float16, "r", shape=(int(lengths.sum()), d))

def anon():
    # RssAnon, not VmHWM: pages of the memmap are file-backed and the kernel drops them under pressure, so
    # they count in VmRSS but are not memory the process holds.
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

fisher.greedy_logdet([np.ones((2, d), np.float32)], 1)  # torch's own first-use allocations, before the baseline
base = anon()
peak = [base]
stop = threading.Event()

def watch():
    while not stop.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)

t = threading.Thread(target=watch, daemon=True)
t.start()
picks, gains = fisher.greedy_logdet(FlatFeatures(flat, lengths), k)
stop.set()
t.join()
peak[0] = max(peak[0], anon())
print(json.dumps({"grew": peak[0] - base, "picks": picks.tolist(), "flat": flat.size * 2}))
"""


@pytest.mark.slow
def test_greedy_memory_does_not_grow_with_the_feature_file(tmp_path):
    # 16,000 rows of 33-64 tokens at d=64 in float16: a 99 MB file (the float64 copy the greedy used to make
    # would be 400 MB). The greedy may grow by 60 MB: its 8 MB kernel cache, 8 MB batches, per-row state.
    n, d, k = 16_000, 64, 5
    rng = np.random.default_rng(0)
    lengths = rng.integers(33, 65, n).astype(np.int64)
    path = tmp_path / "flat.bin"
    with open(path, "wb") as f:
        for chunk in np.array_split(np.arange(int(lengths.sum())), 20):
            f.write(rng.standard_normal((len(chunk), d)).astype(np.float16).tobytes())
    np.save(str(path) + ".lengths.npy", lengths)
    # glibc raises its mmap threshold to the size of each freed batch buffer, after which those buffers come from
    # the heap, where the small cached kernels between them keep it from shrinking: measured 329 MB of growth on
    # 40,000 rows without this setting, 38 MB with it. A fixed threshold returns every large buffer when freed.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RSS_SCRIPT), str(path), str(n), str(d), str(k)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["flat"] > 95e6 and len(res["picks"]) == k
    assert res["grew"] < 60e6, f"the greedy grew by {res['grew'] / 1e6:.0f} MB over a {res['flat'] / 1e6:.0f} MB file"
