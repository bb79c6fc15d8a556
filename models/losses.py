"""Reward-model losses (Touvron et al., 2023, §3.2.2; RECIPE.md §6). Pure torch, no I/O.

The ranking loss is the binary ranking loss of InstructGPT with Llama 2's margin term:

    L = -log sigmoid(r_chosen - r_rejected - m(r))          (paper eq. 2)

where m(r) grows with how strongly the annotator preferred the chosen response (Table 27). It is
computed with `F.logsigmoid`, finite for any score gap (never `log(sigmoid(.))`, which gives
-inf once sigmoid underflows, nor `log(1 + exp(.))`, which overflows).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Preference ratings of §3.2.1, strongest first; MARGINS below are listed in this order.
RATINGS = ("significantly_better", "better", "slightly_better", "negligibly_better")
# m(r) per rating above (paper Table 27: "small" and "large" margin; "none" = plain ranking loss).
MARGINS = {
    "none": (0.0, 0.0, 0.0, 0.0),
    "small": (1.0, 2 / 3, 1 / 3, 0.0),
    "large": (3.0, 2.0, 1.0, 0.0),
}

SAFE, UNSAFE, UNKNOWN = 1, 0, -1  # safety labels of a response (safety_aux_loss)


def margins_for(ratings: Sequence[str], scheme: str) -> torch.Tensor:
    """The margin m(r) of each pair, (B,) float32, from its rating and a MARGINS scheme."""
    if scheme not in MARGINS:
        raise ValueError(f"unknown margin scheme {scheme!r}; choose one of {sorted(MARGINS)}")
    by_rating = dict(zip(RATINGS, MARGINS[scheme]))
    unknown = sorted({r for r in ratings if r not in by_rating})
    if unknown:
        raise ValueError(f"unknown preference rating(s) {unknown}; expected one of {list(RATINGS)}")
    return torch.tensor([by_rating[r] for r in ratings], dtype=torch.float32)


def pairwise_loss(
    r_chosen: torch.Tensor,  # (B,) score of the preferred response
    r_rejected: torch.Tensor,  # (B,) score of the other response of the same pair
    margin: torch.Tensor | None = None,  # (B,) m(r); None = no margin
) -> torch.Tensor:
    """Mean over pairs of -logsigmoid(r_chosen - r_rejected - margin): a scalar."""
    if r_chosen.dim() != 1 or r_chosen.shape != r_rejected.shape:
        raise ValueError(
            f"scores must be two (B,) tensors; got {tuple(r_chosen.shape)} "
            f"and {tuple(r_rejected.shape)}"
        )
    gap = r_chosen - r_rejected  # (B,)
    if margin is not None:
        if margin.shape != gap.shape:
            raise ValueError(f"margin has shape {tuple(margin.shape)}; expected {tuple(gap.shape)}")
        gap = gap - margin.to(gap.dtype)
    return -F.logsigmoid(gap).mean()


def safety_aux_loss(
    scores: torch.Tensor,  # (N,) one score per response (chosen and rejected alike)
    safe: torch.Tensor,  # (N,) SAFE 1, UNSAFE 0, UNKNOWN -1
) -> torch.Tensor:
    """Binary cross-entropy of each response's own score against its safety label: a scalar.

    The paper adds a safety auxiliary loss to the Safety RM (it lifts unsafe-response recall at
    threshold 0.5 from 73.0 to 90.4, Table 29) but does not give its form. Ours reads
    sigmoid(score) as P(safe): `binary_cross_entropy_with_logits` (stable for any score), mean
    over the labelled responses; UNKNOWN rows are ignored. With no labelled row it returns a
    zero that still carries a graph (`scores.sum() * 0`), so `backward()` works on any batch.
    """
    if scores.shape != safe.shape or scores.dim() != 1:
        raise ValueError(
            f"scores and safe labels must be (N,) tensors of one shape; got "
            f"{tuple(scores.shape)} and {tuple(safe.shape)}"
        )
    bad = ~((safe == SAFE) | (safe == UNSAFE) | (safe == UNKNOWN))
    if bad.any():
        raise ValueError(
            f"safe labels must be {SAFE} (safe), {UNSAFE} (unsafe) or {UNKNOWN} "
            f"(unknown); got {sorted(set(safe[bad].tolist()))}"
        )
    labelled = safe != UNKNOWN  # (N,) bool
    if not labelled.any():
        return scores.sum() * 0.0
    return F.binary_cross_entropy_with_logits(scores[labelled], safe[labelled].to(scores.dtype))


def accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Share of pairs ranked right (r_chosen > r_rejected; a tie counts as wrong). NaN if B = 0."""
    return float((r_chosen > r_rejected).float().mean())
