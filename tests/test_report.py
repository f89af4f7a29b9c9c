"""`curate report`: one self-contained page per kind of version, opened in headless Chromium; a compare version's
page (its Comparison table, per-arm intervals, metric vs trained tokens)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import curate
from curate.comparison import Run, summarise, verdict
from curate.report import (
    decisions_by_unit,
    dominated,
    flatten,
    kv_table,
    plots_for,
    reason_counts,
    render,
    write_report,
)
from curate.store import Store
from tests.cli_helpers import run_cli

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Appended to a copy of the page only: the page itself has no script. It records, after load, whether each
# <img> decoded (a broken data URI gives naturalWidth 0).
PROBE = (
    "<script>window.addEventListener('load',()=>{document.body.setAttribute('data-images',JSON.stringify("
    "[...document.images].map(i=>i.complete&&i.naturalWidth>0)));});</script>"
)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed here when missing (CI machines start without it)."""
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=600, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env, timeout=900, capture_output=True
        )
        path = shutil.which("chromium")
    assert path, "chromium is not installed and could not be installed (apt-get install chromium)"
    return path


def images_loaded(chromium: str, page: Path) -> list[bool]:
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                probe.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    m = re.search(r'data-images="([^"]*)"', dom)
    assert m, f"the page did not finish loading in chromium: {dom[:300]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


def _rollouts(store):
    rows = []
    for p, rewards in enumerate([[1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0], [0.2, 0.9, 0.4, 1.0]]):
        for s, r in enumerate(rewards):
            rows.append(
                {
                    "id": f"p{p}-{s}",
                    "prompt_id": f"p{p}",
                    "sample": s,
                    "completion": f"c{s}",
                    "reward": float(r),
                    "prompt": [{"role": "user", "content": f"q{p}"}],
                    "answer": "1",
                }
            )
    return curate.save(rows, name="rollouts", store=store)


def versions_of_each_kind(store, tiny_model_path) -> dict[str, object]:
    sft = curate.save(
        [
            {
                "id": f"r{i}",
                "messages": [
                    {"role": "user", "content": f"Say {i} twice."},
                    {"role": "assistant", "content": f"{i} {i} " * (1 + i % 4)},
                ],
            }
            for i in range(12)
        ],
        name="sft",
        store=store,
    )
    out = {"fisher": curate.select(sft.ref, method="fisher", budget=4, model=tiny_model_path, name="f", store=store)}
    roll = _rollouts(store)
    out["variance"] = curate.select(roll.ref, method="variance", keep_per_prompt=2, name="v", store=store)
    out["difficulty"] = curate.select(roll.ref, method="difficulty", stages=2, name="d", store=store)
    out["token-clean"] = curate.select(
        sft.ref,
        method="token-clean",
        base=tiny_model_path,
        reference=tiny_model_path,
        keep=0.6,
        random=True,
        name="t",
        store=store,
    )
    condor_rows = [
        {
            "id": f"c{i}",
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            "task": ["Daily Chat", "Creation"][i % 2],
            "difficulty": ["easy", "medium", "hard"][i % 3],
        }
        for i in range(6)
    ]
    decisions = pa.table(
        {
            "id": [f"c{i}" for i in range(8)],
            "score": [1.0] * 6 + [0.0] * 2,
            "kept": [True] * 6 + [False] * 2,
            "reason": [""] * 6 + ["near_duplicate", "empty_answer"],
        }
    )
    from curate.records import to_table

    out["condor"] = store.commit(
        to_table(condor_rows), name="condor", op={"name": "synth", "method": "condor"}, decisions=decisions
    )
    return out


EXPECTED = {  # captions that must appear for each kind
    "fisher": ["Score distribution, kept vs dropped", "Decisions: kept and drop reasons", "FisherSFT gain"],
    "variance": ["Decisions: kept and drop reasons", "Reward histogram", "Advantage over the kept subset"],
    "difficulty": ["Pass-rate histogram", "Curriculum stages"],
    "token-clean": ["Kept-token share per row"],
    "condor": ["Rows per task", "Rows per difficulty", "Decisions: kept and drop reasons"],
}


