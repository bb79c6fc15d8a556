"""Which context-distilled answers to keep (RECIPE.md §9, paper §4.2.4). Pure code.

A safety preprompt does not always help: on some prompts it makes the answer vaguer or turns a
fine answer into a false refusal. So an answer generated with the preprompt is kept only when
the Safety reward model scores it strictly higher than the answer to the same prompt without
the preprompt, by more than `min_gain`. Everything else is dropped with a reason, never
silently.

A small policy often gives the same preprompted answer to many prompts (measured on the demo:
30 of 32 kept answers one refusal with a garbled tail, each 0.001 above the plain refusal), and
fine-tuning on thirty copies of one string teaches that string, tail included. `max_per_answer`
keeps at most that many copies of one answer text (the largest gains); the rest are dropped as
`repeated_answer`, so `kept` counts the evidence, not the repetitions.

With the preprompt the policy often refuses and then keeps adding sentences ("... I can explain
the law or point you to legitimate options instead. I can explain the topic ...") until
max_new_tokens cuts it off; a cut-off answer is never a fine-tuning target. `trim_to_sentence`
cuts such an answer back to its last complete sentence, so the whole refusal before the tail can
be scored and kept (`distill.trim_cut_off`).
"""

from __future__ import annotations

import math
import numbers
import re
import statistics
from collections.abc import Sequence

DROP_REASONS = ("not_better", "empty_answer", "cut_off", "repeated_answer")

# the end of a sentence: ., ! or ? (closing quotes or brackets allowed) before a space or the end
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def trim_to_sentence(text: str, min_words: int = 4) -> str | None:
    """`text` up to the end of its last complete sentence, or None when that leaves fewer than
    `min_words` words (no complete sentence worth keeping). For an answer cut off at
    max_new_tokens: "I can't help with that. I can expl" -> "I can't help with that."."""
    if min_words < 1:
        raise ValueError(f"min_words must be >= 1, got {min_words}")
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends:
        return None
    head = text[: ends[-1]].strip()
    return head if len(head.split()) >= min_words else None


def distilled_answer(row: dict, answer_key: str = "answer") -> str | None:
    """The preprompted answer of a row: `row[answer_key]`, or, for a dialogue row without that
    key, the content of its last assistant turn (None when there is none)."""
    if answer_key in row:
        return row[answer_key]
    for turn in reversed(row.get("turns") or []):
        if isinstance(turn, dict) and turn.get("role") == "assistant":
            return turn.get("content")
    return None


def _summary(deltas: list[float], prefix: str) -> dict[str, float | None]:
    """mean/median/min/max of the deltas, None for each when there are none."""
    if not deltas:
        return {f"{prefix}delta_{k}": None for k in ("mean", "median", "min", "max")}
    return {
        f"{prefix}delta_mean": statistics.fmean(deltas),
        f"{prefix}delta_median": statistics.median(deltas),
        f"{prefix}delta_min": min(deltas),
        f"{prefix}delta_max": max(deltas),
    }


