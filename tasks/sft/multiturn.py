"""Multi-turn consistency (paper Table 30): does an instruction, given once in the system
prompt, still hold at turn 2, 4, 6, 20? `eval_conversations` builds held-out conversations with
an instruction each, `multiturn_recall` lets a model (`AnswerFn`) answer them turn by turn and
checks every answer, `plot_recall` draws recall by turn per model."""

from __future__ import annotations

import io
import random

import polars as pl

from tasks.sft.instructions import Instruction, InstructionSpace, check_parts, sample_instruction
from tasks.sft.turns import AnswerFn, answer_all, exchange, sub_seed, user_messages


def eval_conversations(
    dialogues: list[dict],
    n: int,
    user_turns: int,
    seed: int,
    shorten_prob: float,
    space: InstructionSpace | None = None,
) -> list[dict]:
    """`n` held-out conversations of exactly `user_turns` user messages, each with an instruction.

    User messages come from held-out, non-safety dialogues without an instruction, in a seeded
    order; when one dialogue is too short the next one's user turns are appended (the pool is
    reshuffled and reused once exhausted). `sources` lists the dialogues used.
    """
    pool = [
        d
        for d in dialogues
        if d["split"] == "heldout" and not d["is_safety"] and d["instruction"] is None
    ]
    if not pool:
        raise ValueError(
            "eval_conversations needs held-out dialogues (split 'heldout'); none were given"
        )
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
            users += user_messages(d)[: user_turns - len(users)]
            sources.append(d["dialogue_id"])
        instr = sample_instruction(rng, shorten_prob, space=space)
        conversations.append(
            {
                "id": f"multiturn:{seed}:{i}",
                "instruction": instr.to_json(),
                "users": users,
                "sources": sources,
            }
        )
    return conversations


def multiturn_recall(
    conversations: list[dict],
    answer_fn: AnswerFn,
    turns: tuple[int, ...],
    seed: int,
    batch_size: int = 32,
) -> tuple[list[dict], list[dict]]:
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
    transcripts = [
        {
            "id": c["id"],
            "instruction": c["instruction"],
            "system": instr.text,
            "turns": [],
            "stopped_at": None,
            "stop_reason": None,
        }
        for c, instr in zip(conversations, instrs)
    ]
    for turn in range(max(turns)):
        active = [
            i
            for i, (c, tr) in enumerate(zip(conversations, transcripts))
            if tr["stopped_at"] is None and turn < len(c["users"])
        ]
        if not active:
            break
        contexts = []
        for i in active:
            history = [t for x in transcripts[i]["turns"] for t in exchange(x["user"], x["answer"])]
            user = {"role": "user", "content": conversations[i]["users"][turn]}
            contexts.append((transcripts[i]["system"], history + [user]))
        answers = answer_all(answer_fn, contexts, sub_seed(seed, turn, 0), batch_size)
        for i, answer in zip(active, answers):
            if answer is None:
                transcripts[i].update(stopped_at=turn + 1, stop_reason="context_too_long")
                continue
            parts = check_parts(instrs[i], answer)
            transcripts[i]["turns"].append(
                {
                    "turn": turn + 1,
                    "user": conversations[i]["users"][turn],
                    "answer": answer,
                    "satisfied": all(parts.values()),
                    "parts": parts,
                }
            )
            if not answer.strip():
                transcripts[i].update(stopped_at=turn + 2, stop_reason="empty_answer")
    table = []
    for t in turns:
        reached = [tr["turns"][t - 1] for tr in transcripts if len(tr["turns"]) >= t]
        satisfied = sum(x["satisfied"] for x in reached)
        table.append(
            {
                "turn": t,
                "evaluated": len(reached),
                "satisfied": satisfied,
                "recall": satisfied / len(reached) if reached else None,
            }
        )
    return table, transcripts


def plot_recall(table: pl.DataFrame) -> bytes:
    """PNG bytes: one line per model, recall (%) against turn, with the evaluated counts."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for (model,), group in table.sort("turn").group_by(["model"], maintain_order=True):
        group = group.filter(pl.col("recall").is_not_null())
        ax.plot(
            group["turn"].to_list(),
            [100 * r for r in group["recall"].to_list()],
            marker="o",
            label=model,
        )
        for turn, recall, n in zip(group["turn"], group["recall"], group["evaluated"]):
            ax.annotate(
                f"n={n}",
                (turn, 100 * recall),
                textcoords="offset points",
                xytext=(0, 6),
                fontsize=7,
                ha="center",
            )
    ax.set_xlabel("dialogue turn")
    ax.set_ylabel("answers following the first-turn instruction (%)")
    ax.set_ylim(-5, 110)
    ax.set_title("Multi-turn consistency (Llama 2 Table 30)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