def test_each_kind_renders_its_plots_in_chromium(store, tiny_model_path, tmp_path, chromium):
    for kind, version in versions_of_each_kind(store, tiny_model_path).items():
        captions = [c for c, _ in plots_for(version)]
        for expected in EXPECTED[kind]:
            assert any(c.startswith(expected) for c in captions), (kind, expected, captions)
        page = write_report(version.ref, tmp_path / f"{kind}.html", store=store)
        text = page.read_text()
        assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
        assert version.id in text and "Lineage" in text
        loaded = images_loaded(chromium, page)
        assert len(loaded) == len(captions) >= len(EXPECTED[kind]) and all(loaded), (kind, loaded)


def test_probe_detects_a_broken_image(tmp_path, chromium):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><img src='data:image/png;base64,AAAA'></body></html>")
    assert images_loaded(chromium, page) == [False]


# ---------------------------------------------------------------------------------------------------- compare pages


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_model_path):
    """A real ``curate compare`` on the tiny model: a deterministic arm, random and base, two seeds each."""
    import torch

    store = Store(tmp_path_factory.mktemp("cmp") / "store")
    curate.sample("sample-sft", n=10, name="pool", store=store)
    curate.sample("sample-sft", n=3, seed=7, name="heldout", store=store)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture: a tiny model's ops only slow down across threads
    try:
        # one optimizer step of 2 rows of at most 96 tokens: the page, not the training, is under test
        small = {"epochs": 1, "max_steps": 1, "batch_size": 2, "max_len": 96}
        v = curate.compare(
            "pool",
            name="cmp",
            store=store,
            model=tiny_model_path,
            eval_ref="heldout",
            arms=("length", "random", "base"),
            budget=3,
            seeds=2,
            **small,
        )
    finally:
        torch.set_num_threads(threads)
    return store, v


def _interval(lo_mean_hi: tuple[float, float, float]) -> str:
    mean, lo, hi = lo_mean_hi
    return f"{mean:#.4g} [{lo:#.4g}, {hi:#.4g}]"


def _images(text: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r"src='data:image/png;base64,([^']+)'", text):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        img = Image.open(io.BytesIO(raw))
        img.load()  # decodes every pixel: a truncated PNG fails here
        out.append(img)
    return out


def _overlaps(a: dict, b: dict) -> bool:
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def test_compare_page_shows_the_summary_table_and_its_plots(compared, tmp_path):
    store, v = compared
    text = write_report(v.ref, tmp_path / "cmp.html", store=store).read_text()
    summary = v.manifest["stats"]["summary"]
    runs = v.to_pylist()
    assert [s["arm"] for s in summary] == ["length", "random", "base"]
    assert text.index("<h2>Comparison</h2>") < text.index("<h2>Plots</h2>")
    assert "held-out NLL (<code>heldout_loss</code>): lower is better." in text
    rand = summary[1]
    for s in summary:
        arm_runs = [r for r in runs if r["arm"] == s["arm"]]
        d = s.get("vs_random")
        diff = _interval((d["diff"], d["ci_low"], d["ci_high"])) if d else ""
        overlap = "" if s is rand else "overlaps" if _overlaps(s, rand) else "no overlap"
        tokens = np.mean([r["trained_tokens"] for r in arm_runs])
        rows = np.mean([r["rows"] for r in arm_runs])
        # wall seconds per run: selection, training and scoring, whichever the compare recorded
        wall = np.mean([sum(r[c] or 0.0 for c in ("select_s", "train_s", "score_s")) for r in arm_runs])
        expected = (
            f"<tr><td>held-out NLL</td><td>{s['arm']}</td><td>{_interval((s['mean'], s['ci_low'], s['ci_high']))}"
            f"</td><td>{diff}</td><td>{verdict(s)}</td><td>{overlap}</td><td>2</td><td>{tokens:,.0f}</td>"
            f"<td>{rows:,.1f}</td><td>{wall:,.1f}</td></tr>"
        )
        assert expected in text, (expected, text[text.index("<h2>Comparison") :][:3000])
    # the untrained base model is worse than one trained on rows like the held-out ones, by a paired interval that
    # excludes 0, while its own interval (wide: 3 held-out rows) overlaps random's, and so does length's
    assert verdict(summary[2]) == "worse than random" and summary[2]["vs_random"]["ci_low"] > 0
    assert [s["arm"] for s in summary if s is not rand and _overlaps(s, rand)] == ["length", "base"]
    assert "Held-out NLL: the 95% intervals of length and base overlap random's." in text
    captions = [c for c, _ in plots_for(v)]
    assert captions == ["Per-arm held-out NLL with 95% intervals", "Held-out NLL vs trained tokens, one point per run"]
    for caption in captions:
        assert f"<figcaption>{caption}</figcaption>" in text
    assert [img.format for img in _images(text)] == ["PNG", "PNG"]
    # the rows table shows every run and none of the per-held-out-row lists
    rows_table = text[text.index("<h2>Rows</h2>") :]
    for name in ("row_sums", "row_counts", "row_rewards"):
        assert name not in text
    assert "<th>heldout_loss</th>" in rows_table and "<th>trained_tokens</th>" in rows_table
    assert [f"<td class='cell'>{r['id']}</td>" in rows_table for r in runs] == [True] * 6


