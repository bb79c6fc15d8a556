"""The one training loop: pretraining, SFT, rejection-sampling fine-tuning and distillation.

The stages differ only in their data (`TokenBatches`: which tokens, which are targets via the
loss mask) and config; the loop, the optimizer (optim.py), checkpoints (checkpoint.py) and the
engine (engines.py) are shared. Tracking goes through the `MetricLogger` protocol; the loop
never imports Prefect or MLflow.

Exact resume: batches are a function of (seed, step) and a checkpoint holds weights, optimizer,
schedule and RNG state, so a run stopped at any checkpoint and resumed ends with the same
weights, bit for bit, as one that never stopped (same machine, thread count and engine).
"""

from __future__ import annotations

import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from models.llama import IGNORE_INDEX
from tasks.io import atomic_write_bytes
from tasks.tracking import MetricLogger
from tasks.training.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tasks.training.config import TrainConfig
from tasks.training.data import TokenBatches, eval_batches, micro_batch_index
from tasks.training.engines import Engine, make_engine
from tasks.training.mfu import default_record, faster_dtype, measure_matmul_peak, mfu

CHECKPOINT_DIR = "checkpoints"
LOSS_CURVE = "loss_curve.png"
SampleFn = Callable[[nn.Module, int], str]  # (model, step) -> text to log


