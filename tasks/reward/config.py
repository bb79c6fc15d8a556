"""Reward stage configuration (RECIPE.md §5, §6); composed into tasks/config.py's RecipeConfig."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.preferences.collect import CollectionConfig
from tasks.training.finetune import FinetuneConfig


def _rm_training() -> FinetuneConfig:
    # §3.2.2: 1 epoch, lr 1e-5 with cosine to 10 %, warmup 3 % of steps (at least 5)
    return FinetuneConfig(
        epochs=1.0,
        warmup_ratio=0.03,
        min_warmup_steps=5,
        train={"lr": 1e-5, "min_lr_ratio": 0.1, "batch_size": 16, "seq_len": 256},
    )


class RewardModelConfig(BaseModel):
    """One reward model: its margin scheme, safety auxiliary loss and training (batch = pairs)."""

    model_config = ConfigDict(extra="forbid")

    margin: Literal["none", "small", "large"] = "small"  # Table 27-28: small is the paper's pick
    safety_aux_weight: float = Field(0.0, ge=0)  # our BCE on each response's safe label
    # pairs of the other kind in the mix (data.data_mix): "all" is §3.2.2's; "benign" keeps only
    # those whose prompt is not adversarial (for the Helpfulness RM: borderline safety pairs,
    # where the helpful answer wins, never an adversarial pair won by a refusal); "none"
    other_pairs: Literal["all", "benign", "none"] = "all"
    training: FinetuneConfig = Field(default_factory=_rm_training)
    registered_model: str


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionConfig = CollectionConfig()
    annotator: RuleAnnotatorConfig = RuleAnnotatorConfig()
    helpfulness: RewardModelConfig = RewardModelConfig(
        registered_model="llama2-recipe-rm-helpfulness"
    )
    safety: RewardModelConfig = RewardModelConfig(
        registered_model="llama2-recipe-rm-safety", safety_aux_weight=1.0
    )
    safety_share: float = Field(0.9, gt=0, le=1)  # §3.2.2: Safety RM data 90/10 safety/helpfulness
    thresholds: list[float] = [0.5, 0.15]  # unsafe recall/precision cut-offs on sigmoid scores
    margin_ablation: list[Literal["none", "small", "large"]] = []  # Helpfulness RM, one per scheme

    def seq_len(self, rm: Literal["helpfulness", "safety"]) -> int:
        """The sequence length reward model `rm` was trained (and so scores) at."""
        return getattr(self, rm).training.train.seq_len
