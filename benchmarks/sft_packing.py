"""SFT training speed with causal against block-diagonal packing (sft.format.packing).

    .venv/bin/python benchmarks/sft_packing.py [--threads 2] [--warmup 2] [--steps 8]
        [--batch 16] [--seq-len 256] [--dtype fp32|bf16] [--compile]

Both modes train `models.llama.demo()` through `tasks.training.finetune.finetune` (packing,
the real training loop, AdamW) on the same packed examples: synthetic chat examples of 24-200
tokens (a prompt without loss, then an answer), first-fit packed into sequences of --seq-len.
`block_diagonal` adds a (batch, 1, T, T) boolean mask and per-example positions, which takes
SDPA off its unmasked causal path; the table shows what that costs per step, and how much of
the causal attention the mask keeps (the share of (query, key) pairs in the same example).
On a shared machine other processes slow steps at random, so it reports the best step and the
median.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from models.llama import IGNORE_INDEX, Llama, demo  # noqa: E402
from tasks.tracking import InMemoryLogger  # noqa: E402
from tasks.training.finetune import FinetuneConfig, finetune, packed  # noqa: E402


def examples(n: int, vocab: int, seq_len: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    tokens, labels = [], []
    for _ in range(n):
        length = int(rng.integers(24, min(200, seq_len) + 1))
        prompt = int(rng.integers(4, length // 2))
        t = [1, *rng.integers(3, vocab, length - 2).tolist(), 2]  # <s> ... </s>
        tokens.append(t)
        labels.append([IGNORE_INDEX] * prompt + t[prompt:])
    schema = {"tokens": pl.List(pl.Int64), "labels": pl.List(pl.Int64)}
    return pl.DataFrame({"tokens": tokens, "labels": labels}, schema=schema)


def kept_share(frame: pl.DataFrame, seq_len: int) -> float:
    """Share of the causal (query, key) pairs that lie inside one example."""
    segments = packed(frame, seq_len, 0, [], seed=0).segments[:-1].reshape(-1, seq_len)
    same = causal = 0
    for row in segments:
        _, counts = np.unique(row, return_counts=True)
        same += int((counts * (counts + 1) // 2).sum())
        causal += seq_len * (seq_len + 1) // 2
    return same / causal


def run_mode(mode: str, frame: pl.DataFrame, args) -> dict:
    cfg = FinetuneConfig(
        epochs=100,
        max_steps=args.warmup + args.steps,
        train={
            "batch_size": args.batch,
            "seq_len": args.seq_len,
            "lr": 3e-4,
            "threads": args.threads,
            "dtype": args.dtype,
            "compile": args.compile,
            "log_every": 1,
            "eval_every": 0,
            "checkpoint_every": 0,
        },
    )
    torch.manual_seed(0)
    model = Llama(demo())
    logger = InMemoryLogger()
    print(f"{mode}: {args.warmup} warm-up + {args.steps} measured steps ...", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sft-packing-") as out, redirect_stdout(io.StringIO()):
        finetune(
            model,
            frame,
            frame.clear(),
            cfg,
            pad_id=0,
            separator=[],
            logger=logger,
            out_dir=Path(out),
            block_diagonal=mode == "block_diagonal",
        )
    measured = [v for step, v in logger.metrics["tokens_per_s"] if step > args.warmup]
    losses = [v for _, v in logger.metrics["loss"]]
    return {
        "mode": mode,
        "best": max(measured),
        "median": float(np.median(measured)),
        "last_loss": losses[-1],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--examples", type=int, default=600)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile (the demo's SFT)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame = examples(args.examples, demo().vocab_size, args.seq_len)
    print(
        f"model: demo(); {args.examples} examples packed into seq {args.seq_len}, batch "
        f"{args.batch}; {args.dtype}{' compiled' if args.compile else ''}; "
        f"{args.threads} threads; torch {torch.__version__}; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    rows = [run_mode(m, frame, args) for m in ("causal", "block_diagonal")]
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(f"block_diagonal keeps {kept_share(frame, args.seq_len):.1%} of the causal pairs\n")
    print("| packing | tokens/s best step | tokens/s median | vs causal (median) | last loss |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['best']:,.0f} | {r['median']:,.0f} | "
            f"{r['median'] / rows[0]['median']:.2f}x | {r['last_loss']:.3f} |"
        )


if __name__ == "__main__":
    main()
