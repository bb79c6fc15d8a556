"""Ghost Attention (RECIPE.md §8, paper §3.3) and its multi-turn evaluation (paper Table 30).

1. Checkable instructions: hobby, answer style (capital letters, a sign-off) and persona, each
   with a full form ("You enjoy tennis.") and a short one ("Hobby: tennis"), combined at random.
   Code can check an answer against them (`check`) and rewrite an answer so it obeys (`apply`).
2. `instruction_demos`: single-turn demonstrations of following an instruction, for the base SFT set.
3. `build_gatt`: the GAtt data, sampled turn by turn with a model (`AnswerFn`).
4. `eval_conversations` + `multiturn_recall`: does the instruction, given once in the system
   prompt, still hold at turn 2, 4, 6, 20?

Pure code: dialogues are plain dicts shaped like a row of the `sft_dialogues` contract.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable

# contexts (system prompt, turns ending with a user turn) and a seed -> the model's answer to each
# last user turn, or None when the context no longer fits the model.
AnswerFn = Callable[[list[tuple[str, list[dict]]], int], list[str | None]]

KINDS = ("hobby", "capitals", "signoff", "persona")
HOBBIES = ("tennis", "chess", "gardening", "photography", "hiking", "cooking", "jazz",
           "astronomy", "cycling", "painting")
PERSONAS = ("Napoleon", "Cleopatra", "Albert Einstein", "Marie Curie", "Shakespeare",
            "Leonardo da Vinci", "Ada Lovelace", "Mozart", "Amelia Earhart", "Charles Darwin")
SIGN_OFF = "Cheers"
_FULL = {"hobby": "You enjoy {}.", "capitals": "Always answer in capital letters.",
         "signoff": "End every answer with '{}'.", "persona": "Act as {}."}
_SHORT = {"hobby": "Hobby: {}", "capitals": "Style: capital letters",
          "signoff": "Sign-off: {}", "persona": "Persona: {}"}


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
            raise ValueError(f"an instruction needs 1+ parts of distinct kinds from {KINDS}, got {kinds}")

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


def sample_instruction(rng: random.Random, shorten_prob: float = 0.5, max_parts: int = 2,
                       space: InstructionSpace | None = None) -> Instruction:
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
        pool = {"hobby": space.hobbies, "persona": space.personas, "signoff": (SIGN_OFF,),
                "capitals": ("",)}[kind]
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
        return _mentions(answer.rstrip(string.whitespace + string.punctuation), part.value, at_end=True)
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


def _with_instruction(system: str, text: str) -> str:
    """The instruction as (the end of) the system prompt."""
    return f"{system}\n{text}" if system else text


def _users(dialogue: dict) -> list[str]:
    return [t["content"] for t in dialogue["turns"] if t["role"] == "user"]


def _exchange(user: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def _sub_seed(seed: int, turn: int, attempt: int) -> int:
    """A distinct, reproducible seed per (turn, try); str seeding is hash-randomisation free."""
    return random.Random(f"{seed}:{turn}:{attempt}").randrange(2**31)


def _answer_all(answer_fn: AnswerFn, contexts: list, seed: int, batch_size: int) -> list:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start:start + batch_size]
        answers = list(answer_fn(chunk, seed))
        if len(answers) != len(chunk):
            raise ValueError(f"answer_fn returned {len(answers)} answers for {len(chunk)} contexts")
        out.extend(answers)
    return out


def instruction_demos(dialogues: list[dict], n: int, seed: int, shorten_prob: float,
                      space: InstructionSpace | None = None) -> tuple[list[dict], dict]:
    """Single-turn demonstrations of following an instruction, standing in for annotator-written ones.

    From `n` seeded-chosen train dialogues (safety ones and rows that already carry an
    instruction are left out: a persona on an adversarial prompt teaches jailbreak compliance),
    take the first exchange, sample an instruction, put it in the system prompt or in front of
    the user message (50/50) and rewrite the answer with `apply`. The base SFT model thus learns
    to follow an instruction in the current turn only; keeping it for the rest of a dialogue is
    what Ghost Attention (`build_gatt`) adds.
    """
    pool = [d for d in dialogues if d["split"] == "train" and not d["is_safety"] and d["instruction"] is None]
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    rows, kinds, placed = [], Counter(), Counter()
    for d in chosen:
        instr = sample_instruction(rng, shorten_prob, space=space)
        user, answer = d["turns"][0]["content"], d["turns"][1]["content"]
        in_system = rng.random() < 0.5
        placed["placed_system" if in_system else "placed_user"] += 1
        kinds.update(f"kind_{p.kind}" for p in instr.parts)
        rows.append({
            "dialogue_id": f"instructions:{d['dialogue_id']}", "source": "instructions",
            "category": "instruction",
            "system": _with_instruction(d["system"], instr.text) if in_system else d["system"],
            "turns": _exchange(user if in_system else f"{instr.text} {user}", apply(instr, answer)),
            "is_safety": False, "risk_category": None, "reference": None,  # the answer was rewritten
            "instruction": instr.to_json(), "mask_strategy": None, "split": d["split"],
            "location": f"instruction_demos(seed={seed}) from {d['dialogue_id']}",
        })
    stats = {"pool": len(pool), "requested": n, "rows": len(rows), "placed_system": 0,
             "placed_user": 0, "short": sum(Instruction.from_json(r["instruction"]).short for r in rows)}
    return rows, {**stats, **placed, **kinds}


@dataclass
class _GattRun:
    """One source dialogue being sampled turn by turn."""
    row: dict
    instr: Instruction
    users: list[str]  # original user messages, at most max_turns
    answers: list[str]  # kept (instruction-satisfying) sampled answers
    stop: tuple[str, str] | None = None  # (reason, detail) once sampling stopped early
    failed: tuple[str, ...] = ()  # the kinds the latest rejected answer did not obey

    def context(self) -> tuple[str, list[dict]]:
        """Instruction on EVERY user message; the history holds the kept sampled answers."""
        said = [f"{self.instr.text} {u}" for u in self.users]
        turns = [t for u, a in zip(said, self.answers) for t in _exchange(u, a)]
        return self.row["system"], turns + [{"role": "user", "content": said[len(self.answers)]}]


def build_gatt(dialogues: list[dict], answer_fn: AnswerFn, seed: int, samples_per_turn: int = 2,
               shorten_prob: float = 0.5, max_turns: int = 6, batch_size: int = 32,
               space: InstructionSpace | None = None) -> tuple[list[dict], list[tuple[dict, str, str]], dict]:
    """Ghost Attention training data (RECIPE.md §8) -> (examples, excluded, stats).

    For each dialogue with >= 2 user turns (single-turn ones are skipped and counted), the
    i-th such dialogue gets the i-th draw of `sample_instruction(random.Random(seed), shorten_prob)`.
    Its text is put in front of every user message (up to `max_turns`) and `answer_fn` answers
    turn by turn, batched across dialogues; the source's assistant answers are discarded. Each
    turn gets up to `samples_per_turn` tries with different seeds, the first answer that
    satisfies `check` is kept and fed back as history. The dialogue stops at the first turn
    no try satisfies (or whose context no longer fits: answer None).

    The kept turns 1..k are rewritten with the instruction ONLY in the system prompt of the
    first turn and the user messages restored. Prefix choice: one example per prefix
    t = 1..k (`turns[:2t]`, mask_strategy "last_turn"), so every kept answer is the trained
    turn once while all earlier tokens, assistant ones included, carry no loss (the paper's
    zero loss on previous turns): each answer is learned with the instruction only in the
    system prompt, t turns back. Costs O(k^2) tokens, bounded by `max_turns`.
    Dialogues with k = 0 come back in `excluded` as (row, reason, detail).
    """
    if samples_per_turn < 1 or max_turns < 1:
        raise ValueError(f"samples_per_turn and max_turns must be >= 1, got {samples_per_turn}, {max_turns}")
    rng = random.Random(seed)
    runs = [_GattRun(d, sample_instruction(rng, shorten_prob, space=space), _users(d)[:max_turns], [])
            for d in dialogues if len(_users(d)) >= 2]
    counts, part_ok, part_seen = Counter(), Counter(), Counter()
    for turn in range(max_turns):
        pending = [r for r in runs if r.stop is None and turn < len(r.users)]
        counts["turns_sampled"] += len(pending)
        for attempt in range(samples_per_turn):
            if not pending:
                break
            answers = _answer_all(answer_fn, [r.context() for r in pending],
                                  _sub_seed(seed, turn, attempt), batch_size)
            counts["tries"] += len(pending)
            still = []
            for run, answer in zip(pending, answers):
                if answer is None:
                    run.stop = ("gatt_context_too_long", f"turn {turn + 1}: the context no longer fits the model")
                    continue
                parts = check_parts(run.instr, answer)
                part_seen.update(parts.keys())
                part_ok.update(k for k, ok in parts.items() if ok)
                if all(parts.values()):
                    run.answers.append(answer)
                    counts["turns_satisfied"] += 1
                else:
                    run.failed = tuple(k for k, ok in parts.items() if not ok)
                    still.append(run)
            pending = still
        for run in pending:
            run.stop = ("gatt_instruction_unmet", f"turn {turn + 1}: no answer in {samples_per_turn} "
                        f"tries satisfied {run.instr.text!r} (failed: {', '.join(run.failed)})")

    examples, excluded = [], []
    for run in runs:
        if not run.answers:
            excluded.append((run.row, *run.stop))
            counts[f"excluded_{run.stop[0]}"] += 1
            continue
        examples.extend(_gatt_examples(run, seed))
    kinds = Counter(p.kind for r in runs for p in r.instr.parts)
    kept = Counter(p.kind for r in runs if r.answers for p in r.instr.parts)
    stats = {
        "dialogues": len(runs), "skipped_single_turn": len(dialogues) - len(runs),
        "dialogues_kept": sum(bool(r.answers) for r in runs),
        "dialogues_all_turns": sum(len(r.answers) == len(r.users) for r in runs),
        "turns_sampled": 0, "turns_satisfied": 0, "tries": 0, **counts, "examples": len(examples),
        **{f"keep_rate_{k}": kept[k] / kinds[k] for k in kinds},
        **{f"part_rate_{k}": part_ok[k] / part_seen[k] for k in part_seen},
    }
    return examples, excluded, stats


def _gatt_examples(run: _GattRun, seed: int) -> list[dict]:
    """One example per kept prefix, instruction in the system prompt only, users restored."""
    orig = run.row["dialogue_id"]
    turns = [t for u, a in zip(run.users, run.answers) for t in _exchange(u, a)]
    return [{
        "dialogue_id": f"gatt:{orig}:{t}", "source": "gatt", "category": "gatt",
        "system": _with_instruction(run.row["system"], run.instr.text), "turns": turns[:2 * t],
        "is_safety": run.row["is_safety"], "risk_category": run.row["risk_category"],
        "reference": None,  # sampled answers; the source's reference no longer applies
        "instruction": run.instr.to_json(), "mask_strategy": "last_turn", "split": run.row["split"],
        "location": f"build_gatt(seed={seed}) from {orig}, turns 1..{t}",
    } for t in range(1, len(run.answers) + 1)]


def eval_conversations(dialogues: list[dict], n: int, user_turns: int, seed: int,
                       shorten_prob: float, space: InstructionSpace | None = None) -> list[dict]:
    """`n` held-out conversations of exactly `user_turns` user messages, each with an instruction.

    User messages come from held-out, non-safety dialogues without an instruction, in a seeded
    order; when one dialogue is too short the next one's user turns are appended (the pool is
    reshuffled and reused once exhausted). `sources` lists the dialogues used.
    """
    pool = [d for d in dialogues if d["split"] == "heldout" and not d["is_safety"] and d["instruction"] is None]
    if not pool:
        raise ValueError("eval_conversations needs held-out dialogues (split 'heldout'); none were given")
    if user_turns < 1:
        raise ValueError(f"user_turns must be >= 1, got {user_turns}")
    rng = random.Random(seed)
    queue: list[dict] = []
    conversations = []
    for i in range(n):
        users, sources = [], []
        while len(users) < user_turns:
            if not queue:
                queue = rng.sample(pool, len(pool))
            d = queue.pop()
            users += _users(d)[:user_turns - len(users)]
            sources.append(d["dialogue_id"])
        instr = sample_instruction(rng, shorten_prob, space=space)
        conversations.append({"id": f"multiturn:{seed}:{i}", "instruction": instr.to_json(),
                              "users": users, "sources": sources})
    return conversations


def multiturn_recall(conversations: list[dict], answer_fn: AnswerFn, turns: tuple[int, ...], seed: int,
                     batch_size: int = 32) -> tuple[list[dict], list[dict]]:
    """Instruction recall per turn (paper Table 30) -> (table rows, transcripts).

    The instruction is ONLY in the system prompt; the user messages are the plain ones and the
    model's own answers are fed back. At turn t the table counts the conversations that got an
    answer there (`evaluated`) and those whose answer satisfies every part (`satisfied`);
    conversations shorter than t or stopped by a context that no longer fits (None) are not
    evaluated, so `recall` is None where nothing was. An empty answer is evaluated (it obeys no
    instruction) and ends its conversation: a blank assistant turn has no chat-format rendering
    to feed back. `stop_reason` says why a conversation stopped early.
    """
    if not turns or min(turns) < 1:
        raise ValueError(f"turns must be 1-based turn numbers, got {turns}")
    instrs = [Instruction.from_json(c["instruction"]) for c in conversations]
    transcripts = [{"id": c["id"], "instruction": c["instruction"], "system": instr.text,
                    "turns": [], "stopped_at": None, "stop_reason": None} for c, instr in zip(conversations, instrs)]
    for turn in range(max(turns)):
        active = [i for i, (c, tr) in enumerate(zip(conversations, transcripts))
                  if tr["stopped_at"] is None and turn < len(c["users"])]
        if not active:
            break
        contexts = []
        for i in active:
            history = [t for x in transcripts[i]["turns"] for t in _exchange(x["user"], x["answer"])]
            user = {"role": "user", "content": conversations[i]["users"][turn]}
            contexts.append((transcripts[i]["system"], history + [user]))
        answers = _answer_all(answer_fn, contexts, _sub_seed(seed, turn, 0), batch_size)
        for i, answer in zip(active, answers):
            if answer is None:
                transcripts[i].update(stopped_at=turn + 1, stop_reason="context_too_long")
                continue
            parts = check_parts(instrs[i], answer)
            transcripts[i]["turns"].append({"turn": turn + 1, "user": conversations[i]["users"][turn],
                                            "answer": answer, "satisfied": all(parts.values()),
                                            "parts": parts})
            if not answer.strip():
                transcripts[i].update(stopped_at=turn + 2, stop_reason="empty_answer")
    table = []
    for t in turns:
        reached = [tr["turns"][t - 1] for tr in transcripts if len(tr["turns"]) >= t]
        satisfied = sum(x["satisfied"] for x in reached)
        table.append({"turn": t, "evaluated": len(reached), "satisfied": satisfied,
                      "recall": satisfied / len(reached) if reached else None})
    return table, transcripts
