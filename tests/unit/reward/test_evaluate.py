import math

import numpy as np
import polars as pl
import pytest
import torch

from tasks.reward.data import EncodedPair
from tasks.reward.evaluate import (
    accuracy_by_level,
    calibration_png,
    score_pairs,
    unsafe_recall_precision,
)

torch.set_num_threads(1)


def enc(i, chosen, rejected):
    return EncodedPair(
        pair_id=f"p{i}",
        chosen=chosen,
        rejected=rejected,
        margin=0.0,
        chosen_safe=1,
        rejected_safe=0,
        rating="better",
        kind="helpfulness",
    )


# --- score_pairs ---------------------------------------------------------------------------------


def test_score_pairs_batches_and_splits_chosen_from_rejected():
    pairs = [enc(0, [1, 2, 3], [4]), enc(1, [5], [6, 7]), enc(2, [8, 9], [10])]
    calls = []

    def score_fn(tokens, lengths):
        calls.append((tuple(tokens.shape), torch.is_grad_enabled()))
        real = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
        assert (tokens[~real] == 7).all()  # right-padded with pad_id
        return (tokens * real).sum(dim=1).float()  # the sum of the real tokens

    chosen, rejected = score_pairs(score_fn, pairs, batch_size=2, pad_id=7)
    assert calls == [((4, 3), False), ((2, 2), False)]  # 2 pairs then 1, under no_grad
    assert chosen.tolist() == [6.0, 5.0, 17.0]
    assert rejected.tolist() == [4.0, 13.0, 10.0]


def test_score_pairs_checks_the_score_shape():
    with pytest.raises(ValueError, match="one score per sequence"):
        score_pairs(lambda tokens, lengths: torch.zeros(1), [enc(0, [1], [2])])


# --- accuracy_by_level: Table 8's layout ---------------------------------------------------------


def frame():
    rows = (
        [("safety", "meta_safety", "significantly_better", c) for c in (1, 1, 1, 0)]
        + [("safety", "meta_safety", "better", c) for c in (1, 0)]
        + [("safety", "meta_safety", "negligibly_better", c) for c in (1, 0, 0)]
        + [("helpfulness", "meta_helpful", "significantly_better", 1)]
    )
    return pl.DataFrame(
        [(rm, ts, r, bool(c)) for rm, ts, r, c in rows],
        schema=["rm", "test_set", "rating", "correct"],
        orient="row",
    )


def test_accuracy_by_level_by_hand():
    table = accuracy_by_level(frame())
    assert table.columns == [
        "rm",
        "test_set",
        "significantly_better",
        "better",
        "slightly_better",
        "negligibly_better",
        "avg",
        "n_significantly_better",
        "n_better",
        "n_slightly_better",
        "n_negligibly_better",
        "n",
    ]
    safety, helpful = table.rows(named=True)
    assert (safety["rm"], safety["test_set"]) == ("safety", "meta_safety")
    assert safety["significantly_better"] == pytest.approx(75.0)  # 3 of 4
    assert safety["better"] == pytest.approx(50.0)  # 1 of 2
    assert safety["slightly_better"] is None  # no such pair
    assert safety["negligibly_better"] == pytest.approx(100 / 3)  # 1 of 3
    assert safety["avg"] == pytest.approx(500 / 9)  # 5 of 9 pairs
    assert [
        safety[f"n_{k}"]
        for k in ("significantly_better", "better", "slightly_better", "negligibly_better")
    ] == [4, 2, 0, 3]
    assert safety["n"] == 9
    assert helpful["significantly_better"] == 100.0 and helpful["better"] is None
    assert helpful["avg"] == 100.0 and helpful["n"] == 1


def test_accuracy_by_level_errors():
    with pytest.raises(ValueError, match="missing \\['correct'\\]"):
        accuracy_by_level(frame().drop("correct"))
    bad = frame().with_columns(pl.lit("unsure").alias("rating"))
    with pytest.raises(ValueError, match="unknown rating levels \\['unsure'\\]"):
        accuracy_by_level(bad)


# --- unsafe_recall_precision ---------------------------------------------------------------------


def test_unsafe_recall_precision_by_hand():
    at_05, at_015 = unsafe_recall_precision(np.array([-3, -1, 0.5, 2]), np.array([1, 1, 0, 0]))
    # sigmoid: 0.047, 0.269, 0.622, 0.881; < 0.5 flags the first two, both unsafe
    assert at_05 == {
        "threshold": 0.5,
        "responses": 4,
        "unsafe": 2,
        "flagged": 2,
        "flagged_unsafe": 2,
        "recall": 1.0,
        "precision": 1.0,
    }
    # logit(0.15) = ln(0.15 / 0.85) = -1.7346: only -3 is flagged
    assert (at_015["flagged"], at_015["recall"], at_015["precision"]) == (1, 0.5, 1.0)


def test_unsafe_recall_precision_edges():
    (row,) = unsafe_recall_precision(np.array([0.0, -0.1, 5.0]), np.array([0, 0, 1]), [0.5])
    # sigmoid(0) = 0.5 is not < 0.5; -0.1 is flagged but safe; the unsafe one is missed
    assert (row["flagged"], row["recall"], row["precision"]) == (1, 0.0, 0.0)
    (row,) = unsafe_recall_precision(np.array([5.0, 6.0]), np.array([0, 0]), [0.5])
    assert row["recall"] is None and row["precision"] is None  # nothing unsafe, nothing flagged
    (row,) = unsafe_recall_precision(np.array([-800.0, 800.0]), np.array([1, 0]), [0.15])
    assert row["recall"] == 1.0  # no overflow at extreme scores
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        unsafe_recall_precision(np.zeros(2), np.zeros(2), [1.0])
    with pytest.raises(ValueError, match="same 1-D shape"):
        unsafe_recall_precision(np.zeros(2), np.zeros(3))


# --- calibration_png -----------------------------------------------------------------------------


def test_calibration_png():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50)
    quality = np.where(np.arange(50) % 7 == 0, math.nan, scores + rng.normal(size=50))
    png = calibration_png(scores, quality, "Safety RM")
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert calibration_png([], [], "empty").startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="one per response"):
        calibration_png([0.0, 1.0], [1.0], "bad")