def test_compare_page_via_the_cli_and_in_chromium(compared, tmp_path, chromium):
    store, v = compared
    page = tmp_path / "cli.html"
    p = run_cli(store.root, "report", "cmp", "--out", str(page))
    assert p.returncode == 0, p.stderr
    text = page.read_text()
    assert v.id in text and "<h2>Comparison</h2>" in text and "http://" not in text and "https://" not in text
    assert images_loaded(chromium, page) == [True, True]


def _rl_version(store: Store):
    """An RL-shaped compare version (no NLL, held-out reward, no trained tokens) with its summary from the runs."""
    rewards = {"difficulty": [1.0, 1.0, 1.0, 1.0], "random": [0.0, 0.0, 0.0, 0.0], "base": [0.0, 0.0, 0.0, 0.0]}
    runs = [
        Run(arm=a, seed=s, selection=None, trained_tokens=0, sums=None, counts=None, rewards=np.array(r))
        for a, r in rewards.items()
        for s in (0, 1)
    ]
    times = {  # select_s, train_s, score_s per run; None where not recorded
        "difficulty": [(1.0, 2.0, 3.0), (None, 4.0, None)],
        "random": [(None, None, None), (None, None, None)],
        "base": [(0.5, None, 0.5), (0.5, None, 0.5)],
    }
    t = [times[r.arm][r.seed] for r in runs]
    table = pa.table(
        {
            "id": [f"{r.arm}/{r.seed}" for r in runs],
            "arm": [r.arm for r in runs],
            "seed": pa.array([r.seed for r in runs], pa.int64()),
            "selection": pa.array([None] * 6, pa.string()),
            "rows": pa.array([2, 2, 2, 2, 0, 0], pa.int64()),
            "trained_tokens": pa.array([0] * 6, pa.int64()),
            "heldout_loss": pa.array([None] * 6, pa.float64()),
            "accuracy": pa.array([None] * 6, pa.float64()),
            "heldout_reward": pa.array([r.heldout_reward for r in runs], pa.float64()),
            "select_s": pa.array([x[0] for x in t], pa.float64()),
            "train_s": pa.array([x[1] for x in t], pa.float64()),
            "score_s": pa.array([x[2] for x in t], pa.float64()),
            "row_sums": pa.array([None] * 6, pa.list_(pa.float64())),
            "row_counts": pa.array([None] * 6, pa.list_(pa.int64())),
            "row_rewards": pa.array([r.rewards.tolist() for r in runs], pa.list_(pa.float64())),
        }
    )
    summary = summarise(runs, rl=True, n_boot=200)
    return store.commit(table, name="rl-cmp", op={"name": "test-rl-compare"}, stats={"summary": summary})


