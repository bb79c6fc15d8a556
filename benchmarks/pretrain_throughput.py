"""Pretraining throughput (tokens/s) and MFU of the demo model through the real training loop.

    .venv/bin/python benchmarks/pretrain_throughput.py [--threads 2] [--warmup 4] [--steps 16]
        [--modes eager-fp32,eager-bf16,compile-fp32,compile-bf16]

Each mode trains `models.llama.demo()` (seq 256, batch 8, vocab 8000) with
`tasks.training.loop.train` (forward, backward, clip, AdamW, schedule, batch cutting), logging
every step: --warmup steps first (torch.compile compiles there; not counted), then --steps
measured steps. MFU = flops_per_token * tokens/s / peak (PaLM appendix B); the peak is the best
square fp32 or bf16 matmul (sizes 1024 and 2048, five each; tasks/training/mfu.py) timed on this
machine just before and just after that mode. On a shared 2-core machine other processes cut
both several-fold at random moments, so the table puts the best step against the best matmul
(both estimates of the uncontended speed) and shows the median step beside it.
The issue's target: eager fp32 MFU >= 50 % of the fp32 matmul peak.
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
import torch  # noqa: E402

from models.llama import Llama, demo  # noqa: E402
from tasks.tracking import InMemoryLogger  # noqa: E402
from tasks.training.config import TrainConfig  # noqa: E402
from tasks.training.data import TokenBatches  # noqa: E402
from tasks.training.loop import train  # noqa: E402
from tasks.training.mfu import _PEAKS, measure_matmul_peak  # noqa: E402

MODES = {  # name: (dtype, compile)
    "eager-fp32": ("fp32", False),
    "eager-bf16": ("bf16", False),
    "compile-fp32": ("fp32", True),
    "compile-bf16": ("bf16", True),
}


def peaks(threads: int) -> dict[str, float]:
    _PEAKS.clear()  # re-measure: the point is to see drift under contention
    return {dtype: measure_matmul_peak(dtype, threads) for dtype in ("fp32", "bf16")}


def run_mode(mode: str, threads: int, warmup: int, steps: int, batch: int, seq_len: int) -> dict:
    dtype, compile_ = MODES[mode]
    before = peaks(threads)
    cfg = TrainConfig(
        max_steps=warmup + steps,
        batch_size=batch,
        seq_len=seq_len,
        warmup_steps=2,
        dtype=dtype,
        compile=compile_,
        threads=threads,
        log_every=1,
        eval_every=0,
        checkpoint_every=0,
        keep_checkpoints=1,
    )
    torch.manual_seed(0)
    model = Llama(demo())
    tokens = np.random.default_rng(0).integers(
        0, model.config.vocab_size, 2_000_000, dtype=np.uint16
    )
    logger = InMemoryLogger()
    started = time.perf_counter()
    print(f"{mode}: {warmup} warm-up + {steps} measured steps ...", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="pretrain-bench-") as out,
        redirect_stdout(io.StringIO()),
    ):
        train(model, TokenBatches(tokens, batch, seq_len, cfg.seed), cfg, logger, Path(out))
    measured = [v for step, v in logger.metrics["tokens_per_s"] if step > warmup]
    after = peaks(threads)
    return {
        "mode": mode,
        "tokens_per_s": max(measured),
        "median": float(np.median(measured)),
        "warmup_s": sum(
            cfg.tokens_per_step / v for step, v in logger.metrics["tokens_per_s"] if step <= warmup
        ),
        "peak": {d: max(before[d], after[d]) for d in before},
        "flops_per_token": model.flops_per_token(seq_len),
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=4, help="steps not counted (compilation)")
    parser.add_argument("--steps", type=int, default=16, help="measured optimizer steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = Llama(demo())
    print(
        f"model: demo(), {model.num_params() / 1e6:.2f}M params, "
        f"{model.flops_per_token(args.seq_len) / 1e6:.1f} MFLOP/token at seq {args.seq_len}; "
        f"batch {args.batch}; {args.threads} threads; torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    rows = [
        run_mode(m, args.threads, args.warmup, args.steps, args.batch, args.seq_len)
        for m in args.modes.split(",")
    ]
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    print(
        "| mode | tokens/s best step | tokens/s median | fp32 peak GFLOP/s | bf16 peak GFLOP/s "
        "| MFU vs fp32 peak | MFU vs bf16 peak | MFU median vs own-dtype peak | warm-up s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        flops, peak = r["flops_per_token"] * r["tokens_per_s"], r["peak"]
        own = peak[MODES[r["mode"]][0]]
        print(
            f"| {r['mode']} | {r['tokens_per_s']:,.0f} | {r['median']:,.0f} | "
            f"{peak['fp32'] / 1e9:.0f} | {peak['bf16'] / 1e9:.0f} | {flops / peak['fp32']:.1%} | "
            f"{flops / peak['bf16']:.1%} | {r['flops_per_token'] * r['median'] / own:.1%} | "
            f"{r['warmup_s']:.0f} |"
        )
    eager = next((r for r in rows if r["mode"] == "eager-fp32"), None)
    if eager:
        value = eager["flops_per_token"] * eager["tokens_per_s"] / eager["peak"]["fp32"]
        print(
            f"\ntarget eager fp32 MFU >= 50 % of the fp32 matmul peak: {value:.1%} "
            f"({'met' if value >= 0.5 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
