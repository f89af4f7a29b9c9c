"""Token Cleaning on planted noise: are the dropped tokens the corrupted ones?

The task: the user sends 16 letters from "abcdefgh", the assistant answers them reversed. A clean warm-up set
(64 rows) trains the reference (``reference_from``: 40 steps of ``curate.train.sft`` at lr 3e-3 on a tiny random
Llama, the base). In the pool (64 rows), half of the rows get one span of 6 answer characters replaced by random
printable characters (each differs from the clean one); with the byte-level tokenizer one character is one
token, so the corrupted token positions are known exactly.

The sign: score = loss_base - loss_ref and the top ``keep`` share is kept. The random base gives every token
about the same loss (~log 259 = 5.56); the reference learns what answers look like, so a clean token's loss
drops (high score, kept) and a corrupted token's loss rises (the reference moved probability away from it: low
score, dropped). Seed 0, mean over tokens: clean 5.51 (base) -> 2.48 (reference), score +3.0; corrupted
5.55 -> 6.69, score -1.1. (2.48 is close to log 8: in 40 steps the reference learns the answer alphabet, not the
reversal; that is enough here.) ``keep`` = 0.85 drops about as many tokens as are corrupted, so a method that
knew the answer would reach precision = recall = 1, and random dropping gets precision = the corrupted share.

Reported per method (global = the paper's ranking, sample = per row, random = the baseline, self-evolving = the
pool split in 3 parts, the first for warm-up, no clean data): precision and recall of "dropped = corrupted", and
seconds per run (the first method of a seed trains the reference; the others reuse it and the cached losses).

    python benchmarks/token_clean_noise.py            # 3 seeds, ~10 s on 2 CPU cores
    python benchmarks/token_clean_noise.py --quick    # 1 seed
"""

from __future__ import annotations

import argparse
import os
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATE_QUIET", "1")

from _util import table  # noqa: E402

ALPHABET = "abcdefgh"
PRINTABLE = string.ascii_letters + string.digits + string.punctuation
METHODS = ("global", "sample", "random", "self-evolving")


def clean_rows(n: int, rng: np.random.Generator, prefix: str, length: int = 16) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        word = "".join(rng.choice(list(ALPHABET), length))
        chat = [{"role": "user", "content": f"reverse {word}"}, {"role": "assistant", "content": word[::-1]}]
        rows.append({"id": f"{prefix}{i}", "messages": chat})
    return rows


def corrupt(
    rows: list[dict[str, Any]], rng: np.random.Generator, *, row_rate: float = 0.5, span: int = 6
) -> tuple[list[dict[str, Any]], list[set[int]]]:
    """Rows with corrupted answers and, per row, the corrupted character indices of the answer."""
    out, where = [], []
    for r in rows:
        answer = r["messages"][1]["content"]
        bad: set[int] = set()
        if rng.random() < row_rate:
            start = int(rng.integers(0, len(answer) - span + 1))
            chars = list(answer)
            for j in range(start, start + span):
                chars[j] = str(rng.choice([c for c in PRINTABLE if c != answer[j]]))
                bad.add(j)
            answer = "".join(chars)
        out.append({"id": r["id"], "messages": [r["messages"][0], {"role": "assistant", "content": answer}]})
        where.append(bad)
    return out, where


def corrupted_positions(tokenizer: Any, rows: list[dict[str, Any]], where: list[set[int]]) -> list[np.ndarray]:
    """Per row: the response token positions and, aligned, whether each is corrupted: shape (n, 2), int64."""
    from curate.chat import assistant_token_mask

    out = []
    for r, bad in zip(rows, where, strict=True):
        ids, mask = assistant_token_mask(tokenizer, r["messages"])
        pos = [t for t in range(1, len(ids)) if mask[t]]
        answer = r["messages"][1]["content"]
        # One byte-level token per ASCII character, then the end-of-turn token: response token k is character k.
        assert tokenizer.decode([ids[t] for t in pos]) == answer + tokenizer.eos_token, "not one token per char"
        out.append(np.array([[t, k in bad] for k, t in enumerate(pos)], dtype=np.int64).reshape(-1, 2))
    return out


