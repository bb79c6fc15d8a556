"""The reward model: the Llama trunk with a scalar head (Touvron et al., 2023, §3.2.2;
RECIPE.md §6).

"The model architecture and hyper-parameters are identical to those of the pretrained language
models, except that the classification head for next-token prediction is replaced with a
regression head for outputting a scalar reward." Each RM starts from the chat (SFT) checkpoint
(`RewardModel.from_llama`).

The trunk's parameters keep Llama's names (`tok_embeddings`, `layers.*`, `norm`), so a Llama
state dict minus `output.weight` loads as is, and the head adds `score_head.weight/bias`.

Batch layout for the shared training loop (`model(x, y) -> (scores, loss)`):

    x  (2B, T) token ids, right-padded: rows 0..B-1 the chosen responses, rows B..2B-1 the
       rejected ones, row i and row B + i one pair
    y  (2B, 3) float: [:, 0] length (real tokens), [:, 1] the pair's margin m(r) (read from the
       chosen row), [:, 2] safety label (1 safe, 0 unsafe, -1 unknown)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.llama import Llama, LlamaConfig, LlamaTrunk
from models.losses import pairwise_loss, safety_aux_loss

# Columns of the (2B, 3) targets.
Y_LENGTH, Y_MARGIN, Y_SAFE = 0, 1, 2
Y_COLUMNS = 3


class RewardModel(LlamaTrunk):
    """The Llama trunk (embeddings, blocks, final norm: `LlamaTrunk.hidden_states`, the same pass
    as `Llama.forward`) with the LM head replaced by a scalar head read at the last non-pad token
    of each sequence (RECIPE.md §6). `flops_per_token` is Llama's formula; N counts the head's
    dim + 1 parameters, applied at one position per row (a slight overcount)."""

    def __init__(self, cfg: LlamaConfig, aux_weight: float = 0.0):
        if aux_weight < 0:
            raise ValueError(
                f"aux_weight must be >= 0 (0 = no safety auxiliary loss); got {aux_weight}"
            )
        super().__init__(cfg)
        self.aux_weight = aux_weight  # weight of safety_aux_loss in the training loss
        self.score_head = nn.Linear(cfg.dim, 1)
        self.apply(self._init_weights)
        # Head: N(0, 1/(dim+1)), zero bias, as OpenAI's reward models (Ziegler et al., 2019,
        # lm-human-preferences): the final norm makes hidden states unit-RMS, so initial scores
        # are O(1) and differ between responses, and trunk gradients are non-zero from step 0.
        nn.init.normal_(self.score_head.weight, mean=0.0, std=1.0 / math.sqrt(cfg.dim + 1))
        nn.init.zeros_(self.score_head.bias)

    @classmethod
    def from_llama(cls, llama: Llama, aux_weight: float = 0.0) -> RewardModel:
        """A reward model whose trunk is a copy of `llama`'s weights (its LM head is dropped);
        the score head is freshly initialised. Same device and dtype as `llama`."""
        first = next(llama.parameters())
        model = cls(llama.config, aux_weight).to(device=first.device, dtype=first.dtype)
        trunk = {k: v for k, v in llama.state_dict().items() if k != "output.weight"}
        missing, unexpected = model.load_state_dict(trunk, strict=False)
        assert set(missing) == {"score_head.weight", "score_head.bias"} and not unexpected, (
            missing,
            unexpected,
        )
        return model

    def scores(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) right-padded, lengths (B,) real tokens per row -> (B,) float32 scores,
        read at index lengths - 1. Attention is causal, so padding after it changes nothing."""
        B, T = tokens.shape
        lengths = lengths.to(device=tokens.device, dtype=torch.long)
        if lengths.shape != (B,):
            raise ValueError(f"lengths has shape {tuple(lengths.shape)}; expected ({B},)")
        if bool((lengths < 1).any() | (lengths > T).any()):
            raise ValueError(
                f"lengths must lie in 1..{T} (the padded length); got "
                f"{lengths.min().item()}..{lengths.max().item()}"
            )
        h = self.hidden_states(tokens)  # (B, T, C)
        last = h[torch.arange(B, device=tokens.device), lengths - 1]  # (B, C)
        return self.score_head(last).squeeze(-1).float()  # (B,)

    def forward(
        self,
        tokens: torch.Tensor,  # (2B, T) chosen rows then rejected rows, right-padded
        targets: torch.Tensor | None = None,  # (2B, 3) length, margin, safe label (module doc)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (scores (2B,) float32, loss or None). Without targets every row counts as full
        length (no padding) and there is no loss."""
        N, T = tokens.shape
        if targets is None:
            return self.scores(tokens, torch.full((N,), T, device=tokens.device)), None
        if targets.shape != (N, Y_COLUMNS) or N % 2:
            raise ValueError(
                f"expected an even number of rows (chosen then rejected) and targets "
                f"({N}, {Y_COLUMNS}); got tokens {tuple(tokens.shape)}, "
                f"targets {tuple(targets.shape)}"
            )
        scores = self.scores(tokens, targets[:, Y_LENGTH])  # (2B,)
        B = N // 2
        margin = targets[:B, Y_MARGIN].float()  # (B,) from the chosen rows
        loss = pairwise_loss(scores[:B], scores[B:], margin)
        if self.aux_weight:
            loss = loss + self.aux_weight * safety_aux_loss(scores, targets[:, Y_SAFE].float())
        return scores, loss

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        return self.state_dict()
