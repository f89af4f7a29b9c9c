"""SFT speed and peak memory: curate's compact trainer against TRL's ``SFTTrainer``, same model, rows and settings.

Both train from the same weights on the same GSM8K rows (prompt -> assistant answer, loss on the answer only), with
the same batch size, accumulation, learning rate, cosine-to-10% schedule without warm-up, AdamW defaults, gradient
clipping, gradient checkpointing setting, seed and thread count, each in a fresh subprocess, the two sides
interleaved ``--repeats`` times. Reported, each as min and median over the repeats:

- tokens/s: non-padding input tokens per second of the training loop (curate: the loop's own timer, excluding
  tokenisation, model loading and saving; TRL: ``train_runtime`` of ``trainer.train()``, with saving off), and the
  ratio curate / TRL (goal: >= 1.3);
- peak RSS: the worker process's high-water mark (``VmHWM``), imports, data, model, optimizer and training
  included, and the ratio curate / TRL (goal: <= 1);
- wall time of the whole call (curate ``sft()``; TRL trainer construction + train);
- both loss curves of the first repeat side by side. They are comparable, not identical: curate groups rows of
  similar length into a step, TRL shuffles, so steps see different rows in a different order.

Why the memory gap was there. TRL's ``SFTConfig`` turns gradient checkpointing on by default, curate's does not:
an earlier version of this benchmark compared curate without it (activations of every layer kept: +1.2 GB on
SmolLM2-135M at batch 4) against TRL with it. ``--grad-checkpointing`` now sets both sides alike (``both`` runs
each setting). At equal settings the remaining difference is the LM head: TRL materialises fp32 logits for every
position ([batch, length, 49k] plus the loss's copies), curate runs the head on trained positions only, a chunk
of targets at a time (``curate.train.data.target_nll``), so no vocab-sized tensor outlives a chunk.

Measured (``--quick`` with 16 rows, small model, checkpointing off, one thread per side, 3 repeats, on a 2-core
machine at load average 12-16, so the speed figures are noisy): peak RSS curate 1,079 / TRL 2,785 MB (0.39x min,
0.38x median); tokens/s curate / TRL 3.7x (best) 4.7x (median). SmolLM2-135M, one forward + backward of 4 GSM8K
rows (311 tokens, 776 trained), peak RSS above the loaded model: curate 3.0 GB without checkpointing, 1.75 GB with
it; ``model(labels=...)`` (the full-logits loss TRL uses) 3.25 GB and 1.74 GB. There the peak comes from the layers'
activations, not the head, so the 1.2 GB gap of the earlier comparison was the checkpointing default alone.

Models: ``small`` (the default: a random Llama of 4 layers, hidden 256, with SmolLM2's 49k-token tokenizer, so
sequence lengths and the LM head's share of compute are realistic), ``tiny`` (2 layers, hidden 32, byte-level
tokenizer: overhead-bound), or any model name curate resolves, e.g. ``smollm2-135m``.

    python benchmarks/train.py                 # small model, 64 rows, 2 epochs, checkpointing off and on
    python benchmarks/train.py --quick         # 8 rows, 1 epoch, checkpointing off: ~3 CPU-minutes
    python benchmarks/train.py --model smollm2-135m --rows 32 --epochs 1 --batch-size 4 --grad-checkpointing on
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def build_model(kind: str, path: Path) -> Path:
    """Save a random ``tiny`` or ``small`` model (with its tokenizer) to ``path``."""
    from curate.models import load_tokenizer
    from curate.testing import save_tiny_model

    if kind == "tiny":
        return save_tiny_model(path)
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer("smollm2-135m")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def rows(n: int, source: Path) -> list[dict]:
    """The first ``n`` GSM8K rows as chat conversations (question -> full worked answer)."""
    out = []
    with open(source) as f:
        for line in f:
            r = json.loads(line)
            out.append(
                {
                    "id": str(len(out)),
                    "messages": [
                        {"role": "user", "content": r["question"]},
                        {"role": "assistant", "content": r["answer"]},
                    ],
                }
            )
            if len(out) == n:
                break
    return out


# ---------------------------------------------------------------------------------------------- workers
def run_curate(args: argparse.Namespace, work: Path) -> dict:
    import transformers  # noqa: F401

    import curate
    import curate.models  # noqa: F401  (both sides import their libraries before the clock starts)
    import curate.train

    store = curate.set_store(work / "store")
    curate.save(rows(args.rows, args.data), name="bench", store=store)
    t0 = time.perf_counter()
    result = curate.train.sft(
        "bench",
        model=args.model_path,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        warmup_ratio=0.0,
        min_lr_ratio=0.1,
        max_len=args.max_len,
        clip_grad=1.0,
        grad_checkpointing=args.gc == "on",
        seed=args.seed,
        out=str(work / "curate-run"),
    )
    wall = time.perf_counter() - t0
    losses = [r["loss"] for r in curate.train.read_metrics(result.out) if "loss" in r]
    return {
        "tokens_per_s": result.metrics["tokens_per_s"],
        "train_s": result.metrics["train_s"],
        "wall_s": wall,
        "losses": losses,
        "pad_fraction": result.metrics["pad_fraction"],
    }


def run_trl(args: argparse.Namespace, work: Path) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows(args.rows, args.data)]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(work / "trl-run"), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", max_length=args.max_len, completion_only_loss=True, seed=args.seed, logging_steps=1,
        gradient_checkpointing=args.gc == "on", gradient_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=datasets.Dataset.from_list(data), processing_class=tok
    )
    out = trainer.train()
    wall = time.perf_counter() - t0
    tokens = args.epochs * sum(min(len(x), args.max_len) for x in trainer.train_dataset["input_ids"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens_per_s": tokens / out.metrics["train_runtime"],
        "train_s": out.metrics["train_runtime"],
        "wall_s": wall,
        "losses": losses,
    }


# ---------------------------------------------------------------------------------------------- driver
def peak_rss_mb() -> float:
    """This process's peak resident set size (``VmHWM``) in MB."""
    with open("/proc/self/status") as f:
        kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    return kb / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="small", help="tiny, small, or a model name / path curate resolves")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-len", type=int, default=1024, help="long enough that no GSM8K row is cut")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3, help="runs of each side (interleaved); min and median shown")
    p.add_argument(
        "--grad-checkpointing", dest="gc_mode", choices=("off", "on", "both"), default=None,
        help="the same setting on both sides (TRL's own default is on, curate's off); default both, off with --quick",
    )  # fmt: skip
    p.add_argument("--data", type=Path, default=GSM8K)
    p.add_argument("--quick", action="store_true", help="8 rows, 1 epoch, batch 4, checkpointing off: a smoke run")
    p.add_argument("--worker", choices=("curate", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--gc", choices=("off", "on"), default="off", help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.rows, args.epochs, args.batch_size = 8, 1, 4
    args.gc_mode = args.gc_mode or ("off" if args.quick else "both")

    if args.worker:  # one side of the comparison, in its own process
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("CURATE_QUIET", "1")
        result = (run_curate if args.worker == "curate" else run_trl)(args, args.work)
        result["peak_rss_mb"] = peak_rss_mb()
        print("RESULT " + json.dumps(result))
        return

    modes = ("off", "on") if args.gc_mode == "both" else (args.gc_mode,)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model in ("tiny", "small"):
            model_path = build_model(args.model, work / args.model)
        else:
            from curate.models import prepare

            model_path = prepare(args.model)
        results: dict[str, dict[str, list[dict]]] = {gc: {"curate": [], "trl": []} for gc in modes}
        for gc in modes:
            for i in range(args.repeats):
                for side in ("trl", "curate"):
                    run_dir = work / f"{side}-{gc}-{i}"
                    run_dir.mkdir()
                    cmd = [
                        sys.executable, __file__, *sys.argv[1:], "--worker", side, "--gc", gc,
                        "--model-path", str(model_path), "--work", str(run_dir),
                    ]  # fmt: skip
                    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                    if line is None:
                        sys.exit(f"{side} run failed:\n{proc.stderr[-4000:]}")
                    results[gc][side].append(json.loads(line[len("RESULT ") :]))
    report(args, results)


def report(args: argparse.Namespace, results: dict) -> None:
    from _util import table

    print(
        f"model {args.model}, {args.rows} GSM8K rows x {args.epochs} epochs, batch {args.batch_size} x "
        f"accum {args.grad_accum}, max_len {args.max_len}, lr {args.lr}, {args.threads} threads, "
        f"{args.repeats} interleaved repeats per side (min / median)"
    )
    for gc, runs in results.items():
        ours, trl = runs["curate"], runs["trl"]
        pick = lambda rs, key: [r[key] for r in rs]  # noqa: E731
        mm = lambda xs: (min(xs), statistics.median(xs))  # noqa: E731
        print(f"\ngradient checkpointing {gc} (both sides)\n")
        rows = []
        for name, rs in (("curate", ours), ("TRL SFTTrainer", trl)):
            tps, rss, wall = mm(pick(rs, "tokens_per_s")), mm(pick(rs, "peak_rss_mb")), mm(pick(rs, "wall_s"))
            rows.append([name, round(max(pick(rs, "tokens_per_s"))), round(tps[1]), round(rss[0]), round(rss[1]),
                         round(wall[0], 1), round(wall[1], 1)])  # fmt: skip
        print(table(["", "tok/s max", "tok/s med", "peak RSS MB min", "peak RSS MB med", "wall s min",
                     "wall s med"], rows))  # fmt: skip
        # Ratios within one run: speed from the best and the median of each side, memory from the min and median.
        med = statistics.median
        tps_ours, tps_trl = pick(ours, "tokens_per_s"), pick(trl, "tokens_per_s")
        rss_ours, rss_trl = pick(ours, "peak_rss_mb"), pick(trl, "peak_rss_mb")
        speed = [max(tps_ours) / max(tps_trl), med(tps_ours) / med(tps_trl)]
        memory = [min(rss_ours) / min(rss_trl), med(rss_ours) / med(rss_trl)]
        print(
            f"\n[gc {gc}] speed ratio curate / TRL: {speed[0]:.2f}x (best) {speed[1]:.2f}x (median)   "
            f"peak RSS ratio curate / TRL: {memory[0]:.2f}x (min) {memory[1]:.2f}x (median)   "
            f"(curate pad fraction {ours[0]['pad_fraction']:.1%})\n"
        )
        n = max(len(ours[0]["losses"]), len(trl[0]["losses"]))
        cell = lambda xs, i: round(xs[i], 4) if i < len(xs) else ""  # noqa: E731
        print(
            table(
                ["step", "curate loss", "TRL loss"],
                [[i + 1, cell(ours[0]["losses"], i), cell(trl[0]["losses"], i)] for i in range(n)],
            )
        )


if __name__ == "__main__":
    main()
