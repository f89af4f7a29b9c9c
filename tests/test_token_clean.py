"""Token Cleaning (curate/selectors/token_clean.py) and per-token losses (curate.scoring.token_losses): scores equal
a directly computed loss difference, exact keep counts and tie-break, prompt tokens never kept, the random and
per-row baselines, a trained reference from a warm-up version, self-evolving rounds, caching, planted noise, and
SFT on the result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

import curate
import curate.scoring as scoring
import curate.train
from curate.chat import assistant_token_mask
from curate.errors import CurateError
from curate.selectors import SELECTORS, run_selector
from curate.selectors.token_clean import TRAINED_MARKER, TokenCleanSelector, keep_random, keep_top
from curate.testing import save_tiny_model

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py; the slow tests here too


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    # The lead wires SELECTORS; until then (and harmlessly after) the tests register the method themselves.
    monkeypatch.setitem(SELECTORS, "token-clean", TokenCleanSelector)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny random Llamas with the same byte-level tokenizer and different weights (seeds 1 and 2)."""
    root = tmp_path_factory.mktemp("tc-models")
    return str(save_tiny_model(root / "base", seed=1)), str(save_tiny_model(root / "ref", seed=2))


def chats(n: int) -> list[dict]:
    """Rows of different lengths; row 1 has two assistant turns, row 3 none (no response token at all)."""
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"question {i} " + "x" * (i % 4)}]
        if i != 3:
            msgs.append({"role": "assistant", "content": f"answer {i} " + "yz" * (1 + i % 3)})
        if i == 1:
            msgs += [{"role": "user", "content": "again"}, {"role": "assistant", "content": "sure thing"}]
        rows.append({"id": f"r{i}", "messages": msgs})
    return rows


def direct(path: str, messages: list[dict]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(ids, response mask without position 0, loss of token j given < j with index 0 = 0): one plain forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids, mask = assistant_token_mask(tok, messages)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    loss = F.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="none").numpy()
    mask = np.asarray(mask, dtype=bool)
    mask[0] = False
    return ids, mask, np.concatenate([[0.0], loss])


# ---------------------------------------------------------------------------------------------- token losses


def test_token_losses_match_a_plain_forward_and_are_cached(tmp_path, models):
    base, _ = models
    rows = chats(6)
    stats: dict = {}
    # batch_tokens=64 forces several length-sorted batches with padding inside them
    got = scoring.token_losses(rows, model=base, store=tmp_path / "store", batch_tokens=64, stats=stats)
    assert stats == {"computed": 6, "cached": 0}
    for r, g in zip(rows, got, strict=True):
        ids, _, want = direct(base, r["messages"])
        assert g.dtype == np.float32 and g.shape == (len(ids),) and g[0] == 0.0
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
    again: dict = {}
    cached = scoring.token_losses(rows[::-1], model=base, store=tmp_path / "store", stats=again)
    assert again == {"computed": 0, "cached": 6}
    for a, b in zip(cached, got[::-1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_tokenizer_mismatch_is_an_error(tmp_path, models):
    from transformers import AutoTokenizer

    other = save_tiny_model(tmp_path / "other", seed=1)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra>"])  # one more vocab entry: ids no longer mean the same thing
    tok.save_pretrained(other)
    with pytest.raises(CurateError, match="different tokenizers") as err:
        scoring.check_same_tokenizer(models[0], str(other))
    assert models[0] in str(err.value) and str(other) in str(err.value)  # names both models
    v = curate.save(chats(4), name="chats", store=tmp_path / "store")
    with pytest.raises(CurateError, match="different tokenizers"):
        TokenCleanSelector(base=models[0], reference=str(other)).fit(v)
    assert scoring.check_same_tokenizer(*models)  # the two seeds share one tokenizer


# ---------------------------------------------------------------------------------------------- choosing tokens


def test_keep_top_golden_ties_and_nan():
    scores = [np.array([1.0, 5.0, 1.0]), np.array([1.0, np.nan]), np.array([5.0, 0.0])]
    # 7 candidates, keep int(7 * 0.6) = 4: both 5.0s (row 0 first), then the 1.0s in (row, position) order.
    got = keep_top(scores, keep=0.6)
    assert [m.tolist() for m in got] == [[True, True, True], [False, False], [True, False]]
    # keep=1.0 keeps even the NaN; per row int(n_i * 0.6): 1, 1, 1
    assert all(m.all() for m in keep_top(scores, keep=1.0))
    per_row = keep_top(scores, keep=0.6, scope="sample")
    assert [m.tolist() for m in per_row] == [[False, True, False], [True, False], [True, False]]
    assert [m.tolist() for m in keep_top([np.zeros(0), np.zeros(0)], keep=0.6)] == [[], []]


def test_keep_random_counts_and_seed():
    a = keep_random([7, 0, 13], keep=0.6, seed=3)
    assert [len(m) for m in a] == [7, 0, 13] and sum(int(m.sum()) for m in a) == int(20 * 0.6)
    b = keep_random([7, 0, 13], keep=0.6, seed=3)
    c = keep_random([7, 0, 13], keep=0.6, seed=4)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))
    assert [int(m.sum()) for m in keep_random([7, 0, 13], keep=0.6, scope="sample")] == [4, 0, 7]


