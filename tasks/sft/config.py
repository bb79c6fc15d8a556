"""SFT stage configuration (RECIPE.md §4 and §8); composed into tasks/config.py's RecipeConfig."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.chat.config import FormatConfig
from tasks.sft.curate import CurationConfig
from tasks.sft.dataset import SourcesConfig
from tasks.sft.instructions import HOBBIES, KINDS, PERSONAS, InstructionSpace
from tasks.training.finetune import FinetuneConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstructionsConfig(_Strict):
    """The checkable instructions (instructions.py) drawn for demonstrations, GAtt and Table 30."""

    kinds: list[Literal["hobby", "capitals", "signoff", "persona"]] = list(KINDS)
    hobbies: list[str] = list(HOBBIES)
    personas: list[str] = list(PERSONAS)
    max_parts: int = Field(2, ge=1, le=4)  # §3.3: instructions "randomly combined"
    shorten_prob: float = Field(0.5, ge=0, le=1)  # §3.3: shortened "half of the time"

    def space(self) -> InstructionSpace:
        return InstructionSpace(
            tuple(self.kinds), tuple(self.hobbies), tuple(self.personas), self.max_parts
        )


class InstructionDemosConfig(_Strict):
    """Single-turn demonstrations of following an instruction (instructions.instruction_demos)."""

    share: float = Field(0.15, ge=0, le=1)  # of the curated train dialogues


def _gatt_finetune() -> FinetuneConfig:
    return FinetuneConfig(epochs=1.0)


class GattConfig(_Strict):
    """Ghost Attention (§3.3): sampled multi-turn data, then a short fine-tune on it."""

    enabled: bool = True
    sources: list[str] = ["chitchat", "tasks"]  # multi-turn train dialogues to take user turns from
    dialogues: int = Field(200, gt=0)
    max_turns: int = Field(6, gt=0)  # user turns per GAtt dialogue
    samples_per_turn: int = Field(2, gt=0)  # tries per turn before the dialogue stops there
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_new_tokens: int = Field(48, gt=0)  # an answer cut short cannot end with its sign-off
    batch_size: int = Field(32, gt=0)
    replay_ratio: float = Field(1.0, ge=0)  # replayed SFT examples per GAtt example (no forgetting)
    finetune: FinetuneConfig = Field(default_factory=_gatt_finetune)


class MultiturnConfig(_Strict):
    """Table 30: does the answer at turn t still follow the first-turn instruction?"""

    sources: list[str] = ["chitchat", "tasks"]  # held-out dialogues the user turns come from
    conversations: int = Field(64, gt=0)
    turns: list[int] = [1, 2, 4, 6]  # the paper reports 2, 4, 6, 20; more where context allows
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(32, gt=0)


class MixConfig(_Strict):
    """What the fine-tuning set holds of each kind (tokenize.cap_adversarial)."""

    max_adversarial: int | None = Field(None, ge=0)  # refusal demonstrations; None = all


class SftConfig(_Strict):
    sources: SourcesConfig = SourcesConfig()
    mix: MixConfig = MixConfig()
    curation: CurationConfig = CurationConfig()
    instructions: InstructionsConfig = InstructionsConfig()
    instruction_demos: InstructionDemosConfig = InstructionDemosConfig()
    format: FormatConfig = FormatConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    gatt: GattConfig = GattConfig()
    multiturn: MultiturnConfig = MultiturnConfig()
    registered_model: str = "llama2-recipe-sft"  # MLflow model registry name
