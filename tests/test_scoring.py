"""Feature extraction and the cached, resumable batch engine (curate/scoring.py), on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import curate.scoring as scoring
from curate.cache import RowCache
from curate.chat import assistant_token_mask
from curate.errors import CurateError, InputError
from curate.models import load_causal_lm
from curate.scoring import cached_map, extract_features, projection_matrix, response_token_counts
from curate.store import Store


def chat(user: str, reply: str | None) -> dict:
    msgs = [{"role": "user", "content": user}]
    if reply is not None:
        msgs.append({"role": "assistant", "content": reply})
    return {"messages": msgs}


# Lengths from a few tokens to ~90 (byte-level tokenizer: one token per byte), plus a row with no assistant turn
# and a two-turn row, so sorting, padding and masking all matter.
ROWS = [
    chat("Add 2 and 3.", "5"),
    chat("Name a colour.", "Blue is a colour that many people like a lot."),
    chat("hi", None),
    chat("Count to five.", "one two three four five, and then six seven eight nine ten for good measure."),
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b!"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "b again"},
        ]
    },
    chat("x" * 40, "y" * 30),
]


def direct_features(model_path: str, rows: list[dict]) -> list[np.ndarray]:
    """Oracle: one unpadded forward per row; the LM head's input captured by a hook on the head itself."""
    model, tok = load_causal_lm(model_path)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    try:
        out = []
        for row in rows:
            ids, mask = assistant_token_mask(tok, row["messages"])
            seen.clear()
            with torch.inference_mode():
                model(input_ids=torch.tensor([ids]))
            h = seen[0][0].float().numpy()
            pos = [t for t in range(len(ids) - 1) if mask[t + 1]]
            out.append(h[pos].reshape(len(pos), h.shape[-1]))
        return out
    finally:
        hook.remove()


@pytest.fixture
def forward_calls(monkeypatch):
    """Records the batch size of every forward pass extract_features makes."""
    calls: list[int] = []
    real = scoring._lm_head_input

    def spy(model, input_ids, attention_mask):
        calls.append(int(input_ids.shape[0]))
        return real(model, input_ids, attention_mask)

    monkeypatch.setattr(scoring, "_lm_head_input", spy)
    return calls


def test_features_equal_unbatched_hidden_states(tiny_model_path, tmp_path, forward_calls):
    # batch_tokens=256 packs several rows per batch, with right padding, in length order.
    feats = extract_features(ROWS, model=tiny_model_path, batch_tokens=256, store=tmp_path / "s")
    want = direct_features(tiny_model_path, ROWS)
    assert max(forward_calls) > 1 and len(forward_calls) > 1
    assert [f.shape for f in feats] == [w.shape for w in want]
    assert feats[2].shape == (0, 32)  # no assistant turn: nothing trained
    assert feats[0].shape == (2, 32)  # "5" + <|im_end|>
    for f, w in zip(feats, want, strict=True):
        assert f.dtype == np.float32
        np.testing.assert_allclose(f, w, atol=1e-5)
    # Batching is invisible: one row per batch gives the same features.
    single = extract_features(ROWS, model=tiny_model_path, batch_tokens=1)
    for f, s in zip(feats, single, strict=True):
        np.testing.assert_allclose(f, s, atol=1e-5)


def test_projection_and_token_cap(tiny_model_path):
    full = extract_features(ROWS, model=tiny_model_path)
    proj = extract_features(ROWS, model=tiny_model_path, dim=8, seed=3)
    P = projection_matrix(32, 8, seed=3)
    assert P.shape == (32, 8)
    np.testing.assert_allclose(P, projection_matrix(32, 8, seed=3))
    assert not np.allclose(P, projection_matrix(32, 8, seed=4))
    for f, p in zip(full, proj, strict=True):
        assert p.shape == (len(f), 8)
        np.testing.assert_allclose(p, f @ P, atol=1e-5)

    capped = extract_features(ROWS, model=tiny_model_path, max_tokens_per_example=5, seed=0)
    for f, c in zip(full, capped, strict=True):
        assert c.shape == (min(len(f), 5), 32)
        # every kept row is one of the row's own token features, in position order
        hits = [int(np.argmin(np.abs(f - r).max(axis=1))) for r in c]
        assert hits == sorted(set(hits))
        np.testing.assert_allclose(c, f[hits], atol=1e-5)
    assert len(full[3]) > 5  # the cap bites on this row, so the next checks mean something
    # The sample depends on the seed and the row's content, not on batching.
    again = extract_features(ROWS, model=tiny_model_path, max_tokens_per_example=5, seed=0, batch_tokens=1)
    other = extract_features(ROWS, model=tiny_model_path, max_tokens_per_example=5, seed=1)
    np.testing.assert_allclose(again[3], capped[3], atol=1e-6)
    assert not np.allclose(other[3], capped[3])


