"""Token Cleaning speed: per-token losses from `curate.scoring.token_losses` against the reference code's loop.

The reference code (UCSC-REAL/TokenCleaning `scripts/calculate_token_loss.py`) pads every row to max_seq_len
(2048) and takes `CrossEntropyLoss(reduction='none')` over the full logits. The plain side here does the same
one row at a time, padded to a fixed 512 tokens (2048 would be 4x slower still on this CPU; rows longer than
512 are cut, as the reference cuts at its max length). `token_losses` runs length-sorted batches without fixed
padding, runs the LM head only on positions with a target, in chunks, keeping only the target's log-prob. Both
use the embedded `smollm2-135m` (fp32, CPU) on `sample-sft` rows in a fresh temp store, so nothing comes from
the cache; the losses are asserted equal (on the positions both computed). Tokens/s counts real (unpadded)
tokens scored; the speed-up is also given in CPU seconds, steadier than wall seconds when other jobs share the
machine. The last column is a second `token_losses` call: every row a cache hit.

`token_losses` runs at `batch_tokens=4096` (its GPU default) and 1024 (its CPU default): on a CPU a bigger
batch computes no faster per position, and with few rows of very different lengths a 4096-token batch packs
short rows with a long one (24 sample-sft rows: 6,153 positions for 3,541 tokens at 4096, 4,223 at 1024). On a
GPU, or on a large dataset where neighbours in length order have similar lengths, the larger batch costs little
padding.

Threads: 1 by default (`--threads`): on this shared 2-core machine another job holding a core made a 2-thread
forward ~10x slower than a 1-thread one; both sides always use the same setting.

    python benchmarks/token_clean.py            # 24 rows, ~1 min on 2 CPU cores
    python benchmarks/token_clean.py --quick    # 8 rows
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CURATE_QUIET", "1")

from _util import table  # noqa: E402


def plain_losses(model, ids: list[int], pad_to: int, pad_id: int) -> np.ndarray:
    """The reference code's per-row computation: pad to ``pad_to``, full logits, realign with ``[0] + loss``."""
    import torch

    n = min(len(ids), pad_to)
    x = torch.full((1, pad_to), pad_id, dtype=torch.long)
    x[0, :n] = torch.tensor(ids[:n])
    attn = torch.zeros((1, pad_to), dtype=torch.long)
    attn[0, :n] = 1
    labels = x.clone()
    labels[0, n:] = -100
    with torch.inference_mode():
        logits = model(input_ids=x, attention_mask=attn).logits
        loss = torch.nn.CrossEntropyLoss(reduction="none")(logits[0, :-1].float(), labels[0, 1:])
    return np.concatenate([[0.0], loss[: n - 1].numpy()]).astype(np.float32)


def bench(n_rows: int, pad_to: int, batch_tokens: list[int]) -> list[list]:
    import curate.ops as api
    from curate.chat import assistant_token_mask
    from curate.models import load_causal_lm
    from curate.scoring import token_losses

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        v = api.sample("sample-sft", n=n_rows, store=Path(tmp) / "store")
        rows = v.to_pylist()
        model, tok = load_causal_lm("smollm2-135m")  # load once, outside every timing
        encoded = [assistant_token_mask(tok, r["messages"])[0] for r in rows]
        lengths = [len(ids) for ids in encoded]
        plain_tokens, tokens = sum(min(n, pad_to) for n in lengths), sum(lengths)

        w0, c0 = time.perf_counter(), time.process_time()
        plain = [plain_losses(model, ids, pad_to, tok.pad_token_id) for ids in encoded]
        plain_s, plain_cpu = time.perf_counter() - w0, time.process_time() - c0

        for bt in batch_tokens:
            store = Path(tmp) / f"cache-{bt}"  # a fresh cache per setting: every row is computed
            stats: dict = {}
            w0, c0 = time.perf_counter(), time.process_time()
            batched = token_losses(rows, model="smollm2-135m", store=store, batch_tokens=bt, stats=stats)
            batched_s, batched_cpu = time.perf_counter() - w0, time.process_time() - c0
            assert stats == {"computed": n_rows, "cached": 0}, stats
            for a, b in zip(batched, plain, strict=True):
                np.testing.assert_allclose(a[: len(b)], b, rtol=1e-3, atol=1e-3)

            again: dict = {}
            w0 = time.perf_counter()
            token_losses(rows, model="smollm2-135m", store=store, batch_tokens=bt, stats=again)
            cached_s = time.perf_counter() - w0
            assert again == {"computed": 0, "cached": n_rows}, again
            out.append(
                [
                    n_rows,
                    tokens,
                    f"{min(lengths)}..{max(lengths)}",
                    pad_to,
                    plain_tokens / plain_s,
                    bt,
                    tokens / batched_s,
                    f"{(tokens / batched_s) / (plain_tokens / plain_s):.2f}x",
                    f"{(tokens / batched_cpu) / (plain_tokens / plain_cpu):.2f}x",
                    cached_s,
                ]
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 rows")
    ap.add_argument("--rows", type=int, default=None, help="sample-sft rows (default 24)")
    ap.add_argument("--pad-to", type=int, default=512, help="fixed length of the plain loop (reference code: 2048)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both sides")
    ap.add_argument("--batch-tokens", type=int, nargs="+", default=[4096, 1024], help="token_losses batch sizes")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"cpu threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}")
    n_rows = args.rows or (8 if args.quick else 24)
    print("per-token losses, smollm2-135m fp32 on CPU (same losses asserted)")
    print(
        table(
            [
                "rows",
                "tokens",
                "row lengths",
                "plain pad-to",
                "plain tok/s",
                "batch tokens",
                "token_losses tok/s",
                "speed-up wall",
                "speed-up cpu",
                "cached re-run s",
            ],
            bench(n_rows, args.pad_to, args.batch_tokens),
        )
    )


if __name__ == "__main__":
    main()
