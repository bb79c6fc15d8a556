"""Engines: how one micro-batch's forward/backward and one optimizer step run.

The training loop (loop.py) only talks to an `Engine`; two implement it:
- `TorchEngine`: plain PyTorch, the CPU default. Optional bf16 autocast and torch.compile;
  DistributedDataParallel when launched on several ranks (`torchrun --nproc_per_node N`).
- `DeepSpeedEngine`: `deepspeed.initialize` with ZeRO stage, bf16 and optimizer offload from the
  config (the scale-out path; `deepspeed --num_gpus N` or torchrun). It is handed the same torch
  AdamW and LambdaLR as the torch engine, so both engines follow the paper's optimizer.

Gradient accumulation has one meaning in both: `backward(loss)` adds loss / grad_accum_steps
to the gradients, `step()` clips, updates, advances the schedule, zeroes the gradients and
returns the pre-clip gradient norm.

A micro-batch may carry segment ids (packed examples): `forward(x, y, segments)` then gives the
model positions and a block-diagonal mask (models.llama.segment_layout), one example per block.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
import torch.nn as nn

from models.llama import segment_layout
from tasks.training.checkpoint import MODEL_FILE, load_weights, save_weights
from tasks.training.config import TrainConfig
from tasks.training.optim import build_optimizer, build_scheduler

OPTIMIZER_FILE = "optimizer.pt"  # torch engine: optimizer + scheduler state (weights_only)
DEEPSPEED_DIR = "deepspeed"  # DeepSpeed engine: its own (per-rank, ZeRO-partitioned) files
DEEPSPEED_TAG = "state"


class Engine(Protocol):
    module: nn.Module  # the bare model (weights, sampling); never a wrapper
    rank: int
    world_size: int
    device: torch.device

    # training loss; segments (B, T): attend within each packed example only
    def forward(self, x: torch.Tensor, y: torch.Tensor, segments=None) -> torch.Tensor: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> float: ...
    def zero_grad(self) -> None: ...
    def eval_loss(self, x: torch.Tensor, y: torch.Tensor, segments=None) -> float: ...
    @property
    def lr(self) -> float: ...
    def state_dict(self) -> dict: ...
    def save(self, folder: Path) -> None: ...
    def load(self, folder: Path) -> None: ...
    def barrier(self) -> None: ...


def layout(segments: torch.Tensor | None, device: torch.device) -> dict:
    """The model's keyword arguments for a micro-batch's segment ids: none for plain causal."""
    if segments is None:
        return {}
    positions, mask = segment_layout(segments.to(device))
    return {"positions": positions, "attention_mask": mask}


def make_engine(model: nn.Module, cfg: TrainConfig, work_dir: Path | None = None) -> Engine:
    if cfg.engine == "deepspeed":
        return DeepSpeedEngine(model, cfg, work_dir)
    return TorchEngine(model, cfg)


def launched_world_size() -> int:
    """WORLD_SIZE set by torchrun / the deepspeed launcher, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group, or form a one-process group (127.0.0.1, a free port).

    Returns (rank, world_size). gloo on CPU, nccl on GPU. A group of one is formed without
    touching the environment: RANK in os.environ means "this process is a launched rank"
    (tasks/distributed/launch.py), so setting it here would make a later step of the same
    process that should launch N ranks run in-process instead, on 1/N of its global batch.
    """
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "RANK" in os.environ:  # launched by torchrun/deepspeed: the launcher's group
            dist.init_process_group(backend)
        else:  # a group of one; DeepSpeed insists on LOCAL_RANK, which means nothing else here
            os.environ.setdefault("LOCAL_RANK", "0")
            dist.init_process_group(
                backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
            )
    return dist.get_rank(), dist.get_world_size()


def local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class TorchEngine:
    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.cfg = cfg
        self.device = local_device()
        self.module = model.to(self.device)
        self.rank, self.world_size = init_distributed() if launched_world_size() > 1 else (0, 1)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        wrapped = model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self._forward = torch.compile(wrapped) if cfg.compile else wrapped

    def _autocast(self):
        if self.cfg.dtype == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def forward(self, x, y, segments=None):
        with self._autocast():
            _, loss = self._forward(
                x.to(self.device), y.to(self.device), **layout(segments, self.device)
            )
        return loss

    def backward(self, loss):
        (loss / self.cfg.grad_accum_steps).backward()

    def step(self) -> float:
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.zero_grad()
        return float(norm)

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_loss(self, x, y, segments=None) -> float:
        self.module.eval()  # the bare module: no DDP sync, no recompilation for eval mode
        with self._autocast():
            _, loss = self.module(
                x.to(self.device), y.to(self.device), **layout(segments, self.device)
            )
        self.module.train()
        return float(loss)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def save(self, folder: Path) -> None:
        if self.rank == 0:  # every rank holds the same replica
            save_weights(self.module, folder / MODEL_FILE)
            torch.save(self.state_dict(), folder / OPTIMIZER_FILE)

    def load(self, folder: Path) -> None:
        load_weights(self.module, folder / MODEL_FILE)
        state = torch.load(folder / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


class DeepSpeedEngine:
    def __init__(self, model: nn.Module, cfg: TrainConfig, work_dir: Path | None = None):
        if work_dir is not None:  # any op DeepSpeed still JIT-builds lands in the run, not ~/.cache
            os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(work_dir) / "torch_extensions"))
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory allreduce on first use (30-50 s)
        # and has no switch for it; gloo does the same collectives, so mark the op unavailable.
        # (The dict is DeepSpeed's per-process cache of op compatibility; edits persist.)
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.cfg = cfg
        self.rank, self.world_size = init_distributed()
        self.module = model
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg)
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg)
        )
        self.device = self.ds.device

    def forward(self, x, y, segments=None):
        _, loss = self.ds(x.to(self.device), y.to(self.device), **layout(segments, self.device))
        return loss

    def backward(self, loss):
        self.ds.backward(loss)  # scales by 1 / gradient_accumulation_steps
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()  # DeepSpeed counts micro-steps; it updates only at the boundary

    def step(self) -> float:
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def zero_grad(self):
        self.ds.zero_grad()

    @torch.no_grad()
    def eval_loss(self, x, y, segments=None) -> float:
        self.ds.eval()
        _, loss = self.ds(x.to(self.device), y.to(self.device), **layout(segments, self.device))
        self.ds.train()
        return float(loss)

    @property
    def lr(self) -> float:
        return self.ds.get_lr()[0]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def save(self, folder: Path) -> None:
        # every rank writes its ZeRO partition; rank 0 also the full weights as safetensors
        self.ds.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, save_latest=False)
        weights = self._full_state_dict()
        if self.rank == 0:
            save_weights(self.module, folder / MODEL_FILE, weights)

    def load(self, folder: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state under {folder / DEEPSPEED_DIR}")

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights on rank 0 (empty elsewhere). ZeRO-3 partitions every parameter, so they
        are gathered one at a time (a collective on all ranks): the whole model never has to
        fit on one device at once, and only rank 0 keeps a CPU copy."""
        if self.cfg.zero_stage < 3:
            return self.module.state_dict() if self.rank == 0 else {}
        import deepspeed

        state = {}
        for name, param in self.module.named_parameters():
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if self.rank == 0:
                    state[name] = param.detach().cpu().clone()
        return state

    def barrier(self) -> None:
        dist.barrier()


def deepspeed_config(cfg: TrainConfig) -> dict:
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.dtype == "bf16"},  # DeepSpeed bf16: bf16 weights, fp32 master copy
        # our torch AdamW, not DeepSpeed's JIT-built FusedAdam/CPUAdam
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,  # the loop logs
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