# ---------------------------------------------------------------------------------------------- the selector


def test_scores_are_the_loss_difference_and_top_share_is_kept(tmp_path, models):
    base, ref = models
    rows = chats(8)
    v = curate.save(rows, name="chats", store=tmp_path / "store")
    sel = TokenCleanSelector(base=base, reference=ref, store_scores=True).fit(v)
    out = sel.transform(v.to_arrow(), sel.select()).to_pylist()

    all_scores, all_labels, total = [], [], 0
    for r, o in zip(rows, out, strict=True):
        ids, mask, lb = direct(base, r["messages"])
        _, _, lr = direct(ref, r["messages"])
        assert o["input_ids"] == ids and len(o["labels"]) == len(ids)
        want = np.where(mask, lb - lr, np.nan)
        np.testing.assert_allclose(np.asarray(o["token_scores"], dtype=float), want, rtol=1e-4, atol=1e-5)
        labels = np.asarray(o["labels"])
        assert (labels[~mask] == -100).all()  # prompt tokens (and position 0) are never kept
        assert (labels[mask & (labels != -100)] == np.asarray(ids)[mask & (labels != -100)]).all()
        n_resp, n_kept = int(mask.sum()), int((labels != -100).sum())
        total += n_resp
        if n_resp:
            assert o["kept_token_share"] == pytest.approx(n_kept / n_resp)
            assert o["token_clean_score"] == pytest.approx(float(np.mean(want[mask])), rel=1e-4)
        else:  # row 3: nothing to clean
            assert np.isnan(o["kept_token_share"]) and np.isnan(o["token_clean_score"])
        all_scores.append(want[mask])
        all_labels.append(labels[mask] != -100)
    scores, kept = np.concatenate(all_scores), np.concatenate(all_labels)
    assert kept.sum() == int(total * 0.6)  # exactly int(total * keep), globally
    assert scores[kept].min() > scores[~kept].max()  # the kept tokens are the top scores (no ties here)
    assert sel.stats(sel.select())["tokens"] == {
        "response": total,
        "kept": int(total * 0.6),
        "dropped": total - int(total * 0.6),
        "kept_share": int(total * 0.6) / total,
    }

    # Per row (RHO-1 style): int(0.6 * n_i) in every row, the row's own top scores.
    per_row = TokenCleanSelector(base=base, reference=ref, scope="sample").fit(v)
    for i, r in enumerate(rows):
        _, mask, _ = direct(base, r["messages"])
        n_kept = int((per_row.labels_[i] != -100).sum())
        assert n_kept == int(mask.sum() * 0.6)


