"""Training settings shared by pretraining, SFT, rejection-sampling fine-tuning and distillation.

Defaults are the paper's pretraining values (Touvron et al., 2023, §2.2: "AdamW with beta1 0.9,
beta2 0.95, eps 1e-5, cosine schedule with 2000 warmup steps, decay to 10 % of peak, weight
decay 0.1, gradient clipping 1.0"); presets in configs/ shrink the step counts. Stages override
what the paper sets differently (SFT: lr 2e-5, §3.1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- length and batch -------------------------------------------------------------------
    max_steps: int = Field(1000, gt=0)  # optimizer steps; the paper trains 7B on 2T tokens
    batch_size: int = Field(8, gt=0)  # sequences per micro-batch per rank
    seq_len: int = Field(256, gt=0)  # §2.2: 4096 (context length); presets shrink it
    grad_accum_steps: int = Field(1, gt=0)  # micro-batches per step; paper: 4M-token global batch

    # --- optimizer and schedule (§2.2) --------------------------------------------------------
    lr: float = Field(3e-4, gt=0)  # peak lr: 3e-4 for 7B/13B, 1.5e-4 for 34B/70B; SFT 2e-5 (§3.1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to 10 % of peak
    warmup_steps: int = Field(2000, ge=0)  # 2000 linear warmup steps; presets shrink
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW beta1, beta2
    eps: float = Field(1e-5, gt=0)  # AdamW epsilon
    weight_decay: float = Field(0.1, ge=0)  # on weight matrices only (not norms, not embeddings)
    grad_clip: float = Field(1.0, ge=0)  # global grad-norm clip; 0 = off

    # --- numerics and speed (project choices; not set by the paper) ---------------------------
    # bf16 = autocast (torch) or DeepSpeed bf16 mode; auto = bf16 where this CPU/GPU multiplies
    # bf16 faster than fp32 (tasks/training/mfu.py `faster_dtype`), else fp32
    dtype: Literal["fp32", "bf16", "auto"] = "fp32"
    compile: bool = False  # torch.compile the model's forward (torch engine only)
    threads: int = Field(2, gt=0)  # torch intra-op threads: set explicitly on shared cores
    seed: int = 1234

    # --- cadence (0 = never; the last step always logs, evaluates and checkpoints) ------------
    log_every: int = Field(10, ge=0)
    eval_every: int = Field(100, ge=0)
    eval_batches: int = Field(8, gt=0)  # validation micro-batches per evaluation
    checkpoint_every: int = Field(200, ge=0)
    keep_checkpoints: int = Field(2, ge=0)  # newest step folders kept; 0 = keep all
    sample_every: int = Field(0, ge=0)  # calls sample_fn(model, step) and logs its text

    # --- engine (DESIGN.md "Scale-out path") ---------------------------------------------------
    engine: Literal["torch", "deepspeed"] = "torch"  # plain PyTorch (CPU default) or DeepSpeed
    zero_stage: int = Field(0, ge=0, le=3)  # DeepSpeed ZeRO stage
    offload_optimizer: bool = False  # DeepSpeed ZeRO-Offload of optimizer state to CPU

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}): "
                "shrink warmup_steps with the run (the paper's 2000 is for 500k-step runs)"
            )
        if self.engine == "torch" and (self.zero_stage or self.offload_optimizer):
            raise ValueError("zero_stage and offload_optimizer need engine='deepspeed'")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1 (ZeRO-Offload)")
        if self.compile and self.engine != "torch":
            raise ValueError("compile is supported with engine='torch' only")
        return self

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step on one rank (times world size for the global batch)."""
        return self.batch_size * self.seq_len * self.grad_accum_steps
