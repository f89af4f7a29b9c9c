"""Self-scoring selectors: IFD (curate/selectors/ifd.py) and the perplexity baseline (curate/selectors/perplexity.py).

Scores equal a ratio (or mean) computed directly from one plain forward pass per rendering, exact picks and reasons,
band edges, rows without an answer, truncated answers and NaN losses, the loss cache on a rerun, and refused
options."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import curate
import curate.scoring as scoring
from curate.chat import assistant_token_mask
from curate.errors import CurateError
from curate.options import parse_flags
from curate.selectors import SELECTORS, make_selector, run_selector
from curate.selectors.ifd import IFDSelector, ifd_score, without_question
from curate.selectors.perplexity import PerplexitySelector, answer_token_losses
from curate.testing import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    # The lead wires SELECTORS; until then (and harmlessly after) the tests register the methods themselves.
    monkeypatch.setitem(SELECTORS, "ifd", IFDSelector)
    monkeypatch.setitem(SELECTORS, "perplexity", PerplexitySelector)


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    """The tiny model with a NaN embedding for "~": every position from a "~" on has NaN hidden states."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = save_tiny_model(tmp_path_factory.mktemp("nan") / "model")
    # Untied, so the LM head keeps finite weights: a NaN row there would make every position's softmax NaN.
    model = AutoModelForCausalLM.from_pretrained(path, tie_word_embeddings=False)
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        model.get_output_embeddings().weight.copy_(model.get_input_embeddings().weight)
        model.get_input_embeddings().weight[tok.convert_tokens_to_ids("~")] = float("nan")
    model.save_pretrained(path)
    return str(path)


def chats(n: int) -> list[dict]:
    """Rows of different lengths; row 1 has two assistant turns and a system turn."""
    rows = []
    for i in range(n):
        msgs = [
            {"role": "user", "content": f"question {i} " + "x" * (i % 4)},
            {"role": "assistant", "content": f"answer {i} " + "yz" * (1 + i % 3)},
        ]
        if i == 1:
            msgs = [{"role": "system", "content": "be brief"}, *msgs]
            msgs += [{"role": "user", "content": "again"}, {"role": "assistant", "content": "sure thing"}]
        rows.append({"id": f"r{i}", "messages": msgs})
    return rows


@functools.cache
def _load(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def direct(path: str, messages: list[dict], limit: int | None = None) -> np.ndarray:
    """Losses of the answer tokens (SFT's mask without position 0) from one plain forward pass, cut at ``limit``."""
    model, tok = _load(path)
    ids, mask = assistant_token_mask(tok, messages)
    ids, mask = ids[:limit], np.asarray(mask[:limit], dtype=bool)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    loss = np.concatenate([[0.0], F.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="none")])
    mask[0] = False
    return loss[mask]


def direct_ifd(path: str, messages: list[dict], limit: int | None = None) -> float:
    lc, la = direct(path, messages, limit), direct(path, without_question(messages), limit)
    k = min(len(lc), len(la))
    return float(np.mean(lc[:k]) / np.mean(la[:k]))


# ---------------------------------------------------------------------------------------------- pure functions


def test_ifd_score_golden_values():
    assert ifd_score(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0])) == (0.5, 2.0, 4.0)
    # Only the first k = 2 tokens both renderings hold are compared.
    assert ifd_score(np.array([3.0, 1.0, 100.0]), np.array([4.0, 4.0])) == (0.5, 2.0, 4.0)
    value, lc, la = ifd_score(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0]), ratio="ppl")
    assert value == pytest.approx(math.exp(-2.0)) and (lc, la) == (2.0, 4.0)
    # The two ratios agree on which side of 1 a row falls, not on the order: (1, 2) vs (3, 4.5).
    a, b = (np.array([1.0]), np.array([2.0])), (np.array([3.0]), np.array([4.5]))
    assert ifd_score(*a)[0] < ifd_score(*b)[0] and ifd_score(*a, "ppl")[0] > ifd_score(*b, "ppl")[0]
    for cond, alone in (([], [1.0]), ([1.0], [0.0]), ([np.nan], [1.0]), ([np.inf], [1.0])):
        assert math.isnan(ifd_score(np.array(cond), np.array(alone))[0]), (cond, alone)
    assert math.isnan(ifd_score(np.array([np.inf]), np.array([1.0]), ratio="ppl")[0])


