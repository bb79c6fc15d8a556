"""Dialogues -> `sft_examples` rows: the Llama 2 chat format, labels by masking strategy.

A dialogue longer than the training sequence keeps as many complete leading exchanges as fit
(`tokenize_truncated` counts them); one whose first exchange alone does not fit is excluded
(`tokenize_too_long`), as is one left with no target token (`tokenize_no_targets`).
"""

from __future__ import annotations

import hashlib
from collections import Counter

from models.llama import IGNORE_INDEX
from tasks.chat.format import MaskStrategy, tokenize_dialogue

Excluded = tuple[dict, str, str]


def tokenize_rows(
    rows: list[dict], processor, default_strategy: MaskStrategy, seq_len: int
) -> tuple[list[dict], list[Excluded], dict[str, float]]:
    """(sft_examples rows, excluded (row, reason, detail), stats)."""
    examples: list[dict] = []
    excluded: list[Excluded] = []
    truncated = 0
    for row in rows:
        strategy = MaskStrategy(row["mask_strategy"] or default_strategy)
        turns = row["turns"]
        tokens, labels = tokenize_dialogue(processor, row["system"], turns, strategy)
        while len(tokens) > seq_len and len(turns) > 2:
            turns = turns[:-2]  # drop the last exchange; the answer trained is then an earlier one
            tokens, labels = tokenize_dialogue(processor, row["system"], turns, strategy)
        if len(tokens) > seq_len:
            excluded.append(
                (
                    row,
                    "tokenize_too_long",
                    f"the first exchange alone is {len(tokens)} tokens > seq_len {seq_len}",
                )
            )
            continue
        truncated += len(turns) < len(row["turns"])
        n_targets = sum(label != IGNORE_INDEX for label in labels)
        if n_targets == 0:
            excluded.append(
                (row, "tokenize_no_targets", f"no target tokens under {strategy.value}")
            )
            continue
        examples.append(
            {
                "dialogue_id": row["dialogue_id"],
                "source": row["source"],
                "category": row["category"],
                "split": row["split"],
                "tokens": tokens,
                "labels": labels,
                "n_tokens": len(tokens),
                "n_targets": n_targets,
            }
        )
    return examples, excluded, _stats(examples, excluded, truncated)


def _stats(examples: list[dict], excluded: list[Excluded], truncated: int) -> dict[str, float]:
    stats: dict[str, float] = {
        "examples": len(examples),
        "excluded": len(excluded),
        "truncated": truncated,
        "tokens": sum(e["n_tokens"] for e in examples),
        "target_tokens": sum(e["n_targets"] for e in examples),
    }
    for (source, split), n in Counter((e["source"], e["split"]) for e in examples).items():
        stats[f"examples.{source}.{split}"] = n
    for reason, n in Counter(reason for _, reason, _ in excluded).items():
        stats[f"excluded.{reason}"] = n
    return stats


def cap_adversarial(rows: list[dict], limit: int | None) -> tuple[list[dict], list[Excluded]]:
    """The SFT mix (RECIPE.md §4.2.2, "the SFT mix" lever): at most `limit` adversarial train
    dialogues (refusal demonstrations: a risk category, no instruction) are fine-tuned on; the
    rest are excluded as `sft_mix_cap`. Which ones stay goes by a hash of the dialogue id, so the
    choice does not depend on row order and a smaller limit keeps a subset of a larger one's.
    Held-out rows and every other kind pass through. `limit` None keeps all."""
    adversarial = [
        r
        for r in rows
        if r["split"] == "train" and r["risk_category"] is not None and r["instruction"] is None
    ]
    if limit is None or len(adversarial) <= limit:
        return rows, []
    ranked = sorted(adversarial, key=lambda r: hashlib.sha256(r["dialogue_id"].encode()).digest())
    over = {r["dialogue_id"] for r in ranked[limit:]}
    detail = (
        f"over sft.mix.max_adversarial {limit} of {len(adversarial)} adversarial train dialogues"
    )
    return (
        [r for r in rows if r["dialogue_id"] not in over],
        [(r, "sft_mix_cap", detail) for r in rows if r["dialogue_id"] in over],
    )
