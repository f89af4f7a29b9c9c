"""FisherSFT (curate/selectors/fisher.py): greedy log-det against a brute-force oracle, and the selector end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import curate.ops as api
import curate.scoring as scoring
from curate.errors import CurateError
from curate.selectors import SELECTORS, fisher, run_selector
from curate.selectors.fisher import FisherSelector, greedy_logdet, plain_greedy_logdet

REPO = Path(__file__).resolve().parents[1]


def brute_force(features, k, lam=1.0, budget_tokens=None):
    """Plain greedy written from the definition: log det(lam I + sum X^T X) for every candidate at every step.

    Ties: gains within a relative 1e-9 of the best are equal and the lowest index wins (the documented rule).
    """
    d = features[0].shape[1]
    V = lam * np.eye(d)
    left = budget_tokens
    picks, gains = [], []
    remaining = list(range(len(features)))
    while len(picks) < min(k, len(features)):
        cands = [i for i in remaining if left is None or len(features[i]) <= left]
        if not cands:
            break
        base = np.linalg.slogdet(V)[1]
        g = {i: np.linalg.slogdet(V + features[i].T @ features[i])[1] - base for i in cands}
        best = max(g.values())
        j = min(i for i in cands if g[i] >= best - 1e-9 * abs(best))
        picks.append(j)
        gains.append(g[j])
        remaining.remove(j)
        V = V + features[j].T @ features[j]
        if left is not None:
            left -= len(features[j])
    return picks, gains


# Five examples in d=3: two unit tokens, one strong token, one direction repeated three times, the all-ones
# token, and an example with no trained tokens. Every gain has a closed form (matrix determinant lemma).
GOLDEN = [
    np.array([[1.0, 0, 0], [0, 1, 0]]),
    np.array([[2.0, 0, 0]]),
    np.array([[0, 0, 1.0]] * 3),
    np.array([[1.0, 1, 1]]),
    np.zeros((0, 3)),
]


def test_golden_picks_and_gains():
    counts: dict = {}
    idx, gains = greedy_logdet(GOLDEN, 5, lam=1.0, stats=counts)
    # step 1: log(1 + 4) beats log 4 (three-way tie below it); step 2: V = diag(5, 1, 1), three e3 tokens give
    # log(1 + 3); step 3: V = diag(5, 1, 4), x = 1 gives log(1 + 1/5 + 1 + 1/4) = log(49/20); step 4:
    # det(V + e1e1' + e2e2') / det V = 92 / 49; the empty example comes last with gain 0.
    assert idx.tolist() == [1, 2, 3, 0, 4]
    np.testing.assert_allclose(gains, np.log([5.0, 4.0, 49 / 20, 92 / 49, 1.0]), rtol=1e-12, atol=1e-15)
    # Evaluations: all 5 to start; step 2 re-evaluates examples 0, 2, 3 (bounds log 4 each, all reach the pick
    # log 4); step 3 examples 0 (bound log 2.4) and 3 (bound log 3.2), but only 3's reaches the pick log 2.45;
    # step 4 example 0 (log 2.4 >= log 92/49). The empty example's gain is exact (0) and never re-evaluated.
    assert counts == {"evaluations": 11, "forced": 10}
    want_idx, want_gains = brute_force(GOLDEN, 5)
    assert idx.tolist() == want_idx
    np.testing.assert_allclose(gains, want_gains, rtol=1e-9, atol=1e-12)
    plain_idx, plain_gains = plain_greedy_logdet(GOLDEN, 5)
    assert plain_idx.tolist() == want_idx
    np.testing.assert_allclose(plain_gains, gains, rtol=1e-12)


@st.composite
def feature_sets(draw):
    d = draw(st.integers(1, 4))
    n = draw(st.integers(1, 8))
    # Small integers make exact ties (symmetric and repeated examples) common, which is what the tie rule is for.
    return [
        np.array(
            draw(st.lists(st.lists(st.integers(-2, 2), min_size=d, max_size=d), min_size=0, max_size=4)),
            dtype=np.float64,
        ).reshape(-1, d)
        for _ in range(n)
    ]


@settings(max_examples=80, deadline=None)  # small sizes: each example runs three greedy loops in milliseconds
@given(feature_sets(), st.integers(0, 10), st.sampled_from([None, 0, 3, 7]), st.sampled_from([0.5, 1.0, 3.0]))
def test_lazy_equals_plain_equals_brute_force(features, k, budget_tokens, lam):
    lazy_idx, lazy_gains = greedy_logdet(features, k, lam=lam, budget_tokens=budget_tokens)
    plain_idx, plain_gains = plain_greedy_logdet(features, k, lam=lam, budget_tokens=budget_tokens)
    want_idx, want_gains = brute_force(features, k, lam=lam, budget_tokens=budget_tokens)
    assert lazy_idx.tolist() == plain_idx.tolist() == want_idx
    np.testing.assert_allclose(lazy_gains, want_gains, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(plain_gains, want_gains, rtol=1e-9, atol=1e-12)
    if budget_tokens is not None:
        assert sum(len(features[i]) for i in lazy_idx) <= budget_tokens
    # Greedy gains of a submodular objective never increase.
    assert np.all(np.diff(lazy_gains) <= 1e-12)


def test_lazy_equals_plain_on_random_floats():
    # Larger than the property test (60 examples, d=6, up to 5 tokens) so the lazy loop re-evaluates in batches.
    rng = np.random.default_rng(1)
    feats = [rng.standard_normal((rng.integers(0, 6), 6)) for _ in range(60)]
    lazy_idx, lazy_gains = greedy_logdet(feats, 40)
    plain_idx, plain_gains = plain_greedy_logdet(feats, 40)
    assert lazy_idx.tolist() == plain_idx.tolist()
    np.testing.assert_allclose(lazy_gains, plain_gains, rtol=1e-9)


@st.composite
def ragged_float_sets(draw):
    d = draw(st.integers(2, 6))
    n = draw(st.integers(1, 14))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # Lengths from 0 to 2d: empty rows, rows shorter than d (float32 kernels) and longer (the exact d x d form).
    feats = [rng.standard_normal((int(m), d)) * rng.choice([0.1, 1.0, 10.0]) for m in rng.integers(0, 2 * d + 1, n)]
    # Near-ties: exact duplicates and copies scaled by 1 + 1e-12 (a gain difference far below TIE_RTOL).
    for _ in range(draw(st.integers(0, 3))):
        src = int(rng.integers(len(feats)))
        feats.insert(int(rng.integers(len(feats) + 1)), feats[src] * draw(st.sampled_from([1.0, 1.0 + 1e-12])))
    return feats


@settings(max_examples=25, deadline=None)  # each example runs three greedy loops
@given(ragged_float_sets(), st.integers(1, 12), st.sampled_from([None, 5, 12]), st.booleans(), st.booleans())
def test_lazy_equals_plain_on_ragged_floats_and_near_ties(features, k, budget_tokens, as_float32, one_by_one):
    if as_float32:
        features = [x.astype(np.float32) for x in features]
    # one_by_one: every width class evaluated example by example (BLAS/LAPACK, unpadded), not in padded batches.
    with mock.patch.object(fisher, "_EACH_MADDS", 0 if one_by_one else fisher._EACH_MADDS):
        lazy_idx, lazy_gains = greedy_logdet(features, k, budget_tokens=budget_tokens)
    plain_idx, plain_gains = plain_greedy_logdet(features, k, budget_tokens=budget_tokens)
    want_idx, want_gains = brute_force([x.astype(np.float64) for x in features], k, budget_tokens=budget_tokens)
    assert lazy_idx.tolist() == plain_idx.tolist() == want_idx
    np.testing.assert_allclose(lazy_gains, plain_gains, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lazy_gains, want_gains, rtol=1e-7, atol=1e-9)


def test_lazy_equals_plain_through_kernel_updates_cache_cap_and_fallback(monkeypatch):
    # 100 ragged examples, d=24, up to 40 tokens: cached kernels get brought up to date across picks, some rows
    # exceed d, and picks take many steps. Then the same with no kernel cache, and with a float32 margin so small
    # that the first re-check falls outside it (the loop must restart in float64 and still agree).
    rng = np.random.default_rng(3)
    scale = np.sqrt(np.logspace(0, -2, 24))
    feats = [(rng.standard_normal((int(m), 24)) * scale).astype(np.float32) for m in rng.integers(0, 41, 100)]
    feats[7] = feats[3].copy()  # an exact duplicate: the lower index wins the tie
    want_idx, want_gains = plain_greedy_logdet(feats, 30)
    got_idx, got_gains = greedy_logdet(feats, 30)
    assert got_idx.tolist() == want_idx.tolist()
    np.testing.assert_allclose(got_gains, want_gains, rtol=1e-9)
    assert want_idx.tolist().index(3) < want_idx.tolist().index(7) if 7 in want_idx else True
    monkeypatch.setattr(fisher, "_CACHE_BYTES", 0)
    assert greedy_logdet(feats, 30)[0].tolist() == want_idx.tolist()
    monkeypatch.setattr(fisher, "_CACHE_BYTES", 1 << 28)
    monkeypatch.setattr(fisher, "_F32_RTOL", 1e-14)
    monkeypatch.setattr(fisher, "_F32_ATOL", 0.0)
    short = [x[:12] for x in feats]  # every row in float32 (longer than d would be exact already)
    want_idx, want_gains = plain_greedy_logdet(short, 30)
    state = fisher.LogDetState(short, cache_kernels=True)
    idx, gains = fisher._lazy_greedy(state, 30, None, state.m)
    assert not state.f32 and idx.tolist() == want_idx.tolist()
    np.testing.assert_allclose(gains, want_gains, rtol=1e-9)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 28])
def test_one_by_one_evaluations_equal_padded_batches(monkeypatch, cache_bytes):
    # Ragged rows of 1-40 tokens, d=96: every width class one by one (unpadded, lower triangles only, cached
    # kernels brought up to date with a symmetric rank-k product), against padded batches, against plain greedy.
    monkeypatch.setattr(fisher, "_CACHE_BYTES", cache_bytes)
    rng = np.random.default_rng(5)
    scale = np.sqrt(np.logspace(0, -2, 96))
    feats = [(rng.standard_normal((int(m), 96)) * scale).astype(np.float32) for m in rng.integers(1, 41, 120)]
    feats[11] = feats[4].copy()
    want_idx, want_gains = plain_greedy_logdet(feats, 40)
    results = {}
    for each in (0, 1 << 62):
        monkeypatch.setattr(fisher, "_EACH_MADDS", each)
        state = fisher.LogDetState(feats, device="cpu", cache_kernels=True)  # one by one is the CPU's path
        assert state._one_by_one(8) == (each == 0)
        idx, gains = fisher._lazy_greedy(state, 40, None, state.m)
        assert state.f32  # no float32 gain left its margin
        assert idx.tolist() == want_idx.tolist()
        np.testing.assert_allclose(gains, want_gains, rtol=1e-9)
        # Float32 estimates against the final V agree with exact float64 gains within the margin, either way.
        g, err = state.estimate(np.arange(120))
        exact = state.gains(np.arange(120))
        assert np.all(np.abs(g - exact) <= err)
        results[each] = g, exact
    np.testing.assert_allclose(results[0][0], results[1 << 62][0], rtol=1e-4, atol=1e-6)
    # Exact float64 gains one by one (triangular factor of V^-1, symmetric rank-k, Cholesky) equal the padded ones.
    np.testing.assert_allclose(results[0][1], results[1 << 62][1], rtol=1e-12, atol=1e-12)


def _flat_and_memmap(feats: list[np.ndarray], tmp_path) -> tuple[np.ndarray, np.memmap]:
    """The examples as one flat array, and the same written to disk and mapped back read-only."""
    flat = np.concatenate(feats)
    path = tmp_path / "feats.bin"
    flat.tofile(path)
    return flat, np.memmap(path, dtype=flat.dtype, mode="r", shape=flat.shape)


def test_flat_and_memmap_input_equal_list_input(tmp_path):
    rng = np.random.default_rng(5)
    lengths = np.array([3, 0, 9, 2, 5, 0, 7, 4, 1, 6], dtype=np.int64)  # d=6: one row longer than d, two empty
    feats = [rng.standard_normal((int(m), 6)).astype(np.float16) for m in lengths]
    flat, mm = _flat_and_memmap(feats, tmp_path)
    want_idx, want_gains = plain_greedy_logdet(feats, 8)
    for features in (fisher.FlatFeatures(flat, lengths), fisher.FlatFeatures(mm, lengths)):
        idx, gains = greedy_logdet(features, 8)
        assert idx.tolist() == want_idx.tolist()
        np.testing.assert_allclose(gains, want_gains, rtol=1e-9)
        assert plain_greedy_logdet(features, 8)[0].tolist() == want_idx.tolist()
        # The token budget path reads costs from the lengths.
        assert (
            greedy_logdet(features, budget_tokens=10)[0].tolist() == greedy_logdet(feats, budget_tokens=10)[0].tolist()
        )
    state = fisher.LogDetState.from_flat(mm, lengths, cache_kernels=True)
    assert state.src is mm  # wrapped, never copied whole
    np.testing.assert_allclose(state.gains(np.arange(10)), fisher.LogDetState(feats).gains(np.arange(10)), rtol=1e-12)
    with pytest.raises(CurateError, match="sum to 37 but there are 38"):
        greedy_logdet(fisher.FlatFeatures(np.zeros((38, 6)), lengths), 2)
    with pytest.raises(CurateError, match="non-negative"):
        greedy_logdet(fisher.FlatFeatures(np.zeros((37, 6)), lengths - 1), 2)
    with pytest.raises(CurateError, match="float16/32/64"):
        greedy_logdet(fisher.FlatFeatures(np.zeros((37, 6), dtype=np.int64), lengths), 2)
    bad = flat.astype(np.float32)
    bad[lengths[:4].sum() + 1, 2] = np.nan  # inside example 4
    with pytest.raises(CurateError, match=r"features\[4\] has NaN"):
        greedy_logdet(fisher.FlatFeatures(bad, lengths), 2)


def test_long_rows_from_a_float16_memmap_and_their_bad_values(tmp_path):
    # Rows of 32+ tokens are gathered one slice per example (not by a padded index): same picks, and a NaN or inf
    # in one is named.
    rng = np.random.default_rng(11)
    lengths = np.array([33, 0, 70, 45, 32, 51, 1, 64], dtype=np.int64)  # d=48: under, over and at the 32 cut
    feats = [rng.standard_normal((int(m), 48)).astype(np.float16) for m in lengths]
    flat, mm = _flat_and_memmap(feats, tmp_path)
    want_idx, want_gains = plain_greedy_logdet(feats, 6)
    idx, gains = greedy_logdet(fisher.FlatFeatures(mm, lengths), 6)
    assert idx.tolist() == want_idx.tolist()
    np.testing.assert_allclose(gains, want_gains, rtol=1e-9)
    for row, value in ((33 + 70 + 2, np.inf), (33 + 70 + 45 + 32 + 50, np.nan)):  # in examples 3 and 5
        bad = flat.copy()
        bad[row, 7] = value
        with pytest.raises(CurateError, match=rf"features\[{3 if value == np.inf else 5}\] has NaN"):
            greedy_logdet(fisher.FlatFeatures(bad, lengths), 6)


def test_token_budget_skips_what_no_longer_fits():
    feats = [
        np.eye(4) * 3,  # the best example, but 4 tokens
        np.array([[1.0, 0, 0, 0]]),
        np.array([[0, 1.0, 0, 0]]),
        np.array([[0, 0, 1.0, 0], [0, 0, 0, 1.0]]),
    ]
    idx, gains = greedy_logdet(feats, budget_tokens=5)
    assert idx.tolist() == [0, 1]  # 4 + 1 tokens; examples 2 and 3 no longer fit
    idx, _ = greedy_logdet(feats, budget_tokens=3)
    assert idx.tolist() == [3, 1]  # 0 never fits; 3 (two new directions) first, then the lower index of 1 and 2
    idx, _ = greedy_logdet(feats, budget_tokens=5, tokens=[1, 1, 1, 1])  # explicit token counts win over M_i
    assert idx.tolist() == [0, 3, 1, 2]
    assert greedy_logdet(feats, budget_tokens=0)[0].tolist() == []


def test_k_beyond_n_empty_input_and_zero_features():
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((2, 3)) for _ in range(3)] + [np.zeros((0, 3))]
    idx, gains = greedy_logdet(feats, 10)
    assert sorted(idx.tolist()) == [0, 1, 2, 3] and idx[-1] == 3 and gains[-1] == 0.0
    assert np.all(gains[:3] > 0)
    idx, gains = greedy_logdet([], 5)
    assert idx.shape == (0,) and gains.shape == (0,)
    assert greedy_logdet(feats, 0)[0].tolist() == []
    # All-zero features: every gain is exactly 0, so picks follow the row order; the same for every run.
    zeros = [np.zeros((2, 3)) for _ in range(5)]
    for fn in (greedy_logdet, plain_greedy_logdet):
        idx, gains = fn(zeros, 3)
        assert idx.tolist() == [0, 1, 2] and gains.tolist() == [0.0, 0.0, 0.0]
    # Exact duplicates tie: the lower index of each pair is picked first.
    x = rng.standard_normal((3, 4))
    assert greedy_logdet([x * 0.5, x, x.copy(), x * 0.5], 4)[0].tolist() == [1, 2, 0, 3]


def test_bad_input():
    with pytest.raises(CurateError, match="widths"):
        greedy_logdet([np.ones((1, 2)), np.ones((1, 3))], 1)
    with pytest.raises(CurateError, match="NaN"):
        greedy_logdet([np.ones((1, 2)), np.array([[np.nan, 0.0]])], 1)
    with pytest.raises(CurateError, match="2-D"):
        greedy_logdet([np.ones(3)], 1)
    with pytest.raises(CurateError, match="lam"):
        greedy_logdet([np.ones((1, 2))], 1, lam=0.0)
    with pytest.raises(CurateError, match="k must"):
        greedy_logdet([np.ones((1, 2))], -1)
    with pytest.raises(CurateError, match="tokens"):
        greedy_logdet([np.ones((1, 2))], budget_tokens=3, tokens=[1, 2])


# ---------------------------------------------------------------------------------------------- the selector


def conversations(n_rows: int) -> list[dict]:
    replies = [
        "4",
        "The capital of France is Paris.",
        "Sure! " * 6,
        "x = 3 because 2x = 6.",
        "Step 1: add. Step 2: carry the one. Done.",
        "no",
        "Photosynthesis turns light into sugar.",
        "1, 2, 3, 4, 5",
    ]
    rows = []
    for i in range(n_rows):
        msgs = [{"role": "user", "content": f"question {i}"}]
        if i != 2:  # row 2 has no assistant turn: nothing to train on
            msgs.append({"role": "assistant", "content": replies[i % len(replies)] + f" ({i})"})
        rows.append({"id": f"r{i}", "messages": msgs})
    return rows


@pytest.fixture
def fisher_registered(monkeypatch):
    monkeypatch.setitem(SELECTORS, "fisher", FisherSelector)


@pytest.fixture
def forward_rows(monkeypatch):
    seen: list[int] = []
    real = scoring._lm_head_input

    def spy(model, input_ids, attention_mask):
        seen.append(int(input_ids.shape[0]))
        return real(model, input_ids, attention_mask)

    monkeypatch.setattr(scoring, "_lm_head_input", spy)
    return seen


def test_selector_end_to_end(tmp_path, tiny_model_path, fisher_registered, forward_rows):
    store = tmp_path / "store"
    v = api.save(conversations(10), name="chats", store=store)
    out = run_selector("chats", method="fisher", name="chats-fisher", store=store, model=tiny_model_path, budget=4)
    table = out.to_arrow()
    assert len(out) == 4 and out.op["method"] == "fisher" and "model" in out.op
    assert {"fisher_gain", "fisher_rank"} <= set(table.column_names) and "fisher_score" not in table.column_names

    # Rows come in pick order: the same order greedy_logdet gives on the same (float16, on-disk) features.
    feats = scoring.feature_matrix(v, model=tiny_model_path)
    cand = np.nonzero(feats.lengths)[0].tolist()
    want, want_gains = greedy_logdet([feats.row(i) for i in cand], 4)
    assert table.column("id").to_pylist() == [f"r{cand[j]}" for j in want]
    gains = np.array(table.column("fisher_gain").to_pylist())
    np.testing.assert_allclose(gains, want_gains, rtol=1e-9)
    assert np.all(gains > 0) and np.all(np.diff(gains) <= 1e-12)
    assert table.column("fisher_rank").to_pylist() == [1, 2, 3, 4]

    dec = out.decisions().to_pylist()
    assert len(dec) == 10 and sum(d["kept"] for d in dec) == 4
    assert dec[2] == {"id": "r2", "score": 0.0, "kept": False, "reason": "no_trained_tokens"}
    dropped = [d for d in dec if not d["kept"] and d["id"] != "r2"]
    assert {d["reason"] for d in dropped} == {"below_budget"}
    # An unpicked row's gain against the final V is at most what the last pick gained.
    assert all(0 < d["score"] <= gains[-1] + 1e-12 for d in dropped)

    # Re-run: the same version, no forward pass. Other greedy settings: a new version, features from the cache.
    n_forward = len(forward_rows)
    again = run_selector("chats", method="fisher", name="chats-fisher", store=store, model=tiny_model_path, budget=4)
    assert again.id == out.id and len(forward_rows) == n_forward
    other = run_selector(
        "chats", method="fisher", name="chats-fisher", store=store, model=tiny_model_path, budget=4, lam=0.25
    )
    assert other.id != out.id and len(forward_rows) == n_forward


def test_selector_budget_forms(tmp_path, tiny_model_path):
    v = api.save(conversations(8), name="chats", store=tmp_path / "store")
    counts = scoring.response_token_counts(v, tiny_model_path)
    sel = FisherSelector(model=tiny_model_path, budget_tokens=40).fit(v)
    kept = sel.select().order
    assert 0 < counts[kept].sum() <= 40 and len(kept) < 7
    assert FisherSelector(model=tiny_model_path, fraction=0.25).fit(v).select().order.shape == (2,)
    # More than the rows with trained tokens: all 7 of them, never the empty row.
    many = FisherSelector(model=tiny_model_path, budget=100).fit(v).select()
    assert sorted(many.order.tolist()) == [0, 1, 3, 4, 5, 6, 7] and many.reasons[2] == "no_trained_tokens"
    with pytest.raises(CurateError, match="budget"):
        FisherSelector(model=tiny_model_path).fit(v)
    assert FisherSelector(model=tiny_model_path).identity()["model"].startswith("local:")


# ---------------------------------------------------------------------------------------------- the paper's anchor


def test_synthetic_experiment_fisher_beats_uniform():
    spec = importlib.util.spec_from_file_location("fisher_synthetic", REPO / "benchmarks" / "fisher_synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # 4 seeds, N=600 sentences and 2 small budgets instead of 20 seeds, N=2000, 5 budgets: a few seconds.
    rows = mod.run([0, 1, 2, 3], [20, 50], n_sentences=600)
    for r in rows:
        assert r["fisher_mean"] < r["uniform_mean"], r
        assert r["fisher_max"] < r["uniform_max"], r


@pytest.mark.slow
def test_real_model_on_gsm8k(tmp_path, fisher_registered):
    store = tmp_path / "store"
    full = api.import_data(str(REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"), name="gsm8k", store=store)
    api.save(full.to_arrow().slice(0, 6), name="gsm8k-6", store=store)
    out = run_selector("gsm8k-6", method="fisher", name="gsm8k-fisher", store=store, budget=3)
    gains = out.to_arrow().column("fisher_gain").to_pylist()
    assert len(out) == 3 and len(out.decisions()) == 6
    assert all(g > 0 for g in gains) and gains == sorted(gains, reverse=True)

    # On the real SmolLM2 too, the features are the LM head's input (checked by a hook on the head itself).
    import torch

    from curate.chat import assistant_token_mask
    from curate.models import load_causal_lm

    row = api.load("gsm8k-6", store=store).to_pylist()[1]
    model, tok = load_causal_lm("smollm2-135m")
    ids, mask = assistant_token_mask(tok, row["messages"])
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids]))
    finally:
        hook.remove()
    want = seen[0][0, [t for t in range(len(ids) - 1) if mask[t + 1]]].float().numpy()
    got = scoring.extract_features([row], model="smollm2-135m", store=store)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
