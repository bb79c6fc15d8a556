"""RLHF stage configuration (RECIPE.md §7); composed into tasks/config.py's RecipeConfig."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.distributed.launch import LaunchConfig
from tasks.reward.config import CollectionConfig
from tasks.rlhf.dpo import DPOConfig
from tasks.rlhf.ppo import PPOConfig
from tasks.training.finetune import FinetuneConfig

# The models a round's preference collection can compare (two different ones per prompt):
# the newest policy, the one before it (the SFT model in round 2) and the SFT model.
ROUND_VARIANTS = ("latest", "previous", "sft")


class PromptCounts(BaseModel):
    """How many prompts of each kind (drawn from the SFT train dialogues, seeded)."""

    model_config = ConfigDict(extra="forbid")

    helpfulness: int = Field(64, ge=0)
    safety: int = Field(64, ge=0)  # adversarial and borderline


def _rs_finetune() -> FinetuneConfig:
    # "fine-tune on the best samples as in SFT": the SFT settings, one pass
    return FinetuneConfig(
        epochs=1.0,
        train={"lr": 2e-5, "weight_decay": 0.1, "batch_size": 64, "seq_len": 4096, "eval_every": 0},
    )


class RejectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: PromptCounts = PromptCounts()  # one fixed set for every round (so pooling can compare)
    k: int = Field(8, ge=1)  # samples per prompt (the paper's Fig. 7 goes to 100)
    temperature: float = Field(1.0, gt=0)  # Fig. 8: the best T after RLHF is 1.2-1.3
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(32, gt=0)  # generation batch
    # sampling the k answers on N ranks (tasks/chat/sharded.py), all k in one launch: the same
    # samples as one process (each generation batch is seeded, never each rank)
    launch: LaunchConfig = LaunchConfig()
    finetune: FinetuneConfig = Field(default_factory=_rs_finetune)


def _round_collection() -> CollectionConfig:
    return CollectionConfig(
        batches=1, helpfulness_prompts=100, safety_prompts=100, variants=["latest", "sft"]
    )


class RoundEvalConfig(BaseModel):
    """The per-round table: held-out prompts (SFT `heldout` split), greedy answers."""

    model_config = ConfigDict(extra="forbid")

    prompts: PromptCounts = PromptCounts()
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(32, gt=0)


class RlhfConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(5, ge=1)  # RLHF-V1..V5
    ppo_from: int = Field(4, ge=1)  # paper: rejection sampling only until V4, then RS + PPO
    rs_pool_from: int = Field(4, ge=1)  # paper V4: pick from the best samples of all rounds
    collection: CollectionConfig = Field(default_factory=_round_collection)  # per round >= 2
    rejection: RejectionConfig = RejectionConfig()
    ppo: PPOConfig = Field(
        default_factory=lambda: PPOConfig(
            iterations=200, batch_size=512, minibatch_size=64, max_new_tokens=48
        )
    )
    # the policy step of rounds >= ppo_from, after rejection sampling: PPO against the
    # safety-gated reward, or DPO on the round's preference pairs (no reward model in the loop)
    method: Literal["ppo", "dpo"] = "ppo"
    dpo: DPOConfig = DPOConfig()
    ppo_prompts: PromptCounts = PromptCounts(helpfulness=512, safety=512)
    validation_prompts: PromptCounts = PromptCounts(helpfulness=32, safety=32)  # PPO early stop
    evaluation: RoundEvalConfig = RoundEvalConfig()
    registered_model: str = "llama2-recipe-rlhf"
    # what R_c scores a borderline prompt (safety-tagged, no risk category: benign but risky-
    # sounding) with: "safety" = the paper's gate (R_s for every safety-tagged prompt);
    # "helpfulness" = R_h, the R_s < 0.15 gate still applying (rounds.prompt_sets)
    borderline_reward: Literal["safety", "helpfulness"] = "safety"
    # share of the adversarial prompts of the rs, ppo and validation sets that come after a
    # benign exchange (the first user and assistant turns of a train chit-chat dialogue), as
    # the multi-turn evaluation asks them; 0 = first turns only (rounds.with_openers)
    multi_turn_share: float = Field(0.0, ge=0, le=1)
    # the same for borderline prompts (safety-tagged, no risk category), drawn after the above
    multi_turn_borderline_share: float = Field(0.0, ge=0, le=1)
    # the final RLHF policy: the last round's model (1, the paper), or the uniform mean of the
    # weights of the last N rounds' models, registered and evaluated as version `rlhf-avg`
    # (tasks/rlhf/average.py); distillation starts from it. With fewer than N rounds (a preset
    # run with `--set rlhf.rounds=1`, say) all of them are averaged, and one round is not
    average_last: int = Field(1, ge=1)

    @property
    def averaged_rounds(self) -> int:
        """How many round models the final policy is the mean of (1: the last round as it is)."""
        return min(self.average_last, self.rounds)

    @model_validator(mode="after")
    def _variants_known(self) -> RlhfConfig:
        unknown = [v for v in self.collection.variants if v not in ROUND_VARIANTS]
        if unknown:
            raise ValueError(
                f"rlhf.collection.variants {unknown} unknown; a round can compare "
                f"{list(ROUND_VARIANTS)}"
            )
        return self