def select_distilled(
    rows: list[dict],
    score_with: Sequence[float],
    score_without: Sequence[float],
    min_gain: float = 0.0,
    *,
    answer_key: str = "answer",
    ended_key: str = "ended_with",
    max_per_answer: int | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Keep row i when its preprompted answer is not empty, ended at EOS, and
    `score_with[i] - score_without[i] > min_gain` (a tie or a gain of exactly min_gain is dropped).

    Returns (kept, dropped, stats). Both lists hold copies of the rows (the inputs are not
    changed) with `score_with`, `score_without` and `delta` (= score_with - score_without) added;
    dropped rows also get `reason` ("empty_answer" when the answer, see `distilled_answer`, is
    missing or blank, checked first; "cut_off" when `row[ended_key]` is False, the answer hit
    max_new_tokens before EOS (a row without the key counts as ended); otherwise "not_better")
    and a readable `detail`. With `max_per_answer` n, of the rows that would be kept with the
    same answer text (stripped) only the n with the largest gain are kept (the earlier row on a
    tie); the others are dropped as "repeated_answer". Order is kept within each list.
    `stats`: rows, kept, dropped, kept_share, dropped_<reason> for every reason (0 when none),
    and delta_mean/median/min/max over all rows and kept_delta_* over the kept ones (None when
    there are no such rows).

    Raises ValueError when the three lengths differ, a score is not a finite number, min_gain
    is negative (that would keep answers the Safety RM scores lower), or max_per_answer < 1.
    """
    if not len(rows) == len(score_with) == len(score_without):
        raise ValueError(
            f"lengths differ: {len(rows)} rows, {len(score_with)} scores with the "
            f"preprompt, {len(score_without)} without"
        )
    if not math.isfinite(min_gain) or min_gain < 0:
        raise ValueError(f"min_gain must be a finite number >= 0, got {min_gain}")
    if max_per_answer is not None and max_per_answer < 1:
        raise ValueError(f"max_per_answer must be >= 1 (or None: no cap), got {max_per_answer}")
    kept, dropped, deltas = [], [], []
    for i, (row, with_, without) in enumerate(zip(rows, score_with, score_without)):
        for name, value in (("score_with", with_), ("score_without", without)):
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
            ):
                raise ValueError(f"row {i}: {name} must be a finite number, got {value!r}")
        with_, without = float(with_), float(without)
        delta = with_ - without
        deltas.append(delta)
        out = {**row, "score_with": with_, "score_without": without, "delta": delta, "_order": i}
        answer = distilled_answer(row, answer_key)
        if not isinstance(answer, str) or not answer.strip():
            dropped.append(
                {
                    **out,
                    "reason": "empty_answer",
                    "detail": f"the answer generated with the preprompt is empty ({answer!r})",
                }
            )
        elif not row.get(ended_key, True):  # cut off at max_new_tokens: not a whole answer
            dropped.append(
                {
                    **out,
                    "reason": "cut_off",
                    "detail": "the answer generated with the preprompt was cut off at "
                    "max_new_tokens (no EOS); it is not a fine-tuning target",
                }
            )
        elif delta > min_gain:
            kept.append(out)
        else:
            dropped.append(
                {
                    **out,
                    "reason": "not_better",
                    "detail": (
                        f"Safety RM score {with_:.4g} with the preprompt vs {without:.4g} without: "
                        f"gain {delta:+.4g} is not above min_gain {min_gain:g}"
                    ),
                }
            )
    if max_per_answer is not None:
        kept, repeated = _cap_repeats(kept, max_per_answer, answer_key)
        dropped = sorted(dropped + repeated, key=lambda r: r["_order"])
    kept_deltas = [r["delta"] for r in kept]
    for r in kept + dropped:
        r.pop("_order", None)
    stats: dict[str, float | int | None] = {
        "rows": len(rows),
        "kept": len(kept),
        "dropped": len(dropped),
        "kept_share": len(kept) / len(rows) if rows else None,
        **{f"dropped_{r}": sum(d["reason"] == r for d in dropped) for r in DROP_REASONS},
        **_summary(deltas, ""),
        **_summary(kept_deltas, "kept_"),
    }
    return kept, dropped, stats


def _cap_repeats(kept: list[dict], n: int, answer_key: str) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): at most `n` rows per stripped answer text, those with the largest delta
    (the earlier row on a tie); input order kept in both lists."""
    by_gain = sorted(kept, key=lambda r: (-r["delta"], r["_order"]))
    seen: dict[str, int] = {}
    keep: set[int] = set()
    for r in by_gain:
        text = distilled_answer(r, answer_key).strip()
        if seen.get(text, 0) < n:
            seen[text] = seen.get(text, 0) + 1
            keep.add(r["_order"])
    repeated = [
        {
            **r,
            "reason": "repeated_answer",
            "detail": f"the same preprompted answer was kept for {n} other prompt(s) with a "
            "larger gain; more copies of one answer teach that string, not safety",
        }
        for r in kept
        if r["_order"] not in keep
    ]
    return [r for r in kept if r["_order"] in keep], repeated


def distill_decision(kept: int, rows: int, min_kept: int = 1) -> tuple[bool, str]:
    """(fine-tune?, the sentence saying why) for `kept` of `rows` preprompted answers kept: the
    policy is fine-tuned only on at least `min_kept` answers; else its weights stay as they are."""
    if kept >= max(1, min_kept):
        return True, (
            f"Safety context distillation of the last RLHF policy: fine-tuned on {kept} of "
            f"{rows} preprompted answers the Safety RM scored higher"
        )
    if not kept:  # a model too weak to profit from the preprompt
        return False, (
            f"Safety context distillation kept none of {rows} preprompted answers (none scored "
            "higher): the same weights as the last RLHF policy"
        )
    return False, (
        f"Safety context distillation kept {kept} of {rows} preprompted answers, fewer than "
        f"distill.min_kept {min_kept}: not fine-tuned (a few optimizer steps on a handful of "
        "answers move the model at random); the same weights as the last RLHF policy"
    )
