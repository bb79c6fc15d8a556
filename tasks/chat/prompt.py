"""A prompt to answer: the dialogue so far (ending with a user turn) and what the judges need to
know about it. Prompts travel between tasks as plain dicts (Prefect task parameters, Parquet
rows), so `Prompt` is a TypedDict: the keys are checked by the type checker, not at run time."""

from __future__ import annotations

import random
from typing import Literal, TypedDict


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


def chitchat_openers(dialogues: list[dict], split: str) -> list[dict]:
    """Dialogues of `split` whose first user and assistant turns can open a conversation:
    benign chit-chat of at least two turns, without a GAtt instruction."""
    return [
        d
        for d in dialogues
        if d["split"] == split
        and not d["is_safety"]
        and d["instruction"] is None
        and d["source"] == "chitchat"
        and len(d["turns"]) >= 2
    ]


def with_openers(
    prompts: list[dict],
    openers: list[dict],
    share: float,
    rng: random.Random,
    kind: Literal["adversarial", "borderline"] = "adversarial",
) -> list[dict]:
    """`prompts` with round(`share` x n) of its n prompts of `kind` (safety-tagged; adversarial:
    with a risk category, borderline: without one), drawn with `rng`, asked after an opener's
    first two turns: the prompt id becomes `<opener id>>``<prompt id>`, as the multi-turn
    evaluation names its prompts.

    Why (issue 15): the rounds trained on first turns only, and the multi-turn violation rose
    over the rounds while the single-turn one did not (demo, seed 1234: 3.1 % at SFT, 28-56 %
    after V3 and distillation). Borderline prompts after an opener teach the other half: a
    benign request that sounds risky is still answered later in a conversation. Preference
    collection uses it too (`multi_turn_share`), so the reward models see such prompts."""
    if kind not in ("adversarial", "borderline"):
        raise ValueError(f"kind must be 'adversarial' or 'borderline', got {kind!r}")
    eligible = [
        i
        for i, p in enumerate(prompts)
        if p["is_safety"] and bool(p["risk_category"]) == (kind == "adversarial")
    ]
    if not openers or not eligible:
        return prompts
    out = list(prompts)
    for i in sorted(rng.sample(eligible, round(share * len(eligible)))):
        opener, p = rng.choice(openers), prompts[i]
        out[i] = {
            **p,
            "prompt_id": f"{opener['dialogue_id']}>{p['prompt_id']}",
            "turns": [*opener["turns"][:2], *p["turns"]],
            "reference": None,
        }
    return out
