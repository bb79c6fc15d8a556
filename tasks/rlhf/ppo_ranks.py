"""PPO on N ranks (issue 17): which rank does which part of an iteration, and the optimizer step
that sums gradients across them. Pure torch (+ DeepSpeed when configured); no Prefect, no MLflow.

How N ranks compute what one rank computes with the same global batch (tasks/rlhf/ppo.py):
- Every rank draws the same prompt indices (the same seeded generator), so the iteration's
  batch is known everywhere without communication.
- The batch is cut into chunks of `minibatch_size` rows; chunk k is sampled (with its own seed,
  `chunk_seed`), scored by the policy, the reference and both reward models on rank k mod N.
  One rank does every chunk itself, in the same order with the same seeds, so the samples
  are the same.
- `RankGroup.gather` brings every chunk to every rank in chunk order: each rank then holds the
  whole rollout, and whitening (the running score window and the advantages), KL and reward
  metrics are computed on the global batch, identically on every rank.
- Each minibatch's rows are split across ranks (rows[rank::N]). A rank's loss is its token-
  weighted share of the minibatch's masked mean (its tokens / the minibatch's tokens), and the
  gradients are summed across ranks, which is the gradient of the one-rank loss. The loss
  metrics are summed the same way.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn

from tasks.training.optim import param_groups


class RankGroup(NamedTuple):
    rank: int
    world: int

    @classmethod
    def join(cls) -> RankGroup:
        """The launcher's process group when WORLD_SIZE > 1 (gloo on CPU, nccl on GPU), else a
        group of one that makes no collective call."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls(0, 1)
        from tasks.training.engines import init_distributed

        return cls(*init_distributed())

    def owns(self, chunk: int) -> bool:
        return chunk % self.world == self.rank

    def gather(self, local: dict[int, Any]) -> list[Any]:
        """Every rank's {chunk index: value}, merged and in chunk order, on every rank."""
        if self.world == 1:
            return [local[k] for k in sorted(local)]
        parts: list[dict[int, Any] | None] = [None] * self.world
        dist.all_gather_object(parts, local)
        merged = {k: v for part in parts for k, v in (part or {}).items()}
        return [merged[k] for k in sorted(merged)]

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """The sum over ranks of each value (the same keys on every rank)."""
        if self.world == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))


class PPOEngine:
    """The optimizer step of PPO's policy-with-value model.

    torch: AdamW; DistributedDataParallel on N ranks. deepspeed: `deepspeed.initialize` with the
    same AdamW and ZeRO stage 0-2 (policy, value head and optimizer state partitioned from stage
    1; the frozen reference and the reward models stay whole on every rank).
    `step(loss)` takes the rank's share of the minibatch loss; gradients are summed across ranks
    (both wrappers average, so the loss is scaled by N first), clipped on the global norm, and
    the pre-clip norm is returned."""

    def __init__(self, model: nn.Module, cfg, group: RankGroup):
        self.cfg, self.group, self.module = cfg, group, model
        optimizer = torch.optim.AdamW(
            param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
        )
        self.ds = None
        if cfg.engine == "deepspeed":
            import deepspeed

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # see engines.py
            from tasks.training.engines import init_distributed

            init_distributed()  # DeepSpeed needs a process group, even a group of one
            self.ds, self.optimizer, _, _ = deepspeed.initialize(
                model=model,
                optimizer=optimizer,
                config={
                    "train_micro_batch_size_per_gpu": max(
                        1, math.ceil(cfg.minibatch_size / group.world)
                    ),
                    "gradient_accumulation_steps": 1,
                    "gradient_clipping": cfg.grad_clip,
                    "zero_optimization": {"stage": cfg.zero_stage},
                    "zero_allow_untested_optimizer": True,
                    "zero_force_ds_cpu_optimizer": False,
                    "steps_per_print": 2**31 - 1,
                },
            )
            self._forward = self.ds
        else:
            self.optimizer = optimizer
            self._forward = nn.parallel.DistributedDataParallel(model) if group.world > 1 else model

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward(tokens)

    def step(self, loss: torch.Tensor) -> float:
        loss = loss * self.group.world  # the wrappers average gradients; we want their sum
        if self.ds is not None:
            self.ds.backward(loss)
            self.ds.step()
            norm = self.ds.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.module.parameters() if p.grad is not None]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.optimizer.step()
        return float(norm)
