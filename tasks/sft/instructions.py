"""Checkable instructions (RECIPE.md §8, paper §3.3) and single-turn demonstrations of them.

Hobby, answer style (capital letters, a sign-off) and persona, each with a full form ("You
enjoy tennis.") and a short one ("Hobby: tennis"), combined at random within an
`InstructionSpace`. Code can check an answer against them (`check`) and rewrite an answer so it
obeys (`apply`); `instruction_demos` turns train dialogues into single-turn demonstrations for
the base SFT set. Ghost Attention (gatt.py) and the multi-turn evaluation (multiturn.py) draw
and check the same instructions.

Pure code: dialogues are plain dicts shaped like a row of the `sft_dialogues` contract.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass

from tasks.sft.turns import exchange

KINDS = ("hobby", "capitals", "signoff", "persona")
HOBBIES = (
    "tennis",
    "chess",
    "gardening",
    "photography",
    "hiking",
    "cooking",
    "jazz",
    "astronomy",
    "cycling",
    "painting",
)
PERSONAS = (
    "Napoleon",
    "Cleopatra",
    "Albert Einstein",
    "Marie Curie",
    "Shakespeare",
    "Leonardo da Vinci",
    "Ada Lovelace",
    "Mozart",
    "Amelia Earhart",
    "Charles Darwin",
)
SIGN_OFF = "Cheers"
_FULL = {
    "hobby": "You enjoy {}.",
    "capitals": "Always answer in capital letters.",
    "signoff": "End every answer with '{}'.",
    "persona": "Act as {}.",
}
_SHORT = {
    "hobby": "Hobby: {}",
    "capitals": "Style: capital letters",
    "signoff": "Sign-off: {}",
    "persona": "Persona: {}",
}


@dataclass(frozen=True)
class Part:
    kind: str  # one of KINDS
    value: str = ""  # the hobby, the persona's name, the sign-off word; "" for capitals


@dataclass(frozen=True)
class Instruction:
    parts: tuple[Part, ...]
    short: bool = False  # render "Hobby: tennis" instead of "You enjoy tennis."

    def __post_init__(self):
        kinds = [p.kind for p in self.parts]
        if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(KINDS):
            raise ValueError(
                f"an instruction needs 1+ parts of distinct kinds from {KINDS}, got {kinds}"
            )

    @property
    def text(self) -> str:
        forms = _SHORT if self.short else _FULL
        return " ".join(forms[p.kind].format(p.value) for p in self.parts)

    def to_json(self) -> str:
        return json.dumps({"parts": [[p.kind, p.value] for p in self.parts], "short": self.short})

    @classmethod
    def from_json(cls, s: str) -> Instruction:
        spec = json.loads(s)
        return cls(tuple(Part(kind, value) for kind, value in spec["parts"]), bool(spec["short"]))


@dataclass(frozen=True)
class InstructionSpace:
    """Which instructions are drawn: the kinds, the hobbies and personas to pick from, and how
    many parts are combined. Smaller spaces suit small models (a preset may narrow them)."""

    kinds: tuple[str, ...] = KINDS
    hobbies: tuple[str, ...] = HOBBIES
    personas: tuple[str, ...] = PERSONAS
    max_parts: int = 2

    def __post_init__(self):
        if not self.kinds or not set(self.kinds) <= set(KINDS):
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if not self.hobbies or not self.personas:
            raise ValueError("an instruction space needs at least one hobby and one persona")


def sample_instruction(
    rng: random.Random,
    shorten_prob: float = 0.5,
    max_parts: int = 2,
    space: InstructionSpace | None = None,
) -> Instruction:
    """1..max_parts parts of distinct kinds; shortened with probability `shorten_prob`.
    With `space`, its kinds, hobbies, personas and max_parts are used instead of the defaults."""
    space = space or InstructionSpace(max_parts=max_parts)
    max_parts = space.max_parts
    if not 1 <= max_parts <= len(space.kinds):
        raise ValueError(f"max_parts must be in 1..{len(space.kinds)}, got {max_parts}")
    if not 0.0 <= shorten_prob <= 1.0:
        raise ValueError(f"shorten_prob must be in [0, 1], got {shorten_prob}")
    parts = []
    for kind in rng.sample(space.kinds, rng.randint(1, max_parts)):
        pool = {
            "hobby": space.hobbies,
            "persona": space.personas,
            "signoff": (SIGN_OFF,),
            "capitals": ("",),
        }[kind]
        parts.append(Part(kind, rng.choice(pool)))
    return Instruction(tuple(parts), short=rng.random() < shorten_prob)


def _mentions(text: str, phrase: str, at_end: bool = False) -> bool:
    """`phrase` as a whole word (case-insensitive), optionally as the last word of `text`."""
    pattern = rf"(?<!\w){re.escape(phrase)}(?!\w)" + ("$" if at_end else "")
    return re.search(pattern, text, re.IGNORECASE) is not None


def _part_ok(part: Part, answer: str) -> bool:
    if part.kind == "capitals":
        return any(c.isalpha() for c in answer) and not any(c.islower() for c in answer)
    if part.kind == "signoff":
        return _mentions(
            answer.rstrip(string.whitespace + string.punctuation), part.value, at_end=True
        )
    return _mentions(answer, part.value)  # hobby, persona


def check_parts(instr: Instruction, answer: str) -> dict[str, bool]:
    """Per part kind: does `answer` obey it?"""
    return {p.kind: _part_ok(p, answer) for p in instr.parts}


def check(instr: Instruction, answer: str) -> bool:
    return all(check_parts(instr, answer).values())


def apply(instr: Instruction, answer: str) -> str:
    """Rewrite `answer` so that `check(instr, answer)` holds; parts already obeyed are left alone.
    Capitals go last so they also cover the phrases the other parts add."""
    by_kind = {p.kind: p for p in instr.parts}
    out = answer.strip()
    if "hobby" in by_kind and not _part_ok(by_kind["hobby"], out):
        hobby = by_kind["hobby"].value
        out = f"Speaking as {'an' if hobby[0].lower() in 'aeiou' else 'a'} {hobby} lover: {out}"
    if "persona" in by_kind and not _part_ok(by_kind["persona"], out):
        out = f"{by_kind['persona'].value} here. {out}"
    if "signoff" in by_kind and not _part_ok(by_kind["signoff"], out):
        out = f"{out} {by_kind['signoff'].value}"
    if "capitals" in by_kind:
        if not any(c.isalpha() for c in out):  # "42" has no letter to capitalise
            out = f"Answer: {out}"
        out = out.upper()
    return out


def with_instruction(system: str, text: str) -> str:
    """The instruction as (the end of) the system prompt."""
    return f"{system}\n{text}" if system else text


def instruction_demos(
    dialogues: list[dict],
    n: int,
    seed: int,
    shorten_prob: float,
    space: InstructionSpace | None = None,
) -> tuple[list[dict], dict]:
    """Single-turn demonstrations of following an instruction (for annotator-written ones).

    From `n` seeded-chosen train dialogues (safety ones and rows that already carry an
    instruction are left out: a persona on an adversarial prompt teaches jailbreak compliance),
    take the first exchange, sample an instruction, put it in the system prompt or in front of
    the user message (50/50) and rewrite the answer with `apply`. The base SFT model thus learns
    to follow an instruction in the current turn only; keeping it for the rest of a dialogue is
    what Ghost Attention (`build_gatt`) adds.
    """
    pool = [
        d
        for d in dialogues
        if d["split"] == "train" and not d["is_safety"] and d["instruction"] is None
    ]
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    rows, kinds, placed = [], Counter(), Counter()
    for d in chosen:
        instr = sample_instruction(rng, shorten_prob, space=space)
        user, answer = d["turns"][0]["content"], d["turns"][1]["content"]
        in_system = rng.random() < 0.5
        placed["placed_system" if in_system else "placed_user"] += 1
        kinds.update(f"kind_{p.kind}" for p in instr.parts)
        rows.append(
            {
                "dialogue_id": f"instructions:{d['dialogue_id']}",
                "source": "instructions",
                "category": "instruction",
                "system": with_instruction(d["system"], instr.text) if in_system else d["system"],
                "turns": exchange(
                    user if in_system else f"{instr.text} {user}", apply(instr, answer)
                ),
                "is_safety": False,
                "risk_category": None,
                "reference": None,  # the answer was rewritten
                "instruction": instr.to_json(),
                "mask_strategy": None,
                "split": d["split"],
                "location": f"instruction_demos(seed={seed}) from {d['dialogue_id']}",
            }
        )
    stats = {
        "pool": len(pool),
        "requested": n,
        "rows": len(rows),
        "placed_system": 0,
        "placed_user": 0,
        "short": sum(Instruction.from_json(r["instruction"]).short for r in rows),
    }
    return rows, {**stats, **placed, **kinds}