def test_reference_equal_to_base_scores_zero_and_ties_keep_row_order(tmp_path, models):
    base, _ = models
    v = curate.save(chats(6), name="chats", store=tmp_path / "store")
    sel = TokenCleanSelector(base=base, reference=base, store_scores=True).fit(v)
    finite = np.concatenate([s[np.isfinite(s)] for s in sel.token_scores_])
    assert finite.size and (finite == 0.0).all()
    # All scores tie, so the global top share is the first int(total * 0.6) response tokens in (row, position).
    masks = [(np.asarray(sel.labels_[i]) != -100) for i in range(6)]
    resp = [np.isfinite(sel.token_scores_[i]) for i in range(6)]
    flat_kept = np.concatenate([m[r] for m, r in zip(masks, resp, strict=True)])
    k = int(len(flat_kept) * 0.6)
    assert flat_kept[:k].all() and not flat_kept[k:].any()

    everything = TokenCleanSelector(base=base, reference=base, keep=1.0).fit(v)
    for ids, labels, r in zip(everything.input_ids_, everything.labels_, resp, strict=True):
        np.testing.assert_array_equal(labels[r], ids[r])
        assert (labels[~r] == -100).all()


def test_random_baseline_keeps_the_count_and_differs_from_scores(tmp_path, models):
    base, ref = models
    v = curate.save(chats(8), name="chats", store=tmp_path / "store")
    scored = TokenCleanSelector(base=base, reference=ref).fit(v)
    rand = TokenCleanSelector(base=base, random=True, seed=5).fit(v)  # no reference needed
    assert rand.kept_tokens_ == scored.kept_tokens_ == int(scored.response_tokens_ * 0.6)
    assert any((a != b).any() for a, b in zip(rand.labels_, scored.labels_, strict=True))
    assert np.isnan(rand.scores_).all()  # no reference: nothing was scored
    again = TokenCleanSelector(base=base, random=True, seed=5).fit(v)
    assert all((a == b).all() for a, b in zip(rand.labels_, again.labels_, strict=True))
    # With a reference the random baseline still reports the scores, which then decide nothing.
    both = TokenCleanSelector(base=base, reference=ref, random=True, seed=5).fit(v)
    np.testing.assert_allclose(both.scores_, scored.scores_, equal_nan=True)
    assert all((a == b).all() for a, b in zip(both.labels_, rand.labels_, strict=True))


def test_token_budget_keeps_exactly_the_top_tokens_and_drops_rows_left_empty(tmp_path, models):
    base, ref = models
    store = tmp_path / "store"
    v = curate.save(chats(8), name="chats", store=store)
    full = TokenCleanSelector(base=base, reference=ref, keep=1.0).fit(v)
    order = np.argsort(-np.concatenate([s[np.isfinite(s)] for s in full.token_scores_]), kind="stable")
    assert order.size > 12
    sel = TokenCleanSelector(base=base, reference=ref, budget_tokens=12).fit(v)
    assert sel.kept_tokens_ == 12  # exactly the budget, whatever the keep share says
    kept = np.concatenate(
        [(lab != -100)[np.isfinite(s)] for lab, s in zip(sel.labels_, full.token_scores_, strict=True)]
    )
    assert set(np.nonzero(kept)[0]) == set(order[:12])  # the 12 top scores, globally
    out = run_selector(
        "chats", method="token-clean", name="c12", store=store, base=base, reference=ref, budget_tokens=12
    )
    dec = {d["id"]: d for d in out.decisions().to_pylist()}
    empty = {f"r{i}" for i, lab in enumerate(sel.labels_) if not (lab != -100).any()}
    assert empty and {i for i, d in dec.items() if not d["kept"]} == empty  # no kept token: dropped
    assert all(dec[i]["reason"] == "no_kept_tokens" for i in empty) and len(out) == 8 - len(empty)
    labels = out.to_arrow().column("labels").combine_chunks().flatten().to_numpy()
    assert int((labels != -100).sum()) == 12
    # a budget larger than the response keeps every response token; random keeps the same count
    assert TokenCleanSelector(base=base, reference=ref, budget_tokens=10**6).fit(v).kept_tokens_ == full.kept_tokens_
    assert TokenCleanSelector(base=base, random=True, budget_tokens=12).fit(v).kept_tokens_ == 12
    # without a budget the recipe is what it was before the option existed
    assert "budget_tokens" not in TokenCleanSelector(reference=ref).get_params()
    assert TokenCleanSelector(reference=ref, budget_tokens=5).get_params()["budget_tokens"] == 5
    for params in ({"scope": "sample"}, {"mode": "self-evolving"}):
        with pytest.raises(CurateError, match="--budget-tokens ranks all response tokens"):
            TokenCleanSelector(budget_tokens=5, **params)._check()
    with pytest.raises(CurateError, match="--budget-tokens must be a non-negative integer"):
        TokenCleanSelector(reference=ref, budget_tokens=-1)._check()


