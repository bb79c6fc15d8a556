"""Fine-tune a model on tokenised chat examples with the shared training loop (RECIPE.md §4).

The examples (one row of `sft_examples` each) are packed into sequences of `seq_len` tokens
(`tasks.chat.format.pack_examples`) and read in epochs (TokenBatches order="epochs"); the loss mask
comes from the labels, so only answer tokens are trained. With `block_diagonal` each example
attends only to itself inside its packed sequence (sft.format.packing), in training and in the
validation loss alike. The number of optimizer steps follows from the epochs (paper: 2) and the
packed size; warmup is a share of them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.llama import IGNORE_INDEX, Llama, segment_layout
from tasks.chat.config import FormatConfig
from tasks.chat.format import MaskStrategy, Packed, pack_examples, tokenize_dialogue
from tasks.distributed.launch import LaunchConfig, run_ranks, start_ranks_here, step_log
from tasks.distributed.launch import rank as launched_rank
from tasks.tracking import MetricLogger
from tasks.training.config import TrainConfig
from tasks.training.data import TokenBatches, gather_windows
from tasks.training.loop import train
from tasks.training.model_io import export_model, load_model
from tasks.training.rerun import set_aside_if_forced


def _sft_train_defaults() -> TrainConfig:
    # Paper §3.1: cosine schedule, lr 2e-5, weight decay 0.1, batch 64, sequence 4096.
    return TrainConfig(
        max_steps=1,
        warmup_steps=0,
        lr=2e-5,
        weight_decay=0.1,
        batch_size=64,
        seq_len=4096,
        log_every=10,
        eval_every=0,
        checkpoint_every=0,
    )


class FinetuneConfig(BaseModel):
    """Epochs over the packed examples; `train` holds the loop settings. Its max_steps and
    warmup_steps are derived here (from epochs and warmup_ratio); the values given are ignored."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(2.0, gt=0)  # paper §3.1: 2 epochs
    warmup_ratio: float = Field(0.03, ge=0, lt=1)  # the paper gives none for SFT; a short ramp
    min_warmup_steps: int = Field(0, ge=0)  # reward models: "3 % of steps (at least 5)", §3.2.2
    max_steps: int | None = Field(None, gt=0)  # cap (e.g. for tests); None = from epochs
    train: TrainConfig = Field(default_factory=_sft_train_defaults)
    # in the task's process (default), or N ranks under torchrun / deepspeed
    # (tasks/distributed/launch.py); train.batch_size stays per rank: the global batch is
    # batch_size x grad_accum_steps x nproc
    launch: LaunchConfig = LaunchConfig()

    @field_validator("train", mode="before")
    @classmethod
    def _sft_defaults_under_overrides(cls, value):
        """Keys a preset leaves out take the SFT defaults, not the pretraining ones."""
        if isinstance(value, dict):
            return {**_sft_train_defaults().model_dump(), **value}
        return value

    def resolve(self, n_sequences: int) -> TrainConfig:
        """The loop's config for `n_sequences` packed training sequences."""
        per_step = self.train.batch_size * self.train.grad_accum_steps
        steps = max(1, math.ceil(self.epochs * n_sequences / per_step))
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        warmup = min(steps, max(self.min_warmup_steps, round(self.warmup_ratio * steps)))
        every = {
            k: v
            for k, v in (
                ("eval_every", self.train.eval_every),
                ("checkpoint_every", self.train.checkpoint_every),
            )
            if v > steps
        }
        return self.train.model_copy(
            update={"max_steps": steps, "warmup_steps": warmup, **{k: 0 for k in every}}
        )


def packed(
    examples: pl.DataFrame, seq_len: int, pad_id: int, separator: list[int], seed: int
) -> Packed:
    """Pack the examples of one split (a DataFrame of the sft_examples contract)."""
    pairs = list(zip(examples["tokens"].to_list(), examples["labels"].to_list()))
    return pack_examples(pairs, seq_len, pad_id, separator=separator, seed=seed)


