"""The paper's optimizer and learning-rate schedule (Touvron et al., 2023, §2.2).

AdamW with decoupled weight decay applied to weight matrices only: norm gains and embedding
tables are not decayed (the usual practice in GPT/Llama training code; decaying a gain pulls it
towards zero, and decaying an embedding row penalises rare tokens). The schedule is linear
warmup then cosine decay to `min_lr_ratio * peak`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from tasks.training.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices and undecayed rest (norms, embeddings, biases).

    A tied output/embedding matrix is one parameter and counts as an embedding (no decay).
    """
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters yields a shared tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
    )


def cosine_schedule(
    step: int, peak_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.1
) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Warmup: peak * (step + 1) / warmup_steps, so step 0 already trains and step warmup-1 reaches
    the peak. Then cosine from peak at `warmup_steps` to min_lr_ratio * peak at `max_steps`,
    constant after.
    """
    min_lr = min_lr_ratio * peak_lr
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `cosine_schedule`: after k scheduler steps the lr is that of step k.

    The lambda is a closure, so the scheduler's state_dict holds only numbers (loads with
    torch.load(weights_only=True)) and the schedule always comes from the config.
    """

    def factor(step: int) -> float:
        return (
            cosine_schedule(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
            / cfg.lr
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
