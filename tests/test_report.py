"""`curate report`: one self-contained page per kind of version, opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest

import curate
from curate.report import plots_for, write_report

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
