"""Safety context distillation configuration (RECIPE.md §9); composed into RecipeConfig."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.distributed.launch import LaunchConfig
from tasks.training.finetune import FinetuneConfig


def _distill_finetune() -> FinetuneConfig:
    # fine-tuned "as in SFT" on the distilled answers: the SFT settings, one pass
    return FinetuneConfig(
        epochs=1.0,
        train={"lr": 2e-5, "weight_decay": 0.1, "batch_size": 64, "seq_len": 4096, "eval_every": 0},
    )


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    prompts: int = Field(512, ge=1)  # adversarial train prompts (DoNotAnswer, train split)
    template_share: float = Field(
        0.5, ge=0, le=1
    )  # per-category answer template vs generic preprompt
    min_gain: float = Field(
        0.0, ge=0
    )  # keep only when the Safety RM gain is above this (paper: > 0)
    # at most this many kept answers with the same text (the largest gains; the others dropped
    # as `repeated_answer`); None = no cap (the paper's rule). min_kept counts after the cap
    max_per_answer: int | None = Field(None, ge=1)
    # a preprompted answer cut off at max_new_tokens is cut back to its last complete sentence
    # (at least 4 words) and scored, kept or dropped as an answer that ended; the row says so
    # (`trimmed_with`). False = the paper's rule: a cut-off answer is never a target (`cut_off`)
    trim_cut_off: bool = False
    # fine-tune only when at least this many answers were kept; fewer leave the policy as it is.
    # A handful of examples is one or two optimizer steps, and Adam's first steps move every
    # weight by about the learning rate whatever the evidence: measured, 7 kept answers (+10
    # replayed, 2 steps) took violation from 3 % to 88 % (README "Safety context distillation")
    min_kept: int = Field(1, ge=1)
    # benign train prompts (helpfulness and borderline) the policy answers itself, greedily and
    # without a preprompt, fine-tuned on beside the distilled refusals: per kept answer. 0 = the
    # paper's recipe (refusals only), which at small scale moves every answer towards a refusal
    replay_ratio: float = Field(0.0, ge=0)
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(32, gt=0)
    # answering (with and without the preprompt, and the replayed benign answers) on N ranks
    # (tasks/chat/sharded.py): the same greedy answers as one process
    launch: LaunchConfig = LaunchConfig()
    finetune: FinetuneConfig = Field(default_factory=_distill_finetune)
    registered_model: str = "llama2-recipe-distilled"