def test_without_question_empties_every_other_turn_in_place():
    msgs = chats(2)[1]["messages"]
    assert without_question(msgs) == [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "answer 1 yzyz"},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "sure thing"},
    ]
    assert msgs[0]["content"] == "be brief"  # the input is not changed


# ---------------------------------------------------------------------------------------------- IFD


def test_ifd_equals_the_direct_ratio_and_picks_the_band_by_ifd(tmp_path, tiny_model_path):
    rows = chats(8)
    v = curate.save(rows, name="chats", store=tmp_path / "store")
    sel = IFDSelector(model=tiny_model_path, max_ifd=None).fit(v)
    want = np.array([direct_ifd(tiny_model_path, r["messages"]) for r in rows])
    np.testing.assert_allclose(sel.scores_, want, rtol=1e-5)
    for i, r in enumerate(rows):
        lc, la = direct(tiny_model_path, r["messages"]), direct(tiny_model_path, without_question(r["messages"]))
        assert len(lc) == len(la)  # the same answer tokens in both renderings
        assert sel.loss_conditioned_[i] == pytest.approx(lc.mean(), rel=1e-5)
        assert sel.loss_alone_[i] == pytest.approx(la.mean(), rel=1e-5)
    # The random tiny model sits near 1 on both sides: the band decides, not only the budget.
    above = {i for i in range(8) if want[i] >= 1}
    assert 0 < len(above) < 6 and all(abs(w - 1) > 1e-5 for w in want)  # no row near enough the edge to flip
    band = [i for i in np.argsort(-want, kind="stable") if i not in above]

    picked = IFDSelector(model=tiny_model_path, budget=2).fit(v).select()
    assert picked.order.tolist() == band[:2]
    assert picked.reasons == [
        "" if i in band[:2] else "ifd_ge_max" if i in above else "below_budget" for i in range(8)
    ]
    # No budget keeps the whole band, highest IFD first; a fraction is of all input rows (round(0.25 * 8) = 2).
    assert IFDSelector(model=tiny_model_path).fit(v).select().order.tolist() == band
    assert IFDSelector(model=tiny_model_path, fraction=0.25).fit(v).select().order.tolist() == band[:2]
    # Without an upper edge every row is ranked, the ones above 1 first.
    assert sel.select().order.tolist() == np.argsort(-want, kind="stable").tolist()

    # A token budget skips a row that would overflow it and goes on down the ranking.
    tokens = scoring.response_token_counts(v, tiny_model_path)
    budget = int(tokens[band[0]] + min(tokens[band[1:]]))
    want_rows, used = [], 0
    for i in band:
        if used + tokens[i] <= budget:
            want_rows, used = [*want_rows, i], used + int(tokens[i])
    by_tokens = IFDSelector(model=tiny_model_path, budget_tokens=budget).fit(v).select().order.tolist()
    assert by_tokens == want_rows and len(want_rows) == 2


def test_perplexity_ratio_reorders_the_same_band(tmp_path, tiny_model_path):
    v = curate.save(chats(8), name="chats", store=tmp_path / "store")
    loss = IFDSelector(model=tiny_model_path).fit(v)
    ppl = IFDSelector(model=tiny_model_path, ratio="ppl").fit(v)
    np.testing.assert_allclose(ppl.scores_, np.exp(loss.loss_conditioned_ - loss.loss_alone_), rtol=1e-12)
    assert ppl.reasons_ == loss.reasons_  # both below 1 for exactly the same rows


