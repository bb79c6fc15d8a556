"""How dialogues become training tokens: the settings every stage that fine-tunes shares."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tasks.chat.format import MaskStrategy


class FormatConfig(BaseModel):
    """How dialogues become training tokens (tasks/chat/format.py)."""

    model_config = ConfigDict(extra="forbid")

    # §3.1 zeroes the loss on user-prompt tokens and trains on every answer
    mask_strategy: MaskStrategy = MaskStrategy.ALL_ASSISTANT
    # token between packed examples; each example already opens with <s> and closes with </s>
    separator: Literal["none", "eos", "bos"] = "none"
    # attention inside a packed sequence: "causal" over the whole sequence (the paper's plain
    # concatenation: an example sees the unrelated ones before it) or "block_diagonal" (each
    # example sees only itself, positions restart at 0: as if it were trained alone)
    packing: Literal["causal", "block_diagonal"] = "causal"

    @property
    def block_diagonal(self) -> bool:
        return self.packing == "block_diagonal"

    def separator_ids(self, processor) -> list[int]:
        return {"none": [], "eos": [processor.eos_id()], "bos": [processor.bos_id()]}[
            self.separator
        ]
