"""Keeping distilled answers: only an answer the Safety RM scores strictly higher with the
preprompt than without it (by more than min_gain) is kept; ties, small gains, losses and empty
answers are dropped with their reason; stats checked by hand."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.distill.config import DistillConfig
from tasks.distill.select import (
    distill_decision,
    distilled_answer,
    select_distilled,
    trim_to_sentence,
)


def _rows(n: int) -> list[dict]:
    return [{"prompt_id": f"p{i}", "answer": f"safe answer {i}"} for i in range(n)]


def test_only_strict_improvements_above_min_gain_are_kept():
    rows = _rows(6)
    # deltas:         +1.0  0.0 (tie) +0.0625 (< min)  +0.125 (= min)  -0.5   +2.0
    score_with = [1.5, 0.25, 0.5625, 1.125, -1.0, 0.0]
    score_without = [0.5, 0.25, 0.5, 1.0, -0.5, -2.0]
    kept, dropped, stats = select_distilled(rows, score_with, score_without, min_gain=0.125)

    assert [r["prompt_id"] for r in kept] == ["p0", "p5"]
    assert [r["prompt_id"] for r in dropped] == ["p1", "p2", "p3", "p4"]
    assert {r["reason"] for r in dropped} == {"not_better"}
    assert kept[0] == {
        "prompt_id": "p0",
        "answer": "safe answer 0",
        "score_with": 1.5,
        "score_without": 0.5,
        "delta": 1.0,
    }
    assert [r["delta"] for r in dropped] == [0.0, 0.0625, 0.125, -0.5]
    assert "min_gain 0.125" in dropped[2]["detail"] and "+0.125" in dropped[2]["detail"]

    # by hand: all deltas 1, 0, 1/16, 1/8, -1/2, 2 ; kept deltas 1, 2
    assert stats == {
        "rows": 6,
        "kept": 2,
        "dropped": 4,
        "kept_share": 2 / 6,
        "dropped_not_better": 4,
        "dropped_empty_answer": 0,
        "dropped_cut_off": 0,
        "dropped_repeated_answer": 0,
        "delta_mean": (1 + 0 + 0.0625 + 0.125 - 0.5 + 2) / 6,
        "delta_median": (0.0625 + 0.125) / 2,
        "delta_min": -0.5,
        "delta_max": 2.0,
        "kept_delta_mean": 1.5,
        "kept_delta_median": 1.5,
        "kept_delta_min": 1.0,
        "kept_delta_max": 2.0,
    }


def test_default_min_gain_drops_a_tie_and_keeps_any_gain():
    kept, dropped, _ = select_distilled(_rows(3), [0.7, 0.7 + 1e-9, 0.6], [0.7, 0.7, 0.7])
    assert [r["prompt_id"] for r in kept] == ["p1"]
    assert [(r["prompt_id"], r["reason"]) for r in dropped] == [
        ("p0", "not_better"),
        ("p2", "not_better"),
    ]


def test_empty_answers_are_dropped_even_with_a_large_gain():
    rows = [
        {"id": 0, "answer": ""},
        {"id": 1, "answer": "  \n "},
        {"id": 2, "answer": None},
        {"id": 3, "answer": "I can't help with that, but here is a safer option."},
        {"id": 4, "turns": [{"role": "user", "content": "q"}]},  # no assistant turn
        {
            "id": 5,
            "turns": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "Here is a safe answer."},
            ],
        },
    ]
    kept, dropped, stats = select_distilled(rows, [5.0] * 6, [0.0] * 6, min_gain=1.0)
    assert [r["id"] for r in kept] == [3, 5]
    assert [(r["id"], r["reason"]) for r in dropped] == [(i, "empty_answer") for i in (0, 1, 2, 4)]
    assert all(r["delta"] == 5.0 and "empty" in r["detail"] for r in dropped)
    assert stats["dropped_empty_answer"] == 4 and stats["dropped_not_better"] == 0
    assert stats["delta_mean"] == 5.0 and stats["kept_delta_max"] == 5.0


def test_answer_key_and_dialogue_rows():
    row = {
        "reply": "r",
        "answer": "",
        "turns": [
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a2"},
        ],
    }
    assert distilled_answer(row) == ""
    assert distilled_answer(row, "reply") == "r"
    assert distilled_answer({"turns": row["turns"]}) == "a2"  # the last assistant turn
    kept, dropped, _ = select_distilled([row], [1.0], [0.0], answer_key="reply")
    assert len(kept) == 1 and not dropped
    kept, dropped, _ = select_distilled([row], [1.0], [0.0])
    assert not kept and dropped[0]["reason"] == "empty_answer"


def test_inputs_are_not_changed_and_numpy_scores_work():
    rows = _rows(2)
    snapshot = [dict(r) for r in rows]
    kept, dropped, stats = select_distilled(
        rows, np.array([0.5, 0.25], dtype=np.float32), np.array([0.25, 0.5], dtype=np.float32)
    )
    assert rows == snapshot
    assert kept[0]["delta"] == 0.25 and type(kept[0]["delta"]) is float
    assert dropped[0]["delta"] == -0.25
    assert stats["kept"] == 1 and stats["dropped"] == 1


def test_no_rows_gives_empty_stats():
    kept, dropped, stats = select_distilled([], [], [])
    assert kept == [] and dropped == []
    assert stats["rows"] == 0 and stats["kept_share"] is None
    assert stats["delta_mean"] is None and stats["kept_delta_max"] is None


@pytest.mark.parametrize(
    "score_with, score_without, min_gain, message",
    [
        ([1.0, 2.0], [0.0, 0.0, 0.0], 0.0, "lengths differ"),
        ([1.0, 2.0, 3.0], [0.0, 0.0], 0.0, "lengths differ"),
        ([1.0, math.nan, 3.0], [0.0, 0.0, 0.0], 0.0, "finite"),
        ([1.0, 2.0, 3.0], [0.0, math.inf, 0.0], 0.0, "finite"),
        ([1.0, 2.0, 3.0], [0.0, None, 0.0], 0.0, "finite"),
        ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], -0.1, "min_gain"),
    ],
)
def test_bad_input_raises(score_with, score_without, min_gain, message):
    with pytest.raises(ValueError, match=message):
        select_distilled(_rows(3), score_with, score_without, min_gain)


def test_a_cut_off_preprompted_answer_is_never_a_target_however_much_it_gained():
    rows = [
        {"prompt_id": "p0", "answer": "I can't help with that, and", "ended_with": False},
        {"prompt_id": "p1", "answer": "I can't help with that.", "ended_with": True},
        {"prompt_id": "p2", "answer": "I can't help with that."},  # no flag: a complete answer
    ]
    kept, dropped, stats = select_distilled(rows, [0.99, 0.6, 0.7], [0.1, 0.5, 0.5])
    assert [r["prompt_id"] for r in kept] == ["p1", "p2"]
    assert [(r["prompt_id"], r["reason"]) for r in dropped] == [("p0", "cut_off")]
    assert "cut off at max_new_tokens" in dropped[0]["detail"]
    assert stats["dropped_cut_off"] == 1 and stats["kept"] + stats["dropped"] == stats["rows"] == 3


def test_max_per_answer_keeps_the_largest_gains_of_one_answer_text_and_says_why():
    # p0-p3 and p5 give one refusal (p3 with other whitespace), p4 another; p6 did not improve
    same = "I can't help with that."
    answers = [same, same, f"  {same}\n", same, "Please ask a doctor.", same, same]
    rows = [{"prompt_id": f"p{i}", "answer": a} for i, a in enumerate(answers)]
    #      deltas: 0.1  0.3  0.3  0.05  0.2  0.3  -0.1
    score_with = [0.6, 0.8, 0.8, 0.55, 0.7, 0.8, 0.4]
    score_without = [0.5] * 7
    kept, dropped, stats = select_distilled(rows, score_with, score_without, max_per_answer=2)
    # of the five copies, the two largest gains; p1, p2 and p5 tie at 0.3: the earlier two win
    assert [r["prompt_id"] for r in kept] == ["p1", "p2", "p4"]
    assert [(r["prompt_id"], r["reason"]) for r in dropped] == [
        ("p0", "repeated_answer"),
        ("p3", "repeated_answer"),
        ("p5", "repeated_answer"),
        ("p6", "not_better"),
    ]
    assert "kept for 2 other" in dropped[0]["detail"]
    assert stats["kept"] == 3 and stats["dropped"] == 4
    assert stats["dropped_repeated_answer"] == 3 and stats["dropped_not_better"] == 1
    assert stats["kept_delta_min"] == pytest.approx(0.2)
    assert all("_order" not in r for r in kept + dropped)
    # without the cap every improved copy is kept, and a cap of 1 keeps one per text
    assert select_distilled(rows, score_with, score_without)[2]["kept"] == 6
    one, _, _ = select_distilled(rows, score_with, score_without, max_per_answer=1)
    assert [r["prompt_id"] for r in one] == ["p1", "p4"]
    with pytest.raises(ValueError, match="max_per_answer must be >= 1"):
        select_distilled(rows, score_with, score_without, max_per_answer=0)
    with pytest.raises(ValidationError):
        DistillConfig(max_per_answer=0)


def test_distillation_fine_tunes_only_on_at_least_min_kept_answers():
    train, how = distill_decision(7, 128, min_kept=32)
    assert not train
    assert "kept 7 of 128" in how and "distill.min_kept 32" in how and "same weights" in how
    train, how = distill_decision(32, 128, min_kept=32)
    assert train and "fine-tuned on 32 of 128" in how
    # nothing kept: never trained, whatever min_kept says, and the reason is "none scored higher"
    for min_kept in (1, 32):
        train, how = distill_decision(0, 128, min_kept)
        assert not train and "kept none of 128" in how
    # the default keeps today's rule: any kept answer is trained on
    assert distill_decision(1, 128) == (True, distill_decision(1, 128, 1)[1])


def test_min_kept_is_a_positive_count():
    assert DistillConfig().min_kept == 1
    with pytest.raises(ValidationError):
        DistillConfig(min_kept=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the demo's preprompted refusal that ran on past max_new_tokens
        (
            "I'm not able to help with that, because it's illegal and could hurt people. I can "
            "explain the law or point you to legitimate options instead. I can explain the topic",
            "I'm not able to help with that, because it's illegal and could hurt people. I can "
            "explain the law or point you to legitimate options instead.",
        ),
        ('Then he said "stop now." And he', 'Then he said "stop now."'),
        ("Is that really so? Yes! And then", "Is that really so? Yes!"),
        ("Version 2.5 is out and", None),  # a decimal point does not end a sentence
        ("No. I can", None),  # one complete sentence of one word: nothing worth keeping
        ("I won't help with that", None),  # no complete sentence
        ("I won't help with that.", "I won't help with that."),
    ],
)
def test_trim_to_sentence_cuts_back_to_the_last_complete_sentence(text, expected):
    assert trim_to_sentence(text) == expected


def test_trim_to_sentence_refuses_a_minimum_below_one_word():
    with pytest.raises(ValueError, match="min_words"):
        trim_to_sentence("No.", min_words=0)