def test_band_edges_are_half_open(tmp_path, tiny_model_path):
    v = curate.save(chats(8), name="chats", store=tmp_path / "store")
    s = IFDSelector(model=tiny_model_path, max_ifd=None).fit(v).scores_
    order = np.argsort(-s, kind="stable")
    hi, lo = float(s[order[1]]), float(s[order[5]])  # the 2nd highest and the 6th highest, exactly
    sel = IFDSelector(model=tiny_model_path, max_ifd=hi, min_ifd=lo).fit(v).select()
    # max is excluded (>= hi dropped: rows 1st and 2nd), min included (the 6th stays), below min dropped.
    assert sel.order.tolist() == order[2:6].tolist()
    reasons = dict(zip(order.tolist(), ["ifd_ge_max"] * 2 + [""] * 4 + ["ifd_lt_min"] * 2, strict=True))
    assert sel.reasons == [reasons[i] for i in range(8)]
    st = IFDSelector(model=tiny_model_path, max_ifd=hi, min_ifd=lo).fit(v)
    assert st.stats(st.select())["reasons"] == {"ifd_ge_max": 2, "ifd_lt_min": 2}
    assert st.stats(st.select())["ifd"]["in_band"] == 4


def test_rows_without_answers_truncated_answers_and_empty_questions(tmp_path, tiny_model_path):
    limit = 2048  # the tiny tokenizer's model_max_length; one token per byte
    rows = [
        {"id": "none", "messages": [{"role": "user", "content": "no answer here"}]},
        {"id": "blank", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        {"id": "empty-q", "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "ans"}]},
        # The conditioned rendering ends inside the answer: only its first answer tokens are compared.
        {
            "id": "cut",
            "messages": [{"role": "user", "content": "q" * 2020}, {"role": "assistant", "content": "a" * 60}],
        },
        # ... or before it: nothing left to compare.
        {"id": "gone", "messages": [{"role": "user", "content": "q" * 2100}, {"role": "assistant", "content": "abc"}]},
        *chats(2),
    ]
    v = curate.save(rows, name="odd", store=tmp_path / "store")
    sel = IFDSelector(model=tiny_model_path, max_ifd=None).fit(v)
    assert sel.reasons_ == ["no_answer_tokens", "no_answer_tokens", "", "", "no_answer_tokens", "", ""]
    assert np.isnan(sel.scores_[[0, 1, 4]]).all()
    assert sel.scores_[2] == 1.0  # an empty question renders the same conversation twice
    cut = direct(tiny_model_path, rows[3]["messages"], limit)
    assert 0 < len(cut) < 61  # the answer's 60 bytes + end of turn, cut
    assert sel.scores_[3] == pytest.approx(direct_ifd(tiny_model_path, rows[3]["messages"], limit), rel=1e-5)
    assert sel.loss_alone_[3] == pytest.approx(
        direct(tiny_model_path, without_question(rows[3]["messages"]))[: len(cut)].mean(), rel=1e-5
    )
    # The default band drops the IFD-1 row; the rows with no answer keep their own reason.
    out = IFDSelector(model=tiny_model_path).fit(v).select()
    assert out.reasons[:3] == ["no_answer_tokens", "no_answer_tokens", "ifd_ge_max"] and 2 not in out.order

    ppl = PerplexitySelector(model=tiny_model_path, budget=10).fit(v)
    assert ppl.reasons_ == ["no_answer_tokens", "no_answer_tokens", "", "", "no_answer_tokens", "", ""]
    assert ppl.scores_[3] == pytest.approx(cut.mean(), rel=1e-5)
    assert sorted(ppl.select().order.tolist()) == [2, 3, 5, 6]


def test_nan_losses_get_a_reason_and_are_never_kept(tmp_path, nan_model):
    rows = [
        {"id": "q~", "messages": [{"role": "user", "content": "what ~ is"}, {"role": "assistant", "content": "a"}]},
        {"id": "a~", "messages": [{"role": "user", "content": "what"}, {"role": "assistant", "content": "a ~ b"}]},
        {"id": "ok", "messages": [{"role": "user", "content": "what"}, {"role": "assistant", "content": "a b"}]},
    ]
    v = curate.save(rows, name="nan", store=tmp_path / "store")
    sel = IFDSelector(model=nan_model, max_ifd=None).fit(v)
    # "~" in the question: L(A|Q) is NaN, L(A) (question emptied) is not; "~" in the answer: both NaN.
    assert np.isnan(sel.loss_conditioned_[:2]).all() and np.isfinite(sel.loss_alone_[0])
    assert sel.reasons_ == ["nan_score", "nan_score", ""] and np.isfinite(sel.scores_[2])
    out = run_selector("nan", method="ifd", name="nan-ifd", store=tmp_path / "store", model=nan_model, max_ifd=None)
    dec = out.decisions().to_pylist()
    assert [d["reason"] for d in dec] == ["nan_score", "nan_score", ""] and len(out) == 1
    ppl = PerplexitySelector(model=nan_model, budget=3).fit(v)
    assert ppl.select().reasons == ["nan_score", "nan_score", ""]
    assert PerplexitySelector(model=nan_model, budget=3, highest=True).fit(v).select().order.tolist() == [2]


def test_run_selector_output_and_a_rerun_reads_the_loss_cache(tmp_path, tiny_model_path, monkeypatch):
    store = tmp_path / "store"
    v = curate.save(chats(8), name="chats", store=store)
    out = run_selector("chats", method="ifd", name="ifd", store=store, model=tiny_model_path, max_ifd=None, budget=3)
    table = out.to_arrow()
    sel = IFDSelector(model=tiny_model_path, max_ifd=None).fit(v)
    top = np.argsort(-sel.scores_, kind="stable")[:3]
    assert table.column("id").to_pylist() == [f"r{i}" for i in top]
    assert table.column("ifd_rank").to_pylist() == [1, 2, 3]
    np.testing.assert_allclose(table.column("ifd_score").to_pylist(), sel.scores_[top])
    np.testing.assert_allclose(table.column("ifd_loss_alone").to_pylist(), sel.loss_alone_[top])
    st = out.manifest["stats"]
    assert st["losses"] == {"conditioned": {"computed": 8, "cached": 0}, "alone": {"computed": 8, "cached": 0}}
    assert st["reasons"] == {"below_budget": 5} and st["ifd"]["scored"] == 8

    calls = []
    real = scoring._next_token_nll
    monkeypatch.setattr(scoring, "_next_token_nll", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_selector("chats", method="ifd", name="ifd2", store=store, model=tiny_model_path, budget=2)
    assert again.id != out.id and calls == []  # another recipe, no forward pass
    assert again.manifest["stats"]["losses"]["alone"] == {"computed": 0, "cached": 8}
    # The perplexity baseline reads the very losses IFD's conditioned pass left in the cache.
    ppl = run_selector("chats", method="perplexity", name="ppl", store=store, model=tiny_model_path, budget=3)
    assert calls == [] and ppl.manifest["stats"]["losses"] == {"computed": 0, "cached": 8}
    np.testing.assert_allclose(
        sorted(ppl.to_arrow().column("perplexity_score").to_pylist()), np.sort(sel.loss_conditioned_)[:3]
    )
    # Selecting again from a selection replaces the columns instead of duplicating them.
    twice = run_selector(out.ref, method="ifd", name="ifd-twice", store=store, model=tiny_model_path, max_ifd=None)
    assert twice.to_arrow().column_names.count("ifd_score") == 1 and calls == []


# ---------------------------------------------------------------------------------------------- perplexity


def test_perplexity_golden_lowest_highest_and_ties(tmp_path, tiny_model_path):
    rows = chats(6) + [{**chats(6)[2], "id": "dup"}]  # row 6 repeats row 2: a tie, broken by row index
    v = curate.save(rows, name="chats", store=tmp_path / "store")
    want = np.array([direct(tiny_model_path, r["messages"]).mean() for r in rows])
    low = PerplexitySelector(model=tiny_model_path, budget=3).fit(v)
    np.testing.assert_allclose(low.scores_, want, rtol=1e-5)
    assert low.scores_[2] == low.scores_[6]
    assert low.select().order.tolist() == np.argsort(want, kind="stable")[:3].tolist()
    high = PerplexitySelector(model=tiny_model_path, budget=3, highest=True).fit(v).select()
    assert high.order.tolist() == np.argsort(-want, kind="stable")[:3].tolist()
    assert high.reasons == ["" if i in high.order else "below_budget" for i in range(7)]
    everything = PerplexitySelector(model=tiny_model_path, fraction=1.0).fit(v).select().order.tolist()
    assert everything.index(2) == everything.index(6) - 1  # tied: lower row index first


def test_answer_token_losses_of_a_multi_turn_row_are_every_assistant_token(tiny_model_path):
    msgs = chats(2)[1]["messages"]
    (got,) = answer_token_losses([msgs], model=tiny_model_path)
    want = direct(tiny_model_path, msgs)
    assert len(got) == len("answer 1 yzyz") + len("sure thing") + 2  # both turns' bytes and end-of-turn tokens
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- options


def test_bad_options_are_one_line_errors_naming_the_option(tmp_path, tiny_model_path):
    v = curate.save(chats(2), name="chats", store=tmp_path / "store")
    m = {"model": tiny_model_path}
    for method, params, flag in [
        ("ifd", {"max_ifd": 0}, "--max-ifd"),
        ("ifd", {"max_ifd": float("nan")}, "--max-ifd"),
        ("ifd", {"max_ifd": "1"}, "--max-ifd"),
        ("ifd", {"max_ifd": True}, "--max-ifd"),
        ("ifd", {"min_ifd": -0.1}, "--min-ifd"),
        ("ifd", {"min_ifd": math.inf, "max_ifd": None}, "--min-ifd"),
        ("ifd", {"min_ifd": 0.5, "max_ifd": 0.5}, "--min-ifd"),
        ("ifd", {"ratio": "log"}, "--ratio"),
        ("ifd", {"budget": 2, "fraction": 0.5}, "--budget and --fraction"),
        ("ifd", {"budget": -1}, "--budget"),
        ("perplexity", {}, "--budget"),
        ("perplexity", {"budget": 2, "highest": "yes"}, "--highest"),
        ("perplexity", {"fraction": 1.5}, "--fraction"),
    ]:
        with pytest.raises(CurateError, match=flag) as err:
            make_selector(method, **m, **params).fit(v)
        assert "\n" not in str(err.value), (method, params)
    with pytest.raises(CurateError, match="unknown option.*max_ifd"):
        make_selector("perplexity", max_ifd=1.0)
    # The command line reads "none" as no edge and the ratio as a string.
    assert parse_flags(["--max-ifd", "none", "--min-ifd", "0.2", "--ratio", "ppl"], IFDSelector, what="ifd") == {
        "max_ifd": None,
        "min_ifd": 0.2,
        "ratio": "ppl",
    }


def test_one_row_and_empty_inputs(store, tiny_model_path):
    one = curate.save(chats(1), name="one", store=store)
    empty = store.commit(curate.as_table(chats(1)).slice(0, 0), name="empty", op={"name": "empty"})
    for method in ("ifd", "perplexity"):
        for src in (one, empty):
            out = curate.select(
                src.ref,
                method=method,
                name=f"{method}-{src.name}",
                store=store,
                model=tiny_model_path,
                budget=2,
                **({"max_ifd": None} if method == "ifd" else {}),
            )
            assert out.decisions().num_rows == len(src) == len(out)


# ---------------------------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_smollm2_ranks_a_copy_task_lowest_and_an_unrelated_answer_highest(tmp_path):
    # The question makes a copied answer almost free (IFD near 0) and an answer it restates cheap; an answer the
    # question says nothing about gains little from it (IFD near 1). Measured: 0.05, 0.14, 0.95.
    code = "qv7 kz2 mw9 tt4 bx1 pl8"
    rows = [
        {
            "id": "copy",
            "messages": [
                {"role": "user", "content": f"Repeat exactly: {code}"},
                {"role": "assistant", "content": code},
            ],
        },
        {
            "id": "math",
            "messages": [
                {"role": "user", "content": "What is 12 times 11?"},
                {"role": "assistant", "content": "12 times 11 is 132."},
            ],
        },
        {
            "id": "unrelated",
            "messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": code}],
        },
    ]
    v = curate.save(rows, name="ifd-real", store=tmp_path / "store")
    sel = IFDSelector().fit(v)
    s = sel.scores_
    assert s[0] < 0.1 and s[0] < s[1] < 0.5 and 0.8 < s[2] < 1.0
    assert sel.loss_alone_[0] == sel.loss_alone_[2]  # the same answer with the question emptied: one cached row
    assert sel.select().order.tolist() == [2, 1, 0]  # all in the band, the hardest first
