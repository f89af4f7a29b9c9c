"""GPU check: curate's heavy paths on one CUDA device, each figure printed on its own line, in a few minutes.

Steps, each through curate's own Python API, each independent (a failing step prints ``FAIL`` and the rest run):

1. ``sft``: bf16 SFT steps (``curate.train.sft``, ``precision=bf16``): training tokens/s and peak GPU memory.
2. ``grpo``: GRPO steps (``curate.train.grpo``: sampling with ``generate``, rewards, the clipped update): seconds per
   step and peak GPU memory.
3. ``rollouts``: ``curate.rollouts.rollout`` with the vLLM backend (when ``vllm`` imports) and with the hf backend
   on the same device: completion tokens/s.
4. ``features``: FisherSFT features (``curate.scoring.extract_features``): rows/s and tokens/s.
5. ``greedy``: FisherSFT's lazy greedy (``curate.selectors.fisher.greedy_logdet``) on CUDA: seconds, and whether
   its picks equal the CPU greedy's on a small case.
6. ``greedy_realistic``: the lazy greedy against curate's plain greedy (``plain_greedy_logdet``: every gain
   recomputed in float64 at every step), both on the device, on #19's realistic synthetic size (N=2000 examples of
   50-300 tokens, d=576, k=100; the plain greedy runs its first steps and is extrapolated, its picks asserted equal).

Output lines: ``<step>.<figure> = <value> <unit>``, ``SKIP <step>: <why>``, ``FAIL <step>: <error>``. Exit status:
0 when every step that ran passed, 1 when one failed, 2 when there is no CUDA device (nothing ran).

``--cpu-smoke`` runs the same steps on the CPU in fp32 at tiny sizes with a tiny random model (vLLM is skipped),
so the script itself is tested where there is no GPU (``tests/test_gpu_check.py``); its figures mean nothing.
The machine needs nothing from the network: the model is the embedded SmolLM2-135M GGUF (or ``--model``), the
data curate's built-in samples.

Measured 2026-11-30 on one H200 (torch 2.11+cu130, transformers 5.24, the embedded SmolLM2-135M GGUF; 169 s in all):
sft 4,894 tok/s bf16 (30 steps of 16 x <=512, 9.8 GiB peak); grpo 11.9 s/step (4 prompts x 8 x 128 new tokens,
model load included, 6.5 GiB); rollouts_hf 1,945 tok/s (64 x 8 x <=128); vLLM not installed there (SKIP);
features 213 rows/s, 19,700 trained tok/s (model load included); greedy 3.1 s (1,024 rows, k=100, picks equal the
CPU's on 200 rows); greedy_realistic lazy 8.2 s vs plain 42.0 s on the device (5.2x; a rerun after the CPU-side
changes of that day: 8.2 s vs 37.3 s, 4.6x; the same lazy greedy takes ~80 s on this repo's 2-core CPU machine).

    bash benchmarks/gpu_check.sh                 # on a CUDA machine, ~3-5 minutes
    bash benchmarks/gpu_check.sh --cpu-smoke     # anywhere, < 2 minutes
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine reaches nothing: never wait on the hub
os.environ.setdefault("CURATE_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # _util, last: benchmark scripts never shadow a package


@dataclass
class Sizes:
    """How much each step does; ``gpu`` sizes fit a few minutes on one GPU, ``smoke`` a few seconds on a CPU."""

    sft_rows: int
    sft_steps: int
    sft_batch: int
    sft_max_len: int
    grpo_prompts: int
    grpo_steps: int
    grpo_n: int
    grpo_new_tokens: int
    rollout_prompts: int
    rollout_n: int
    rollout_tokens: int
    feature_rows: int
    greedy_k: int
    greedy_small_rows: int
    greedy_small_k: int
    realistic: tuple[int, int, int, int, int, int]  # N, min tokens, max tokens, d, k, plain greedy's steps


GPU = Sizes(512, 30, 16, 512, 16, 3, 8, 128, 64, 8, 128, 1024, 100, 200, 20, (2000, 50, 300, 576, 100, 20))
SMOKE = Sizes(16, 2, 4, 96, 4, 1, 2, 8, 4, 2, 8, 24, 6, 12, 4, (40, 5, 30, 32, 6, 3))


def figure(step: str, name: str, value: float, unit: str = "") -> None:
    print(f"{step}.{name} = {value:.4g} {unit}".rstrip(), flush=True)


def peak_gpu_gb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------------------------- steps
def check_sft(ctx: dict) -> None:
    import curate.train
    from curate.samples import sample_sft

    s, device = ctx["sizes"], ctx["device"]
    reset_peak(device)
    result = curate.train.sft(
        sample_sft(s.sft_rows),
        model=ctx["model"],
        max_steps=s.sft_steps,
        batch_size=s.sft_batch,
        max_len=s.sft_max_len,
        lr=1e-5,
        device=device,
        precision=ctx["precision"],
        out=str(ctx["work"] / "sft"),
    )
    figure("sft", "tokens_per_s", result.metrics["tokens_per_s"], "tok/s")
    figure("sft", "train_s", result.metrics["train_s"], "s")
    if (peak := peak_gpu_gb(device)) is not None:
        figure("sft", "peak_gpu_mem", peak, "GiB")


def check_grpo(ctx: dict) -> None:
    import curate.train
    from curate.samples import sample_math

    s, device = ctx["sizes"], ctx["device"]
    reset_peak(device)
    t0 = time.perf_counter()
    curate.train.grpo(
        sample_math(s.grpo_prompts),
        model=ctx["model"],
        reward="math",
        steps=s.grpo_steps,
        n=s.grpo_n,
        prompts_per_step=min(4, s.grpo_prompts),
        max_new_tokens=s.grpo_new_tokens,
        device=device,
        precision=ctx["precision"],
        out=str(ctx["work"] / "grpo"),
    )
    figure("grpo", "s_per_step", (time.perf_counter() - t0) / s.grpo_steps, "s (model load included)")
    if (peak := peak_gpu_gb(device)) is not None:
        figure("grpo", "peak_gpu_mem", peak, "GiB")


def _rollout(ctx: dict, backend: str, name: str, **generator_options) -> None:
    import curate
    from curate.generation import make_generator
    from curate.rollouts import rollout

    s = ctx["sizes"]
    reset_peak(ctx["device"])  # the trainers' cached blocks would count against vLLM's memory fraction
    t0 = time.perf_counter()
    version = rollout(
        "gpu-math",
        name=name,
        store=ctx["store"],
        model=ctx["model"],
        backend=backend,
        n=s.rollout_n,
        max_tokens=s.rollout_tokens,
        temperature=1.0,
        generator=make_generator(backend, ctx["model"], **generator_options) if generator_options else None,
    )
    seconds = time.perf_counter() - t0
    tokens = sum(curate.load(version.ref, store=ctx["store"]).to_arrow(["completion_tokens"]).column(0).to_pylist())
    figure(name, "tokens_per_s", tokens / seconds, f"tok/s ({tokens} tokens, model load included)")


def check_rollouts_vllm(ctx: dict) -> None:
    if ctx["smoke"]:
        raise Skip("--cpu-smoke: vLLM is timed on the GPU only")
    if importlib.util.find_spec("vllm") is None:
        raise Skip("vllm is not importable in this Python (pip install vllm)")
    # This process already holds the trainers' CUDA context; vLLM's default 0.9 of the device may not be free.
    _rollout(ctx, "vllm", "rollouts_vllm", gpu_memory_utilization=0.5)


def check_rollouts_hf(ctx: dict) -> None:
    _rollout(ctx, "hf", "rollouts_hf")


def check_features(ctx: dict) -> None:
    from curate.samples import sample_sft
    from curate.scoring import extract_features

    s = ctx["sizes"]
    rows = sample_sft(s.feature_rows)
    t0 = time.perf_counter()
    feats = extract_features(rows, model=ctx["model"])  # plain rows and no store: computed, never cached
    seconds = time.perf_counter() - t0
    figure("features", "rows_per_s", len(rows) / seconds, f"rows/s (d={feats[0].shape[1]}, model load included)")
    figure("features", "tokens_per_s", sum(len(f) for f in feats) / seconds, "trained tok/s")
    ctx["features"] = feats


def check_greedy(ctx: dict) -> None:
    import numpy as np

    from curate.selectors.fisher import greedy_logdet

    s, device = ctx["sizes"], ctx["device"]
    feats = ctx.get("features")
    if feats is None:
        raise Skip("needs the features step, which did not run")
    feats = [f for f in feats if len(f)]
    t0 = time.perf_counter()
    picks, _ = greedy_logdet(feats, s.greedy_k, device=device)
    figure("greedy", "seconds", time.perf_counter() - t0, f"s ({len(feats)} rows, k={len(picks)}, on {device})")
    small = feats[: s.greedy_small_rows]
    t0 = time.perf_counter()
    cpu_picks, _ = greedy_logdet(small, s.greedy_small_k, device="cpu")
    cpu_s = time.perf_counter() - t0
    dev_picks, _ = greedy_logdet(small, s.greedy_small_k, device=device)
    same = bool(np.array_equal(cpu_picks, dev_picks))
    figure("greedy", "small_cpu_seconds", cpu_s, f"s ({len(small)} rows, k={s.greedy_small_k})")
    print(f"greedy.picks_equal_cpu = {same}", flush=True)
    if not same:
        raise AssertionError(f"{device} picks {dev_picks.tolist()} != cpu picks {cpu_picks.tolist()}")


def check_greedy_realistic(ctx: dict) -> None:
    import numpy as np
    import torch
    from _util import make_features  # benchmarks/_util.py: the features of benchmarks/fisher_greedy.py

    from curate.selectors.fisher import greedy_logdet, plain_greedy_logdet

    n, lo, hi, d, k, steps = ctx["sizes"].realistic
    device = ctx["device"]
    feats = make_features(n, lo, hi, d)

    def timed(fn, kk):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(feats, kk, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out

    lazy_s, (picks, _) = timed(greedy_logdet, k)
    plain_s, (plain, _) = timed(plain_greedy_logdet, steps)
    plain_s *= k / steps
    size = f"N={n} x {lo}-{hi} tokens x d={d}, k={k}, on {device}"
    figure("greedy_realistic", "lazy_seconds", lazy_s, f"s ({size})")
    figure("greedy_realistic", "plain_seconds", plain_s, f"s ({steps} steps x {k / steps:.0f}, float64)")
    figure("greedy_realistic", "speedup", plain_s / lazy_s, "x")
    if not np.array_equal(picks[:steps], plain):
        raise AssertionError(f"lazy picks {picks[:steps].tolist()} != plain picks {plain.tolist()}")


STEPS = [
    ("sft", check_sft),
    ("grpo", check_grpo),
    ("rollouts_vllm", check_rollouts_vllm),
    ("rollouts_hf", check_rollouts_hf),
    ("features", check_features),
    ("greedy", check_greedy),
    ("greedy_realistic", check_greedy_realistic),
]


class Skip(Exception):
    """A step that cannot run here; its message says why."""


# ---------------------------------------------------------------------------------------------- driver
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, tiny random model, CPU, fp32")
    p.add_argument("--model", default=None, help="model for the GPU run (default: the embedded smollm2-135m)")
    p.add_argument("--only", nargs="*", choices=[name for name, _ in STEPS], help="run only these steps")
    args = p.parse_args()

    try:
        import torch

        import curate  # noqa: F401
    except ImportError as e:
        print(f"SKIP everything: {e} (run from the repository root with its dependencies installed)")
        return 2
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print(
            f"SKIP everything: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device; "
            "--cpu-smoke runs the same steps on the CPU"
        )
        return 2
    device = "cpu" if smoke else "cuda"
    where = "cpu (fp32, smoke sizes)" if smoke else f"{torch.cuda.get_device_name(0)} (bf16)"
    print(f"gpu_check: torch {torch.__version__}, {where}, python {sys.version.split()[0]}", flush=True)
    if smoke:
        torch.set_num_threads(1)  # tiny ops: threads only add barrier cost on a shared machine

    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        import curate
        from curate.samples import sample_math

        work = Path(tmp)
        model = args.model or "smollm2-135m"
        if smoke:
            from curate.testing import save_tiny_model

            model = str(save_tiny_model(work / "tiny-model"))
        store = curate.set_store(work / "store")
        sizes = SMOKE if smoke else GPU
        curate.save(sample_math(sizes.rollout_prompts), name="gpu-math", store=store)
        ctx = {
            "smoke": smoke,
            "device": device,
            "precision": "fp32" if smoke else "bf16",
            "model": model,
            "sizes": sizes,
            "work": work,
            "store": store,
        }
        for name, step in STEPS:
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            try:
                step(ctx)
            except Skip as why:
                print(f"SKIP {name}: {why}", flush=True)
                continue
            except Exception as e:  # report and go on: one broken path must not hide the others' figures
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}", flush=True)
                traceback.print_exc(file=sys.stderr)
                continue
            print(f"{name}.wall = {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"gpu_check: {'FAILED ' + str(failed) + ' step(s)' if failed else 'all steps that ran passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