def test_rl_compare_page_has_no_tokens_plot(store):
    v = _rl_version(store)
    assert [c for c, _ in plots_for(v)] == ["Per-arm held-out reward with 95% intervals"]
    text = render(v, store=store)
    assert "held-out reward (<code>heldout_reward</code>): higher is better." in text
    # rewards identical across rows and seeds: every interval collapses onto the mean
    assert (
        "<tr><td>held-out reward</td><td>difficulty</td><td>1.000 [1.000, 1.000]</td><td>1.000 [1.000, 1.000]</td>"
        "<td>beats random</td><td>no overlap</td><td>2</td><td>0</td><td>2.0</td><td>5.0</td></tr>"
    ) in text  # wall seconds: (1 + 2 + 3 and 4) / 2 runs
    assert (
        "<tr><td>held-out reward</td><td>random</td><td>0.000 [0.000, 0.000]</td><td></td><td></td><td></td><td>2</td>"
        "<td>0</td><td>2.0</td><td>not recorded</td></tr>"
    ) in text
    assert (
        "<tr><td>held-out reward</td><td>base</td><td>0.000 [0.000, 0.000]</td><td>0.000 [0.000, 0.000]</td>"
        "<td>no clear difference</td><td>overlaps</td><td>2</td><td>0</td><td>0.0</td><td>1.0</td></tr>"
    ) in text
    assert "Held-out reward: the 95% interval of base overlaps random's." in text
    assert "row_rewards" not in text and len(_images(text)) == 1


def test_only_a_version_with_the_compare_columns_and_a_summary_gets_the_comparison(store):
    rows = [{"id": f"r{i}", "arm": "random", "seed": i, "trained_tokens": 10} for i in range(2)]
    v = curate.save(rows, name="looks-like-compare", store=store)  # no summary in its stats
    text = render(v, store=store)
    assert "<h2>Comparison</h2>" not in text and plots_for(v) == []


# ---------------------------------------------------------------------------------------- one unit, tables, scales


def _toy_rollouts(store, rewards: list[list[float]], name: str = "toy-rollouts"):
    rows = [
        {
            "id": f"p{p}-{s}",
            "prompt_id": f"p{p}",
            "sample": s,
            "completion": f"c{s}",
            "reward": float(r),
            "prompt": [{"role": "user", "content": f"q{p}"}],
            "answer": "1",
        }
        for p, rs in enumerate(rewards)
        for s, r in enumerate(rs)
    ]
    return curate.save(rows, name=name, store=store)


def test_curriculum_stats_and_plots_count_prompts(store):
    # 5 prompts x 4 rollouts; pass rates 0, .25, .5, .75, 1: p0 too hard, p4 too easy, 3 prompts kept
    roll = _toy_rollouts(store, [[float(s < p) for s in range(4)] for p in range(5)])
    v = curate.select(roll.ref, method="difficulty", stages=2, name="cur", store=store)
    stats = v.manifest["stats"]
    assert (stats["kept"], stats["dropped"]) == (3, 2)
    unit, d = decisions_by_unit(v)
    assert unit == "prompts" and d["prompt_id"] == ["p0", "p1", "p2", "p3", "p4"]
    assert reason_counts(d["reason"], d["kept"]) == {"kept": 3, "too_easy": 1, "too_hard": 1}
    captions = [c for c, _ in plots_for(v)]
    assert captions[:2] == [
        "Score distribution, kept vs dropped (prompts)",
        "Decisions: kept and drop reasons (prompts)",
    ]
    text = render(v, store=store)
    assert (
        "kept and dropped count prompts (20 decision rows, one per rollout), as the decisions plots do: 3 kept, 2"
        in text
    )
    # stats as a key / value table with dotted keys, not JSON
    assert "<td class='key'>reasons.too_hard</td><td class='cell'>1</td>" in text
    assert "<td class='key'>stage_sizes</td><td class='cell'>2, 1</td>" in text
    assert "&quot;kept&quot;" not in text and "<pre>" not in text
    # a row-level selector on the same rollouts counts rows in both places (zero-variance p0 and p4 drop whole)
    pods = curate.select(roll.ref, method="variance", keep_per_prompt=2, name="pods", store=store)
    unit, d = decisions_by_unit(pods)
    assert unit == "rows" and len(d["kept"]) == 20 and sum(d["kept"]) == pods.manifest["stats"]["kept"] == 6
    assert "kept and dropped count rows, as the decisions plots do: 6 kept, 14 dropped." in render(pods, store=store)