@torch.no_grad()
def loss_alone(model: Llama, examples: pl.DataFrame, seq_len: int, batch_size: int = 4) -> dict:
    """Mean loss per target token with every example in a context of its own, as the model meets
    a conversation at inference: whatever the training packing, a comparable held-out loss.
    The examples are packed and scored block-diagonally, which gives the numbers of one forward
    pass per example in far fewer passes. {} when there are no examples."""
    if not examples.height:
        return {}
    data = packed(examples, seq_len, pad_id=0, separator=[], seed=0)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for first in range(0, data.stats["bins"], batch_size):
        starts = np.arange(first, min(first + batch_size, data.stats["bins"])) * seq_len
        x, y, segments = gather_windows(data.tokens, starts, seq_len, data.loss_mask, data.segments)
        positions, mask = segment_layout(segments)
        hidden = model.hidden_states(x, positions=positions, attention_mask=mask)
        keep = y != IGNORE_INDEX
        logits = model.output(hidden[keep]).float()  # the head on target positions only
        total += float(F.cross_entropy(logits, y[keep], reduction="sum"))
        count += int(keep.sum())
    model.train(was_training)
    return {"heldout_loss_alone": total / max(count, 1), "heldout_target_tokens": float(count)}


def finetune(
    model: Llama,
    train_examples: pl.DataFrame,
    val_examples: pl.DataFrame,
    cfg: FinetuneConfig,
    pad_id: int,
    separator: list[int],
    logger: MetricLogger,
    out_dir: Path,
    sample_fn=None,
    block_diagonal: bool = False,
) -> tuple[dict, dict]:
    """Train `model` in place; returns (loop stats, packing stats). Resumes from out_dir."""
    seq_len = cfg.train.seq_len
    data = packed(train_examples, seq_len, pad_id, separator, cfg.train.seed)
    n_sequences = (len(data.tokens) - 1) // seq_len
    run_cfg = cfg.resolve(n_sequences)
    val_tokens = val_mask = val_segments = None
    if val_examples.height:
        val = packed(val_examples, seq_len, pad_id, separator, cfg.train.seed)
        val_tokens, val_mask = val.tokens, val.loss_mask
        val_segments = val.segments if block_diagonal else None
    batches = TokenBatches(
        data.tokens,
        run_cfg.batch_size,
        seq_len,
        seed=run_cfg.seed,
        loss_mask=data.loss_mask,
        order="epochs",
        segments=data.segments if block_diagonal else None,
    )
    stats = train(
        model,
        batches,
        run_cfg,
        logger,
        out_dir,
        val_tokens=val_tokens,
        sample_fn=sample_fn,
        val_loss_mask=val_mask,
        val_segments=val_segments,
        val_aligned=True,  # packed bins: no validation window starts inside an example
    )
    pack_stats = {
        f"pack.{k}": float(v)
        for k, v in data.stats.items()
        if isinstance(v, (int, float, np.integer, np.floating))
    }
    pack_stats["pack.sequences"] = float(n_sequences)
    pack_stats["train.target_tokens_per_epoch"] = float(np.sum(data.loss_mask))
    return stats, pack_stats


def answer_examples(
    rows: list[dict], processor, seq_len: int, answer_key: str, ended_key: str | None = None
) -> tuple[pl.DataFrame, dict]:
    """Chat training examples (tokens, labels; loss on the answer only) of rows with `system`,
    `prompt` (turns ending with the user) and an answer under `answer_key`; empty answers, and
    examples longer than `seq_len`, are left out and counted. A row whose `ended_key` is False
    was cut off at max_new_tokens: its target has no closing EOS (the model is not taught to
    stop mid-sentence), counted as `cut_off_targets`."""
    tokens, labels, empty, too_long, cut_off = [], [], 0, 0, 0
    for row in rows:
        if not row[answer_key].strip():
            empty += 1
            continue
        turns = [*row["prompt"], {"role": "assistant", "content": row[answer_key]}]
        t, lab = tokenize_dialogue(processor, row["system"], turns, MaskStrategy.LAST_TURN)
        if ended_key is not None and row.get(ended_key) is False:
            t, lab = t[:-1], lab[:-1]  # the closing EOS is the dialogue's last token
            cut_off += 1
        if len(t) > seq_len:
            too_long += 1
            continue
        tokens.append(t)
        labels.append(lab)
    frame = pl.DataFrame(
        {"tokens": tokens, "labels": labels},
        schema={"tokens": pl.List(pl.Int64), "labels": pl.List(pl.Int64)},
    )
    return frame, {
        "examples": len(tokens),
        "skipped_empty": empty,
        "skipped_too_long": too_long,
        "cut_off_targets": cut_off,
    }