def train(
    model: nn.Module,
    data: TokenBatches,
    cfg: TrainConfig,
    logger: MetricLogger,
    out_dir: Path,
    val_tokens=None,
    sample_fn: SampleFn | None = None,
    resume: bool = True,
    val_loss_mask=None,
    val_segments=None,
    val_aligned: bool = False,
) -> dict:
    """Train `model` for cfg.max_steps optimizer steps; returns final stats.

    If `out_dir/checkpoints` holds a checkpoint and `resume` is true, training continues from it
    (a finished run returns at once). Metrics go to `logger` (rank 0 only): every log_every
    steps loss, lr, grad_norm, tokens_per_s, mfu; every eval_every val_loss, val_ppl (on
    `val_tokens`); every sample_every the text of `sample_fn(model, step)` as an artifact; at the
    end the loss curve as a PNG artifact. Batches that carry segment ids (packed examples,
    tasks/training/data.py) train and validate block-diagonally; `val_segments` are those of
    `val_tokens`. `val_aligned`: `val_tokens` are packed windows, and validation reads whole ones.
    """
    if (data.batch_size, data.seq_len) != (cfg.batch_size, cfg.seq_len):
        raise ValueError(
            f"batches are {data.batch_size} x {data.seq_len} tokens but the config says "
            f"batch_size {cfg.batch_size}, seq_len {cfg.seq_len}; build TokenBatches from it"
        )
    if cfg.seq_len > model.config.max_seq_len:
        raise ValueError(
            f"seq_len {cfg.seq_len} exceeds the model's max_seq_len {model.config.max_seq_len}"
        )
    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    if cfg.dtype == "auto":
        cfg = cfg.model_copy(update={"dtype": faster_dtype(cfg.threads)})
        if logger is not None:
            logger.log_params({"train.dtype_chosen": cfg.dtype})
    seed_everything(cfg.seed)
    sizes = {
        "num_params": model.num_params(),
        "flops_per_token": model.flops_per_token(cfg.seq_len),
    }
    engine = make_engine(
        model, cfg, out_dir
    )  # (ZeRO-3 empties the module's tensors: size it first)
    state, resumed_from = TrainerState(), None
    latest = latest_checkpoint(out_dir / CHECKPOINT_DIR) if resume else None
    if latest is not None:
        state, resumed_from = load_checkpoint(latest, engine), latest
    val = None
    if val_tokens is not None:
        # global batches (batch_size x grad_accum_steps x world_size): each rank scores its
        # rows (evaluate), so every split of one global batch reports the same validation loss
        val = eval_batches(
            val_tokens,
            cfg.eval_batches,
            cfg.batch_size * cfg.grad_accum_steps * engine.world_size,
            cfg.seq_len,
            val_loss_mask,
            val_segments,
            val_aligned,
        )
    run = _Run(engine, data, cfg, logger, out_dir, state, val, sample_fn, sizes)
    if resumed_from is not None:
        run.say(f"resumed from {resumed_from} at step {state.step}")
    return run.run()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class _Window:
    """Loss and time of the steps since the last log line."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    grad_norm: float = float("nan")
    lr: float = float("nan")


class _Run:
    def __init__(
        self,
        engine: Engine,
        data: TokenBatches,
        cfg: TrainConfig,
        logger: MetricLogger,
        out_dir: Path,
        state: TrainerState,
        val,
        sample_fn: SampleFn | None,
        sizes: dict,
    ):
        self.engine, self.data, self.cfg, self.logger = engine, data, cfg, logger
        self.out_dir, self.state, self.val, self.sample_fn = out_dir, state, val, sample_fn
        self.rank0 = engine.rank == 0
        self.peak = measure_matmul_peak(cfg.dtype, cfg.threads, record=default_record())
        self.sizes, self.flops_per_token = sizes, sizes["flops_per_token"]
        self.train_seconds, self.train_steps = 0.0, 0  # this session, for the final throughput
        self.last_loss = self.last_val = float("nan")
        self.checkpoint: Path | None = None
        # a batch item may hold several sequences (reward models: a chosen and a rejected one)
        self.tokens_per_step = cfg.tokens_per_step * getattr(data, "sequences_per_item", 1)

    def run(self) -> dict:
        cfg, state = self.cfg, self.state
        start_step, started = state.step, time.perf_counter()
        if self.rank0:
            self.logger.log_params({**self.sizes, "world_size": self.engine.world_size})
            self.logger.log_metrics({f"peak_flops_{cfg.dtype}": self.peak}, step=start_step)
        window = _Window()
        while state.step < cfg.max_steps:
            self.train_step(window)
            step, done = state.step, state.step == cfg.max_steps
            if _due(step, cfg.log_every, done):
                self.log_window(window)
                window = _Window()
            if self.val is not None and _due(step, cfg.eval_every, done):
                self.evaluate()
            if self.sample_fn is not None and _due(step, cfg.sample_every, False):
                self.sample()
            if _due(step, cfg.checkpoint_every, done):
                self.save()
        if self.val is not None and math.isnan(self.last_val):  # resumed a finished run
            self.evaluate()
        return self.finish(start_step, time.perf_counter() - started)

    def train_step(self, window: _Window) -> None:
        """One optimizer step: grad_accum_steps micro-batches, then clip and update."""
        cfg, engine, step = self.cfg, self.engine, self.state.step
        start = time.perf_counter()
        window.lr = engine.lr
        loss_sum = 0.0
        micro_batches = [
            self.data.batch(
                micro_batch_index(step, micro, cfg.grad_accum_steps, engine.rank, engine.world_size)
            )
            for micro in range(cfg.grad_accum_steps)
        ]
        weights = self.token_weights(micro_batches)
        for batch, weight in zip(micro_batches, weights):
            loss = engine.forward(*batch) * weight  # (x, y) or (x, y, segments)
            engine.backward(loss)
            loss_sum += float(loss.detach())
        window.grad_norm = engine.step()
        window.seconds += time.perf_counter() - start
        window.losses.append(loss_sum / cfg.grad_accum_steps)
        self.train_seconds += time.perf_counter() - start
        self.train_steps += 1
        self.state.step += 1

    def log_window(self, window: _Window) -> None:
        cfg, step = self.cfg, self.state.step
        loss = self.mean_across_ranks(sum(window.losses) / len(window.losses))
        tokens_per_s = len(window.losses) * self.tokens_per_step / window.seconds  # per rank
        metrics = {
            "loss": loss,
            "lr": window.lr,
            "grad_norm": window.grad_norm,
            "tokens_per_s": tokens_per_s * self.engine.world_size,
            "mfu": mfu(self.flops_per_token, tokens_per_s, self.peak),
        }
        self.last_loss = loss
        self.state.history["train"].append([step, loss])
        if self.rank0:
            self.logger.log_metrics(metrics, step=step)
        self.say(
            f"step {step}/{cfg.max_steps} | loss {loss:.4f} | lr {window.lr:.2e} | "
            f"grad_norm {window.grad_norm:.3f} | {metrics['tokens_per_s']:,.0f} tok/s | "
            f"mfu {metrics['mfu']:.1%}"
        )

    def evaluate(self) -> None:
        """Validation loss: the mean over every target token of the validation windows (global
        batches of batch_size x grad_accum_steps x world_size, each rank scoring its rows in
        micro-batches of batch_size), so any split of the same global batch reports the same."""
        world, rank, size = self.engine.world_size, self.engine.rank, self.cfg.batch_size
        total = torch.zeros(2, dtype=torch.float64)
        for batch in self.val:
            mine = [t[rank::world] for t in batch]  # this rank's rows of the global batch
            for start in range(0, len(mine[0]), size):
                xm, ym, *sm = (t[start : start + size] for t in mine)
                n = float((ym != IGNORE_INDEX).sum()) if ym.shape == xm.shape else float(len(xm))
                if n:
                    total += torch.tensor(
                        [self.engine.eval_loss(xm, ym, *sm) * n, n], dtype=torch.float64
                    )
        if world > 1:
            dist.all_reduce(total)
        self.last_val = float(total[0] / total[1].clamp(min=1))
        step = self.state.step
        self.state.history["val"].append([step, self.last_val])
        if self.rank0:
            self.logger.log_metrics(
                {"val_loss": self.last_val, "val_ppl": math.exp(self.last_val)}, step=step
            )
        self.say(
            f"step {step} | val_loss {self.last_val:.4f} | val_ppl {math.exp(self.last_val):.2f}"
        )

    def sample(self) -> None:
        if not self.rank0:
            return
        module, step = self.engine.module, self.state.step
        module.eval()
        with torch.no_grad():
            text = self.sample_fn(module, step)
        module.train()
        path = atomic_write_bytes(self.out_dir / "samples" / f"step-{step:08d}.txt", text.encode())
        self.logger.log_artifact(path, "samples")

    def save(self) -> None:
        config = {
            "train": self.cfg.model_dump(mode="json"),
            "model": self.engine.module.config.to_dict(),
        }
        self.checkpoint = save_checkpoint(
            self.out_dir / CHECKPOINT_DIR,
            self.engine,
            self.state,
            config,
            keep=self.cfg.keep_checkpoints,
        )

    def finish(self, start_step: int, wall_s: float) -> dict:
        world = self.engine.world_size
        tokens_per_s = (
            self.train_steps * self.tokens_per_step / self.train_seconds
            if self.train_seconds
            else float("nan")
        )  # per rank
        curve = None
        if self.rank0:
            curve = plot_loss_curve(self.state.history, self.out_dir / LOSS_CURVE)
            self.logger.log_artifact(curve)
        checkpoint = self.checkpoint or latest_checkpoint(self.out_dir / CHECKPOINT_DIR)
        train_loss = self.last_loss
        if math.isnan(train_loss) and self.state.history["train"]:  # resumed a finished run
            train_loss = self.state.history["train"][-1][1]
        return {
            "steps": self.state.step,
            "start_step": start_step,
            "train_loss": train_loss,
            "val_loss": self.last_val,
            "val_ppl": math.exp(self.last_val) if not math.isnan(self.last_val) else float("nan"),
            "train_tokens": self.state.step * self.tokens_per_step * world,
            "tokens_per_s": tokens_per_s * world,
            "mfu": mfu(self.flops_per_token, tokens_per_s, self.peak),
            "peak_flops": self.peak,
            "wall_s": wall_s,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "loss_curve": str(curve) if curve else None,
        }

    def token_weights(self, micro_batches: list) -> list[float]:
        """Weights for the micro-batch losses of one step so that the step's gradient is that of
        the mean over every target token of the global batch (all micro-batches on all ranks),
        whatever the split: one rank with batch B, one with B/2 and two micro-batches, or two
        ranks with B/2 give the same step. A micro-batch's loss is its own token mean; its
        weight is n_i * world_size * grad_accum_steps / n_global (engine.backward divides by
        grad_accum_steps; DDP averages over ranks). All 1 for other targets (reward pairs: every
        micro-batch holds as many pairs) and where the split cannot matter."""
        world, accum = self.engine.world_size, len(micro_batches)
        token_targets = all(
            y.dtype == torch.int64 and y.shape == x.shape for x, y, *_ in micro_batches
        )
        if (world == 1 and accum == 1) or not token_targets:
            return [1.0] * accum
        counts = torch.tensor(
            [float((y != IGNORE_INDEX).sum()) for _, y, *_ in micro_batches], dtype=torch.float64
        )
        total = counts.sum().clone()
        if world > 1:
            dist.all_reduce(total)
        return [float(n * world * accum / total.clamp(min=1)) for n in counts]

    def mean_across_ranks(self, value: float) -> float:
        if self.engine.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.engine.device)
        dist.all_reduce(t)
        return float(t) / self.engine.world_size

    def say(self, line: str) -> None:
        if self.rank0:
            print(line, flush=True)


def _due(step: int, every: int, last: bool) -> bool:
    return last or (every > 0 and step % every == 0)


def plot_loss_curve(history: dict, path: Path) -> Path:
    """Train and validation loss against step, as a PNG (no pyplot: no GUI backend needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for name, points in history.items():
        if points:
            steps, losses = zip(*points)
            ax.plot(steps, losses, marker="o" if name == "val" else None, markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