def precision_recall(version: Any, truth: list[np.ndarray]) -> tuple[float, float, float]:
    """(precision, recall, dropped share) of "dropped response token = corrupted token" over the version."""
    hit = dropped = n_bad = n_resp = 0
    for labels, t in zip(version.to_arrow(["labels"]).column("labels").to_pylist(), truth, strict=True):
        is_dropped = np.asarray(labels)[t[:, 0]] == -100
        bad = t[:, 1].astype(bool)
        hit += int((is_dropped & bad).sum())
        dropped += int(is_dropped.sum())
        n_bad += int(bad.sum())
        n_resp += len(t)
    precision = hit / dropped if dropped else float("nan")
    return precision, hit / n_bad if n_bad else float("nan"), dropped / n_resp


def run(
    seeds: list[int],
    *,
    n_warmup: int = 64,
    n_pool: int = 64,
    keep: float = 0.85,
    ref_steps: int = 40,
    ref_lr: float = 3e-3,
    methods: tuple[str, ...] = METHODS,
) -> list[dict[str, Any]]:
    """One result dict per (seed, method): precision, recall, dropped share, corrupted share, seconds."""
    import torch

    import curate.ops as api
    import curate.train
    from curate.models import load_tokenizer
    from curate.selectors.token_clean import TokenCleanSelector
    from curate.testing import save_tiny_model

    results = []
    threads = torch.get_num_threads()
    # A tiny model's ops are far too small to split across threads; one thread avoids the OpenMP barrier cost.
    torch.set_num_threads(1)
    try:
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                store = api.get_store(Path(tmp) / "store")
                base = str(save_tiny_model(Path(tmp) / "base", seed=seed))
                rng = np.random.default_rng(seed)
                warm = api.save(clean_rows(n_warmup, rng, "w"), name="warmup", store=store)
                pool_rows, where = corrupt(clean_rows(n_pool, rng, "p"), rng)
                pool = api.save(pool_rows, name="pool", store=store)
                truth = corrupted_positions(load_tokenizer(base), pool_rows, where)
                bad_share = sum(int(t[:, 1].sum()) for t in truth) / sum(len(t) for t in truth)
                common = {"base": base, "keep": keep, "ref_steps": ref_steps, "ref_lr": ref_lr, "seed": seed}
                for method in methods:
                    if method == "self-evolving":
                        params = {**common, "mode": "self-evolving", "rounds": 2}
                    elif method == "random":
                        params = {**common, "random": True}
                    else:
                        params = {**common, "reference_from": warm.ref, "scope": method}
                    t0 = time.perf_counter()
                    sel = TokenCleanSelector(**params).bind(train_sft=curate.train.sft)
                    extra = [store.load(p) for p in sel.extra_parents()]
                    sel.fit(pool)
                    selection = sel.select()
                    out = store.commit(
                        sel.transform(pool.to_arrow(), selection),
                        name=f"pool-{method}",
                        parents=[pool, *extra],
                        op={"name": "select", "method": "token-clean", "params": sel.get_params()},
                    )
                    p, r, share = precision_recall(out, truth)
                    results.append(
                        {
                            "seed": seed,
                            "method": method,
                            "precision": p,
                            "recall": r,
                            "dropped_share": share,
                            "corrupted_share": bad_share,
                            "seconds": time.perf_counter() - t0,
                        }
                    )
    finally:
        torch.set_num_threads(threads)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    seeds = [0] if args.quick else list(range(args.seeds))
    res = run(seeds)
    rows = []
    for method in METHODS:
        rs = [r for r in res if r["method"] == method]
        rows.append(
            [
                method,
                len(rs),
                float(np.mean([r["precision"] for r in rs])),
                float(np.mean([r["recall"] for r in rs])),
                float(np.mean([r["dropped_share"] for r in rs])),
                float(np.mean([r["corrupted_share"] for r in rs])),
                float(np.mean([r["seconds"] for r in rs])),
            ]
        )
    print("dropped = corrupted? (mean over seeds; random dropping: precision = corrupted share)")
    print(table(["method", "seeds", "precision", "recall", "dropped share", "corrupted share", "s per run"], rows))


if __name__ == "__main__":
    main()