def test_run_selector_commits_labels_manifest_and_rerun_is_free(tmp_path, models, monkeypatch):
    base, ref = models
    store = tmp_path / "store"
    curate.save(chats(8), name="chats", store=store)
    out = run_selector("chats", method="token-clean", name="clean", store=store, base=base, reference=ref)
    table = out.to_arrow()
    assert len(out) == 8 and table.column("id").to_pylist() == [f"r{i}" for i in range(8)]
    types = {f.name: f.type for f in table.schema}
    assert types["input_ids"].value_type == types["labels"].value_type == pa.int32()
    assert types["kept_token_share"] == pa.float64() and "token_scores" not in types
    dec = out.decisions().to_pylist()
    assert len(dec) == 8 and all(d["kept"] and d["reason"] == "" for d in dec)
    tok = out.manifest["tokenizer"]
    assert tok["model"] == base and len(tok["chat_template"]) == 16 and tok["fingerprint"]
    st = out.manifest["stats"]
    assert st["losses"]["base"] == {"computed": 8, "cached": 0} and st["kept_token_share"]["rows"] == 7

    # A second run of the same recipe is the same version; another keep is a new one with no forward pass.
    calls = []
    real = scoring._next_token_nll
    monkeypatch.setattr(scoring, "_next_token_nll", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_selector("chats", method="token-clean", name="clean", store=store, base=base, reference=ref)
    assert again.id == out.id and calls == []
    other = run_selector("chats", method="token-clean", name="clean", store=store, base=base, reference=ref, keep=0.3)
    assert other.id != out.id and calls == []
    assert other.manifest["stats"]["losses"]["reference"] == {"computed": 0, "cached": 8}


def test_bad_parameters(tmp_path, models):
    base, ref = models
    v = curate.save(chats(3), name="chats", store=tmp_path / "store")
    for params, msg in [
        ({"reference": ref, "keep": 1.5}, "--keep"),
        ({"reference": ref, "scope": "row"}, "--scope"),
        ({"reference": ref, "mode": "evolving"}, "--mode"),
        ({}, "needs a reference"),
        ({"reference": ref, "reference_from": "chats"}, "not both"),
        ({"mode": "self-evolving", "reference": ref}, "self-evolving"),
        ({"mode": "self-evolving", "random": True}, "--random"),
        ({"mode": "self-evolving", "rounds": 3}, "at least"),  # 3 rows cannot make 4 parts
        ({"reference_from": "chats", "ref_lr": 0.0}, "--ref-lr"),
    ]:
        with pytest.raises(CurateError, match=msg):
            TokenCleanSelector(base=base, **params).bind(**SERVICES).fit(v)


# ---------------------------------------------------------------------------------------------- trained references


# Tiny-model training: 6 steps at lr 1e-2 is enough to move a 32-dim Llama's predictions (the real default is
# 1 epoch at 2e-5); batch 4 keeps several steps on 8 rows.
TRAIN = {"ref_steps": 6, "ref_lr": 1e-2, "ref_batch_size": 4}
# What `curate select` hands a selector that trains (selectors never import the trainers themselves).
SERVICES = {"train_sft": curate.train.sft}


def test_without_a_bound_trainer_a_trained_reference_is_a_one_line_error(tmp_path, models):
    base, ref = models
    v = curate.save(chats(4), name="chats", store=tmp_path / "store")
    for params in ({"reference_from": "chats"}, {"mode": "self-evolving", "rounds": 1}):
        with pytest.raises(CurateError, match=r"bind\(train_sft=curate\.train\.sft\)") as err:
            TokenCleanSelector(base=base, **params).fit(v)
        assert "\n" not in str(err.value) and "curate select" in str(err.value)
    assert not (tmp_path / "store" / "cache" / "token-clean-models").exists()  # failed before any work
    # A given reference needs no trainer; a service the selector does not use is refused by name.
    assert TokenCleanSelector(base=base, reference=ref).fit(v).kept_tokens_ > 0
    with pytest.raises(CurateError, match="unknown service.*train_grpo.*it uses: train_sft"):
        TokenCleanSelector(base=base, reference=ref).bind(train_grpo=curate.train.grpo)


def test_a_bound_trainer_never_enters_the_recipe():
    plain = TokenCleanSelector(reference_from="warm")
    bound = TokenCleanSelector(reference_from="warm").bind(train_sft=curate.train.sft)
    assert bound.service("train_sft") is curate.train.sft and plain.service("train_sft") is None
    assert bound.get_params() == plain.get_params() and "services_" not in bound.get_params()
    assert bound.extra_parents() == plain.extra_parents() == ["warm"]
    assert TRAINED_MARKER == curate.train.data.CONFIG_FILE  # spelled out in the selector, which cannot import it


def test_reference_from_trains_once_joins_the_lineage_and_sft_consumes_the_result(tmp_path, models):
    base, _ = models
    store = tmp_path / "store"
    warm = curate.save(chats(8), name="warm", store=store)
    curate.save([{**r, "id": f"p{i}"} for i, r in enumerate(chats(6)[::-1])], name="pool", store=store)
    kw = dict(method="token-clean", store=store, base=base, reference_from="warm", **TRAIN)
    out = run_selector("pool", name="clean", services=SERVICES, **kw)
    assert [p["name"] for p in out.parents] == ["pool", "warm"] and out.parents[1]["id"] == warm.id
    info = out.manifest["stats"]["reference"]
    ref_dir = Path(info["model"])
    assert info["trained_on"]["id"] == warm.id and (ref_dir / "curate_train.json").exists()
    assert ref_dir.is_relative_to(Path(store) / "cache")

    # The scores are loss_base - loss_ref against the trained model.
    trained = []
    sel = TokenCleanSelector(base=base, reference_from="warm", store_scores=True, **TRAIN)
    sel.bind(train_sft=lambda *a, **k: trained.append(1) or curate.train.sft(*a, **k))
    sel.fit(curate.load("pool", store=store))
    assert trained == []  # the reference folder is reused
    # The reference trained on the warm-up Version itself: its run info names that version.
    info = json.loads((ref_dir / TRAINED_MARKER).read_text())
    assert info["dataset"] == {"ref": warm.ref, "name": "warm", "id": warm.id}
    # Whoever binds the trainer does not change the recipe: the same version, from the cache.
    assert run_selector("pool", name="clean", services={"train_sft": lambda *a, **k: 1 / 0}, **kw).id == out.id
    row = curate.load("pool", store=store).to_pylist()[0]
    _, mask, lb = direct(base, row["messages"])
    _, _, lr = direct(str(ref_dir), row["messages"])
    np.testing.assert_allclose(sel.token_scores_[0][mask], (lb - lr)[mask], rtol=1e-4, atol=1e-5)

    # curate train sft reads the cleaned labels directly: it trains on exactly the kept tokens.
    result = curate.train.sft(out.ref, store=store, model=base, max_steps=1, batch_size=8, out=str(tmp_path / "run"))
    kept = out.manifest["stats"]["tokens"]["kept"]
    trained_rows = result.metrics["rows"] - result.metrics["dropped_no_target"]
    assert trained_rows == sum(s > 0 for s in out.to_arrow().column("kept_token_share").to_pylist())
    from curate.train.data import read_metrics

    assert read_metrics(result.out)[0]["target_tokens"] == kept


def test_self_evolving_scores_each_part_against_the_previous_round(tmp_path, models):
    base, _ = models
    store = tmp_path / "store"
    v = curate.save(chats(9), name="pool", store=store)
    out = run_selector(
        "pool",
        method="token-clean",
        name="se",
        store=store,
        base=base,
        mode="self-evolving",
        rounds=2,
        store_scores=True,
        services=SERVICES,
        **TRAIN,
    )
    assert [p["name"] for p in out.parents] == ["pool"]
    table = out.to_arrow().to_pylist()
    assert [r["token_clean_round"] for r in table] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    st = out.manifest["stats"]
    assert st["parts"] == [[0, 3], [3, 6], [6, 9]] and len(st["models"]) == 2  # theta_0, theta_1
    # theta_0 trained on rows handed to the trainer directly: no store version, so a content digest names them.
    info = json.loads((Path(st["models"][0]) / TRAINED_MARKER).read_text())
    assert info["dataset"]["ref"] == "rows" and info["dataset"]["name"] is None and len(info["dataset"]["id"]) == 16
    rows = v.to_pylist()
    for i, r in enumerate(table):
        ids, mask, lb = direct(base, rows[i]["messages"])
        labels = np.asarray(r["labels"])
        if i < 3:  # the warm-up part keeps every response token and has no scores
            np.testing.assert_array_equal(labels[mask], np.asarray(ids)[mask])
            assert np.isnan(r["token_scores"]).all()
            continue
        _, _, lr = direct(st["models"][r["token_clean_round"] - 1], rows[i]["messages"])
        np.testing.assert_allclose(np.asarray(r["token_scores"])[mask], (lb - lr)[mask], rtol=1e-4, atol=1e-5)
    for part in ((3, 6), (6, 9)):  # int(0.6 * response tokens) kept within each part
        resp = sum(int(direct(base, rows[i]["messages"])[1].sum()) for i in range(*part))
        kept = sum(int((np.asarray(table[i]["labels"]) != -100).sum()) for i in range(*part))
        assert kept == int(resp * 0.6)


# ---------------------------------------------------------------------------------------------- planted noise


def test_planted_noise_is_what_gets_dropped():
    spec = importlib.util.spec_from_file_location("token_clean_noise", REPO / "benchmarks" / "token_clean_noise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # One seed and the two methods that matter here (the script runs 3 seeds and 4 methods).
    res = {r["method"]: r for r in mod.run([0], methods=("global", "random"))}
    g, r = res["global"], res["random"]
    assert g["dropped_share"] == pytest.approx(r["dropped_share"])  # the same number of tokens dropped
    assert 0.05 < g["corrupted_share"] < 0.3 and r["precision"] < 0.3
    assert g["precision"] > 0.55 and g["precision"] > 2.5 * r["precision"], res
    assert g["recall"] > 0.8 and g["recall"] > 2.5 * r["recall"], res


# ---------------------------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_smollm2_on_gsm8k_through_one_sft_step(tmp_path):
    store = tmp_path / "store"
    full = curate.import_data("/work/shared/data/gsm8k/test.jsonl", name="gsm8k", store=store)
    table = full.to_arrow()
    # Three rows as the pool and the next four as warm-up (the real sizes are 50k and 10k): CPU seconds.
    curate.save(table.slice(0, 3), name="pool", store=store)
    curate.save(table.slice(3, 4), name="warm", store=store)
    out = run_selector(
        "pool",
        method="token-clean",
        name="pool-clean",
        store=store,
        reference_from="warm",
        ref_steps=2,
        ref_batch_size=2,
        ref_lr=1e-5,  # 2 steps of full fine-tuning: a reference that moved a little
        services=SERVICES,
    )
    st = out.manifest["stats"]
    assert st["tokens"]["kept"] == int(st["tokens"]["response"] * 0.6) > 0
    assert out.manifest["tokenizer"]["model"] == "smollm2-135m"
    scores = out.to_arrow().column("token_clean_score").to_pylist()
    assert all(np.isfinite(scores)) and any(s != 0 for s in scores)
    result = curate.train.sft(out.ref, store=store, max_steps=1, batch_size=3, out=str(tmp_path / "run"))
    assert result.steps == 1 and np.isfinite(result.metrics["loss"])
