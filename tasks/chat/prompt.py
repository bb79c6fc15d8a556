"""A prompt to answer: the dialogue so far (ending with a user turn) and what the judges need to
know about it. Prompts travel between tasks as plain dicts (Prefect task parameters, Parquet
rows), so `Prompt` is a TypedDict: the keys are checked by the type checker, not at run time."""

from __future__ import annotations

from typing import TypedDict


class Prompt(TypedDict):
    """One prompt, as RLHF, distillation and evaluation pass it around."""

    prompt_id: str
    system: str  # the system prompt ("" for none)
    turns: list[dict]  # [{"role", "content"}, ...] ending with a user turn
    is_safety: bool  # tagged as possibly eliciting unsafe answers (IS_SAFETY in RECIPE.md §7)
    category: str
    risk_category: str | None
    source: str
    reference: str | None  # a checkable answer, for single-turn task prompts


RISK_CATEGORIES = ("illicit_criminal", "hateful_harmful", "unqualified_advice")


def prompt_pool(dialogues: list[dict], split: str = "train") -> dict[str, list[Prompt]]:
    """Candidate prompts from the SFT dialogues of one split (collection and RLHF train on
    "train"; held-out prompts stay unseen until evaluation): the first user turn of each, with
    its tags. Instruction demonstrations and GAtt rows are left out (their prompts carry an
    instruction)."""
    pool: dict[str, list[Prompt]] = {"helpfulness": [], "safety": []}
    for d in dialogues:
        if d["split"] != split or d["instruction"] is not None:
            continue
        single = len(d["turns"]) == 2
        prompt = {
            "prompt_id": d["dialogue_id"],
            "system": d["system"],
            "turns": d["turns"][:1],
            "is_safety": d["is_safety"],
            "category": d["category"],
            "risk_category": d["risk_category"],
            "source": d["source"],
            "reference": d["reference"] if single else None,
        }
        pool["safety" if d["is_safety"] else "helpfulness"].append(prompt)
    return pool
