"""Reward-model evaluation (RECIPE.md §6): pair scores, accuracy per rating level in the layout
of the paper's Table 8, unsafe-response recall / precision at sigmoid thresholds, calibration.

Pure code: no Prefect or MLflow. A score function is any `score_fn(tokens, lengths) -> (B,)`,
e.g. `RewardModel.scores`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import torch

from data_contracts.preference_pairs import RATINGS
from tasks.reward.data import EncodedPair

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B, T), (B,) -> (B,)


def score_pairs(
    score_fn: ScoreFn,
    pairs: list[EncodedPair],
    batch_size: int = 32,
    pad_id: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(r_chosen, r_rejected), float64 arrays (N,), scored `batch_size` pairs at a time.

    Each call gets tokens (2b, T) int64 right-padded to the longest sequence of the batch (the b
    chosen sequences, then the b rejected ones) and lengths (2b,) int64, both on `device`.
    """
    chosen, rejected = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            sequences = [p.chosen for p in batch] + [p.rejected for p in batch]
            lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
            tokens = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
            for i, seq in enumerate(sequences):
                tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            scores = score_fn(tokens.to(device), lengths.to(device)).float().cpu().numpy()
            if scores.shape != (len(sequences),):
                raise ValueError(
                    f"score_fn returned shape {scores.shape}, expected "
                    f"({len(sequences)},): one score per sequence"
                )
            chosen.append(scores[: len(batch)])
            rejected.append(scores[len(batch) :])
    if not chosen:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(chosen).astype(np.float64), np.concatenate(rejected).astype(np.float64)


def accuracy_by_level(df: pl.DataFrame) -> pl.DataFrame:
    """Table 8's layout: one row per (rm, test_set) in order of appearance; per rating level
    (strongest first) the accuracy in % (null where the level has no pairs), `avg` over all the
    pairs of the test set, then n_<level> and n (pair counts).

    Input columns: rm, test_set, rating (one of RATINGS), correct (bool: r_chosen > r_rejected).
    """
    missing = {"rm", "test_set", "rating", "correct"} - set(df.columns)
    if missing:
        raise ValueError(
            f"accuracy_by_level needs columns rm, test_set, rating, correct; "
            f"missing {sorted(missing)}"
        )
    unknown = set(df["rating"].unique().to_list()) - set(RATINGS)
    if unknown:
        raise ValueError(f"unknown rating levels {sorted(map(str, unknown))}; use {RATINGS}")
    correct = pl.col("correct").cast(pl.Float64)
    accuracy = [
        (100 * correct.filter(pl.col("rating") == level).mean()).alias(level) for level in RATINGS
    ]
    counts = [
        (pl.col("rating") == level).sum().cast(pl.Int64).alias(f"n_{level}") for level in RATINGS
    ]
    return df.group_by(["rm", "test_set"], maintain_order=True).agg(
        *accuracy, (100 * correct.mean()).alias("avg"), *counts, pl.len().cast(pl.Int64).alias("n")
    )


def unsafe_recall_precision(
    scores: np.ndarray, unsafe: np.ndarray, thresholds: Sequence[float] = (0.5, 0.15)
) -> list[dict]:
    """Per threshold t: a response is flagged unsafe when sigmoid(score) < t (the Safety RM's
    sigmoid reads as "safe"). recall = |flagged & unsafe| / |unsafe|, precision = |flagged &
    unsafe| / |flagged|, None where the denominator is 0; with the counts.

    The comparison is made on the logit scale, score < log(t / (1 - t)), the same test without
    overflowing exp for large scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    unsafe = np.asarray(unsafe).astype(bool)
    if scores.shape != unsafe.shape or scores.ndim != 1:
        raise ValueError(
            f"scores {scores.shape} and unsafe {unsafe.shape} must be the same 1-D shape"
        )
    rows = []
    for t in thresholds:
        if not 0 < t < 1:
            raise ValueError(f"threshold {t} must be strictly between 0 and 1 (a sigmoid value)")
        flagged = scores < np.log(t / (1 - t))
        hits = int((flagged & unsafe).sum())
        n_flagged, n_unsafe = int(flagged.sum()), int(unsafe.sum())
        rows.append(
            {
                "threshold": float(t),
                "responses": len(scores),
                "unsafe": n_unsafe,
                "flagged": n_flagged,
                "flagged_unsafe": hits,
                "recall": hits / n_unsafe if n_unsafe else None,
                "precision": hits / n_flagged if n_flagged else None,
            }
        )
    return rows


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow


def calibration_png(rm_scores, annotator_scores, title: str, bins: int = 10) -> bytes:
    """PNG bytes: sigmoid(RM score) (x) against the annotator's quality score (y), each response
    a dot, and the mean annotator score per equal-width sigmoid bin (line, with n per bin).
    Responses without an annotator score (NaN / None) are left out."""
    from matplotlib.figure import Figure

    x = _sigmoid(np.asarray(rm_scores, dtype=np.float64))
    y = np.asarray(annotator_scores, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(
            f"{x.shape} RM scores but {y.shape} annotator scores; pass one per response"
        )
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.scatter(x, y, s=8, alpha=0.3, label="responses")
    which = np.clip((x * bins).astype(int), 0, bins - 1)
    centers, means, counts = [], [], []
    for b in range(bins):
        if (which == b).any():
            centers.append((b + 0.5) / bins)
            means.append(float(y[which == b].mean()))
            counts.append(int((which == b).sum()))
    ax.plot(centers, means, marker="o", color="C1", label="mean per bin")
    for cx, my, n in zip(centers, means, counts):
        ax.annotate(
            f"n={n}", (cx, my), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center"
        )
    if not len(x):
        ax.text(0.5, 0.5, "no scored responses", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_xlabel("sigmoid(reward model score)")
    ax.set_ylabel("annotator quality score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
