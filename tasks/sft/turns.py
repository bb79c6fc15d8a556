"""Dialogues answered turn by turn by a model: the `AnswerFn` the pure Ghost Attention and
multi-turn evaluation code sees (tasks/chat/answer.py `make_answer_fn` makes one from a model),
batching it with a count check, a seed per (turn, try), and the exchanges fed back as history.
"""

from __future__ import annotations

import random
from typing import Callable

# contexts (system prompt, turns ending with a user turn) and a seed -> the model's answer to each
# last user turn, or None when the context no longer fits the model.
AnswerFn = Callable[[list[tuple[str, list[dict]]], int], list[str | None]]


def user_messages(dialogue: dict) -> list[str]:
    return [t["content"] for t in dialogue["turns"] if t["role"] == "user"]


def exchange(user: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def sub_seed(seed: int, turn: int, attempt: int) -> int:
    """A distinct, reproducible seed per (turn, try); str seeding is hash-randomisation free."""
    return random.Random(f"{seed}:{turn}:{attempt}").randrange(2**31)


def answer_all(answer_fn: AnswerFn, contexts: list, seed: int, batch_size: int) -> list:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start : start + batch_size]
        answers = list(answer_fn(chunk, seed))
        if len(answers) != len(chunk):
            raise ValueError(f"answer_fn returned {len(answers)} answers for {len(chunk)} contexts")
        out.extend(answers)
    return out
