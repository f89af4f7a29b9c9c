"""Rollout generation speed: the ``hf`` backend's batched, length-sorted, left-padded generation against calling
``model.generate`` on one prompt at a time, on the same sample-math prompts with the embedded SmolLM2-135M.

Both sides decode greedily (temperature 0) so they produce the same completions and comparable token counts;
tokens are counted up to and including the end-of-turn token. Prints tokens/s for each and the ratio.

    python benchmarks/rollout.py            # 16 prompts, 48 new tokens
    python benchmarks/rollout.py --quick    # 6 prompts, 24 new tokens
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 prompts, 24 new tokens")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 6, 24

    import torch

    from curate.chat import prompt_ids
    from curate.generation import HFGenerator, Sampling
    from curate.models import load_causal_lm
    from curate.ops import sample

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = [r["prompt"] for r in sample("sample-math", n=args.prompts, store=tmp).to_pylist()]
    model, tok = load_causal_lm(args.model)
    eos = tok.eos_token_id
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    gen = HFGenerator(args.model, batch_size=args.batch_size)
    gen.generate(prompts[:1], n=1, sampling=Sampling(temperature=0.0, max_tokens=2))  # warm-up: load, first kernels

    t0 = time.perf_counter()
    batched = gen.generate(prompts, n=1, sampling=sampling)
    t_batched = time.perf_counter() - t0
    tokens_batched = sum(o[0].tokens for o in batched)

    t0 = time.perf_counter()
    tokens_single, texts_single = 0, []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([prompt_ids(tok, p)])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
            )
            new = out[0, ids.shape[1] :].tolist()
            new = new[: new.index(eos) + 1] if eos in new else new
            tokens_single += len(new)
            texts_single.append(tok.decode(new, skip_special_tokens=True))
    t_single = time.perf_counter() - t0

    same = sum(a[0].text == b for a, b in zip(batched, texts_single, strict=True))
    rate_b, rate_s = tokens_batched / t_batched, tokens_single / t_single
    print(
        f"model {args.model}, {len(prompts)} sample-math prompts, greedy, max {args.max_tokens} new tokens, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"one at a time   : {tokens_single:5d} tokens in {t_single:7.2f} s = {rate_s:7.1f} tokens/s")
    print(
        f"hf batched (bs={args.batch_size:<3d}): {tokens_batched:5d} tokens in {t_batched:7.2f} s = {rate_b:7.1f} "
        "tokens/s"
    )
    print(f"identical completions: {same}/{len(prompts)}")
    print(f"speed-up (tokens/s ratio, batched / one at a time): {rate_b / rate_s:.2f}x")


if __name__ == "__main__":
    main()