def test_second_run_reads_the_cache(tiny_model_path, tmp_path, forward_calls):
    store = tmp_path / "s"
    first: dict = {}
    feats = extract_features(ROWS, model=tiny_model_path, store=store, stats=first)
    assert first == {"computed": len(ROWS), "cached": 0}
    n_calls = len(forward_calls)
    again: dict = {}
    cached = extract_features(ROWS, model=tiny_model_path, store=store, stats=again)
    assert again == {"computed": 0, "cached": len(ROWS)}
    assert len(forward_calls) == n_calls  # no forward pass at all
    for a, b in zip(feats, cached, strict=True):
        np.testing.assert_array_equal(a, b)
    # Other settings are another cache.
    other: dict = {}
    extract_features(ROWS, model=tiny_model_path, store=store, dim=4, stats=other)
    assert other["computed"] == len(ROWS)


def test_killed_run_resumes(tiny_model_path, tmp_path, monkeypatch):
    store = tmp_path / "s"
    real = scoring._lm_head_input
    calls = []

    def dies_on_second_batch(model, input_ids, attention_mask):
        calls.append(int(input_ids.shape[0]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a Ctrl-C mid-run looks like
        return real(model, input_ids, attention_mask)

    monkeypatch.setattr(scoring, "_lm_head_input", dies_on_second_batch)
    # batch_tokens=1: one row per batch, shard_rows=1: a shard per row.
    with pytest.raises(KeyboardInterrupt):
        extract_features(ROWS, model=tiny_model_path, store=store, batch_tokens=1, shard_rows=1)
    monkeypatch.setattr(scoring, "_lm_head_input", real)
    stats: dict = {}
    feats = extract_features(ROWS, model=tiny_model_path, store=store, batch_tokens=1, stats=stats)
    assert stats == {"computed": len(ROWS) - 1, "cached": 1}
    for f, w in zip(feats, direct_features(tiny_model_path, ROWS), strict=True):
        np.testing.assert_allclose(f, w, atol=1e-5)


def test_version_input_uses_its_store(tiny_model_path, tmp_path):
    import curate.ops as api

    rows = [{"id": f"r{i}", **r} for i, r in enumerate(ROWS)]
    v = api.save(rows, name="toy", store=tmp_path / "store")
    stats: dict = {}
    extract_features(v, model=tiny_model_path, stats=stats)
    extract_features("toy", model=tiny_model_path, store=tmp_path / "store", stats=stats)
    assert stats == {"computed": len(ROWS), "cached": len(ROWS)}
    counts = response_token_counts(v, tiny_model_path)
    assert counts.tolist() == [len(f) for f in extract_features(ROWS, model=tiny_model_path)]
    assert counts[0] == 2 and counts[2] == 0


def test_token_counts_are_cached(tiny_model_path, tmp_path, monkeypatch):
    store = tmp_path / "s"
    first = response_token_counts(ROWS, tiny_model_path, store=store)

    def boom(*a, **k):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(scoring, "_trained_mask", boom)
    np.testing.assert_array_equal(response_token_counts(ROWS, tiny_model_path, store=store), first)


def test_bad_rows_name_row_and_field(tiny_model_path):
    with pytest.raises(InputError, match=r"row 1 \(id 1\): field 'messages'"):
        extract_features([ROWS[0], {"messages": None}], model=tiny_model_path)
    with pytest.raises(InputError, match=r"row 0 \(id 0\): field 'messages'"):
        extract_features([{"messages": [{"role": "user"}]}], model=tiny_model_path)
    with pytest.raises(CurateError, match="--dim"):
        extract_features(ROWS, model=tiny_model_path, dim=0)


def test_cached_map_dedups_sorts_and_packs(tmp_path):
    batches: list[list[int]] = []

    def fn(batch):
        batches.append([len(x) for x in batch])
        return [np.full((len(x), 2), float(len(x))) for x in batch]

    rows = [[0] * n for n in (3, 9, 1, 9, 4, 6)]
    keys = ["a", "b", "c", "b", "d", "e"]  # rows 1 and 3 share a key: computed once
    cache = RowCache(Store(tmp_path), "test", "k1")
    stats: dict = {}
    out = cached_map(rows, keys, fn, cache, batch_tokens=12, stats=stats)
    assert batches == [[9], [6, 4], [3, 1]]  # longest first; len(batch) * longest <= 12
    assert [o.shape for o in out] == [(3, 2), (9, 2), (1, 2), (9, 2), (4, 2), (6, 2)]
    assert stats == {"computed": 5, "cached": 0}
    batches.clear()
    again = cached_map(rows, keys, fn, cache, stats=(s2 := {}))
    assert batches == [] and s2 == {"computed": 0, "cached": 5}
    for a, b in zip(out, again, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CurateError, match="keys"):
        cached_map(rows, keys[:2], fn, None)
