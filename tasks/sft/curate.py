"""SFT data curation (RECIPE.md §4: "quality over quantity"): limits, dedup, response toxicity.

Each rule is a named check with a reason code `curate_<rule>`; a dialogue the rules drop is
returned with its reason and a readable detail, so the caller writes it to `sft_excluded`
and the accounting in = kept + excluded always holds. Rules run in a fixed order and a
dialogue is charged to the first rule it breaks:

1. `curate_too_many_turns`: more user turns than `max_turns` (the dialogue is cut to
   `max_turns` exchanges instead when `truncate_turns` is on, and kept);
2. `curate_turn_too_long` / `curate_turn_too_short`: a turn outside the character limits;
3. `curate_duplicate`: the same system prompt and turns (case and whitespace folded) as a
   dialogue seen earlier (first occurrence kept, sources in the order given);
4. `curate_toxic_response`: an assistant turn whose toxicity (mean of its line scores, as in
   §4.1) reaches `toxicity_threshold`. Only answers are checked: adversarial *prompts* are the
   point of the safety demonstrations.
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from tasks.judges.toxicity import ToxicityScorer, document_scores

Excluded = tuple[dict, str, str]  # (dialogue row, reason, detail)


class CurationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(6, gt=0)  # user turns per dialogue
    truncate_turns: bool = True  # cut longer dialogues to max_turns exchanges rather than drop
    max_turn_chars: int = Field(600, gt=0)  # a longer turn is a monologue or a paste
    min_answer_chars: int = Field(2, ge=1)  # "k" is not a demonstration
    toxicity_threshold: float = Field(0.5, gt=0, le=1)  # same cut as the corpus measurement


def curate(
    rows: list[dict], cfg: CurationConfig, scorer: ToxicityScorer | None
) -> tuple[list[dict], list[Excluded], dict[str, float]]:
    """(kept rows, excluded (row, reason, detail), stats: counts in/kept per source and per reason).

    `scorer` None skips the toxicity rule (and says so in the stats)."""
    kept: list[dict] = []
    excluded: list[Excluded] = []
    truncated = 0
    seen: set[str] = set()
    for row in rows:
        row, was_cut = _limit_turns(row, cfg)
        truncated += was_cut
        problem = _length_problem(row, cfg)
        if problem is None:
            key = _dedup_key(row)
            if key in seen:
                problem = (
                    "curate_duplicate",
                    "same system prompt and turns as an earlier dialogue",
                )
            seen.add(key)
        if problem is None:
            kept.append(row)
        else:
            excluded.append((row, *problem))
    if scorer is not None:
        kept, toxic = _drop_toxic(kept, scorer, cfg.toxicity_threshold)
        excluded.extend(toxic)
    return kept, excluded, _stats(rows, kept, excluded, truncated, scorer is not None)


def _limit_turns(row: dict, cfg: CurationConfig) -> tuple[dict, bool]:
    n_user = len(row["turns"]) // 2
    if n_user <= cfg.max_turns or not cfg.truncate_turns:
        return row, False
    return {**row, "turns": row["turns"][: 2 * cfg.max_turns], "reference": None}, True


def _length_problem(row: dict, cfg: CurationConfig) -> tuple[str, str] | None:
    n_user = len(row["turns"]) // 2
    if n_user > cfg.max_turns:
        return "curate_too_many_turns", f"{n_user} user turns > max_turns {cfg.max_turns}"
    for i, turn in enumerate(row["turns"]):
        n = len(turn["content"])
        if n > cfg.max_turn_chars:
            return (
                "curate_turn_too_long",
                f"turn {i + 1} ({turn['role']}) has {n} characters > {cfg.max_turn_chars}",
            )
        if turn["role"] == "assistant" and len(turn["content"].strip()) < cfg.min_answer_chars:
            return (
                "curate_turn_too_short",
                f"answer {i // 2 + 1} has {n} characters < {cfg.min_answer_chars}",
            )
    return None


def _dedup_key(row: dict) -> str:
    parts = [row["system"], *(f"{t['role']}:{t['content']}" for t in row["turns"])]
    return re.sub(r"\s+", " ", "\n".join(parts).casefold()).strip()


def _drop_toxic(
    rows: list[dict], scorer: ToxicityScorer, threshold: float
) -> tuple[list[dict], list[Excluded]]:
    answers = [
        (i, t["content"])
        for i, row in enumerate(rows)
        for t in row["turns"]
        if t["role"] == "assistant"
    ]
    scores = document_scores([text for _, text in answers], scorer) if answers else []
    worst: dict[int, float] = {}
    for (i, _), score in zip(answers, scores):
        worst[i] = max(worst.get(i, 0.0), float(score))
    kept, toxic = [], []
    for i, row in enumerate(rows):
        if worst.get(i, 0.0) >= threshold:
            toxic.append(
                (
                    row,
                    "curate_toxic_response",
                    f"an answer scores {worst[i]:.2f} >= {threshold} ({scorer.name})",
                )
            )
        else:
            kept.append(row)
    return kept, toxic


def _stats(
    rows: list[dict], kept: list[dict], excluded: list[Excluded], truncated: int, scored: bool
) -> dict[str, float]:
    stats: dict[str, float] = {
        "dialogues_in": len(rows),
        "dialogues_kept": len(kept),
        "dialogues_excluded": len(excluded),
        "dialogues_truncated": truncated,
        "toxicity_checked": float(scored),
    }
    for source, n in Counter(r["source"] for r in rows).items():
        stats[f"in.{source}"] = n
    for source, n in Counter(r["source"] for r in kept).items():
        stats[f"kept.{source}"] = n
    for reason, n in Counter(reason for _, reason, _ in excluded).items():
        stats[f"excluded.{reason}"] = n
    return stats
