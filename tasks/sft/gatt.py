"""Ghost Attention (RECIPE.md §8, paper §3.3): `build_gatt` samples GAtt training data turn by
turn with a model (`AnswerFn`), an instruction on every user message, and keeps the turns that
obey it with the instruction only in the system prompt. The instructions and their checks are
in instructions.py; the multi-turn evaluation (paper Table 30) is in multiturn.py.

Pure code: dialogues are plain dicts shaped like a row of the `sft_dialogues` contract.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from tasks.sft.instructions import (
    Instruction,
    InstructionSpace,
    check_parts,
    sample_instruction,
    with_instruction,
)
from tasks.sft.turns import AnswerFn, answer_all, exchange, sub_seed, user_messages


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
        turns = [t for u, a in zip(said, self.answers) for t in exchange(u, a)]
        return self.row["system"], turns + [{"role": "user", "content": said[len(self.answers)]}]


def build_gatt(
    dialogues: list[dict],
    answer_fn: AnswerFn,
    seed: int,
    samples_per_turn: int = 2,
    shorten_prob: float = 0.5,
    max_turns: int = 6,
    batch_size: int = 32,
    space: InstructionSpace | None = None,
) -> tuple[list[dict], list[tuple[dict, str, str]], dict]:
    """Ghost Attention training data (RECIPE.md §8) -> (examples, excluded, stats).

    For each dialogue with >= 2 user turns (single-turn ones are skipped and counted), the
    i-th such dialogue gets the i-th draw of
    `sample_instruction(random.Random(seed), shorten_prob)`.
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
        raise ValueError(
            f"samples_per_turn and max_turns must be >= 1, got {samples_per_turn}, {max_turns}"
        )
    rng = random.Random(seed)
    runs = [
        _GattRun(
            d, sample_instruction(rng, shorten_prob, space=space), user_messages(d)[:max_turns], []
        )
        for d in dialogues
        if len(user_messages(d)) >= 2
    ]
    counts, part_ok, part_seen = Counter(), Counter(), Counter()
    for turn in range(max_turns):
        pending = [r for r in runs if r.stop is None and turn < len(r.users)]
        counts["turns_sampled"] += len(pending)
        for attempt in range(samples_per_turn):
            if not pending:
                break
            answers = answer_all(
                answer_fn, [r.context() for r in pending], sub_seed(seed, turn, attempt), batch_size
            )
            counts["tries"] += len(pending)
            still = []
            for run, answer in zip(pending, answers):
                if answer is None:
                    run.stop = (
                        "gatt_context_too_long",
                        f"turn {turn + 1}: the context no longer fits the model",
                    )
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
            run.stop = (
                "gatt_instruction_unmet",
                f"turn {turn + 1}: no answer in {samples_per_turn} "
                f"tries satisfied {run.instr.text!r} (failed: {', '.join(run.failed)})",
            )

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
        "dialogues": len(runs),
        "skipped_single_turn": len(dialogues) - len(runs),
        "dialogues_kept": sum(bool(r.answers) for r in runs),
        "dialogues_all_turns": sum(len(r.answers) == len(r.users) for r in runs),
        "turns_sampled": 0,
        "turns_satisfied": 0,
        "tries": 0,
        **counts,
        "examples": len(examples),
        **{f"keep_rate_{k}": kept[k] / kinds[k] for k in kinds},
        **{f"part_rate_{k}": part_ok[k] / part_seen[k] for k in part_seen},
    }
    return examples, excluded, stats


def _gatt_examples(run: _GattRun, seed: int) -> list[dict]:
    """One example per kept prefix, instruction in the system prompt only, users restored."""
    orig = run.row["dialogue_id"]
    turns = [t for u, a in zip(run.users, run.answers) for t in exchange(u, a)]
    return [
        {
            "dialogue_id": f"gatt:{orig}:{t}",
            "source": "gatt",
            "category": "gatt",
            "system": with_instruction(run.row["system"], run.instr.text),
            "turns": turns[: 2 * t],
            "is_safety": run.row["is_safety"],
            "risk_category": run.row["risk_category"],
            "reference": None,  # sampled answers; the source's reference no longer applies
            "instruction": run.instr.to_json(),
            "mask_strategy": "last_turn",
            "split": run.row["split"],
            "location": f"build_gatt(seed={seed}) from {orig}, turns 1..{t}",
        }
        for t in range(1, len(run.answers) + 1)
    ]