def finetune_on(
    examples: pl.DataFrame,
    init_dir: str,
    ft: FinetuneConfig,
    fmt: FormatConfig,
    processor,
    out_dir: Path,
    logger,
    tracking: tuple[str, str, str] | None = None,
) -> tuple[dict, Path]:
    """The shared loop from `init_dir` on the examples (no held-out split) -> (stats, folder).
    With `ft.launch` set, on N ranks (tasks/distributed/launch.py): `tracking` = (run_dir,
    MLflow run id, metric prefix) lets rank 0 log where `logger` would."""
    if start_ranks_here(ft.launch):
        if tracking is None:
            raise ValueError(
                "a fine-tune launched on several ranks needs tracking=(run_dir, mlflow_run_id, "
                "prefix) so that rank 0 can log to the step's MLflow run"
            )
        set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
        work = Path(out_dir) / "launch"
        work.mkdir(parents=True, exist_ok=True)
        tmp = work / ".examples.parquet.tmp"
        examples.write_parquet(tmp)
        tmp.replace(work / "examples.parquet")
        stats, folder = run_ranks(
            "tasks.training.finetune:finetune_on_rank",
            {
                "examples": str(work / "examples.parquet"),
                "init_dir": str(init_dir),
                "ft": ft.model_dump(mode="json"),
                "fmt": fmt.model_dump(mode="json"),
                "tokenizer": str(processor.path),
                "out_dir": str(out_dir),
                "tracking": list(tracking),
            },
            ft.launch,
            work,
            log=step_log,
        )
        return stats, Path(folder)
    model = load_model(Path(init_dir)).train()
    set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
    return _finetune_and_export(model, examples, ft, fmt, processor, out_dir, logger)


def finetune_on_rank(
    examples: str, init_dir: str, ft: dict, fmt: dict, tokenizer: str, out_dir: str, tracking
) -> tuple[dict, str]:
    """One rank of a launched `finetune_on`: rank 0 logs to MLflow and exports the model."""
    from tasks.chat.tokenizer import load_tokenizer
    from tasks.tracking import InMemoryLogger, PrefixedLogger, attach_run

    run_dir, run_id, prefix = tracking
    logger = (
        PrefixedLogger(attach_run(Path(run_dir), run_id), prefix)
        if launched_rank() == 0
        else InMemoryLogger()
    )
    stats, folder = _finetune_and_export(
        load_model(Path(init_dir)).train(),
        pl.read_parquet(examples),
        FinetuneConfig.model_validate(ft),
        FormatConfig.model_validate(fmt),
        load_tokenizer(tokenizer),
        Path(out_dir),
        logger,
    )
    return stats, str(folder)


def _finetune_and_export(model, examples, ft, fmt, processor, out_dir, logger):
    loop, pack = finetune(
        model,
        examples,
        examples.clear(),
        ft,
        pad_id=0,
        separator=fmt.separator_ids(processor),
        logger=logger,
        out_dir=out_dir,
        block_diagonal=fmt.block_diagonal,
    )
    folder = Path(out_dir) / "model"
    if launched_rank() == 0:
        export_model(Path(loop["checkpoint"]), folder)
    return {k: v for k, v in {**loop, **pack}.items() if isinstance(v, (int, float))}, folder