def test_lineage_shows_the_rollout_settings_that_ran(store, tiny_model_path):
    prompts = curate.save(
        [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"{i}+1?"}], "answer": str(i + 1)} for i in range(3)],
        name="qs",
        store=store,
    )
    # n=2, max_tokens=3: not the defaults (8, 256), and enough to tell them apart on the page
    roll = curate.rollout(prompts.ref, n=2, max_tokens=3, model=tiny_model_path, name="r", store=store)
    v = curate.select(roll.ref, method="difficulty", band=(0.0, 1.0), name="cur", store=store)
    text = render(v, store=store)
    lineage = text[text.index("<h2>Lineage</h2>") : text.index("<h2>Rows</h2>")]
    assert "<td class='key'>config.n</td><td class='cell'>2</td>" in lineage
    assert "<td class='key'>config.max_tokens</td><td class='cell'>3</td>" in lineage
    assert (
        "<td class='key'>params.{n,model,backend,temperature,max_tokens,reward,base_url,seed}</td>"
        "<td class='cell'>not used: the rollouts came from r@v1, whose row shows them</td>"
    ) in lineage
    assert ">256<" not in lineage and "<td class='key'>params.n</td>" not in lineage
    assert "<td class='key'>params.band</td><td class='cell'>0.0, 1.0</td>" in lineage


def test_histograms_switch_to_a_log_scale_when_one_value_dominates(store):
    assert dominated(np.array([0.0] * 9 + [1.0])) is True  # 90% in one bin
    assert dominated(np.array([0.0] * 5 + [1.0] * 5)) is False  # 50%: not more than half
    assert dominated(np.array([1.0] * 4)) is False  # one bar: nothing for a log axis to show
    mostly_zero = _toy_rollouts(store, [[0.0, 0.0, 0.0, 0.0]] * 4 + [[0.0, 1.0, 0.3, 0.0]], name="zeros")
    spread = _toy_rollouts(store, [[0.0, 0.25, 0.5, 0.75]] * 2 + [[1.0, 0.1, 0.6, 0.9]], name="spread")
    assert "Reward histogram (log count scale)" in [c for c, _ in plots_for(mostly_zero)]
    assert "Reward histogram" in [c for c, _ in plots_for(spread)]


def test_kept_rows_are_labelled_kept(store):
    from curate.records import to_table

    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": "q"}]} for i in range(4)]
    decisions = pa.table(
        {
            "id": ["r0", "r1", "r2", "r3", "r4"],
            "score": [1.0, 1.0, 0.5, 0.0, 0.0],
            "kept": [True, True, True, False, False],
            # a kept row whose reason says something, and a dropped row that gives none
            "reason": ["", None, "note:x", "", "empty_answer"],
        }
    )
    v = store.commit(to_table(rows), name="k", op={"name": "test-kept"}, decisions=decisions)
    unit, d = decisions_by_unit(v)
    assert unit == "rows"
    assert reason_counts(d["reason"], d["kept"]) == {"dropped (no reason)": 1, "empty_answer": 1, "kept": 3}
    assert reason_counts(["", None, "dup:a"]) == {"dup": 1, "kept": 2}


def test_flatten_and_kv_table():
    assert flatten({"a": {"b": {"c": 1}, "d": []}, "e": {}}) == [("a.b.c", 1), ("a.d", []), ("e", {})]
    table = kv_table({"config": {"n": 4, "tags": ["x", "y"], "base_url": None}, "ratio": 0.123456789})
    assert table == (
        "<table class='kv'><tr><th>key</th><th>value</th></tr>"
        "<tr><td class='key'>config.n</td><td class='cell'>4</td></tr>"
        "<tr><td class='key'>config.tags</td><td class='cell'>x, y</td></tr>"
        "<tr><td class='key'>config.base_url</td><td class='cell'>none</td></tr>"
        "<tr><td class='key'>ratio</td><td class='cell'>0.123457</td></tr></table>"
    )
