"""Direct Preference Optimization (Rafailov et al., 2023) on the recipe's preference pairs.

The policy pi is trained directly on pairs (prompt x, chosen y_c, rejected y_r) against a frozen
reference pi_ref (the round's starting model):

    loss = -log sigmoid( beta * (log pi(y_c|x) - log pi_ref(y_c|x))
                       - beta * (log pi(y_r|x) - log pi_ref(y_r|x)) - m(r) )

the sigmoid loss, with the reward models' optional margin m(r) from the pair's rating level
(models/losses.py MARGINS; "none" is plain DPO). beta * (log pi - log pi_ref) is the implicit
reward, so this is `pairwise_loss` on implicit rewards. Log-probabilities are sums over the
response tokens only (the prompt is context).

The reference log-probabilities do not change during training: they are computed once
(`response_logprobs` under no_grad with the reference model) and travel with each batch, so
one model is in memory during training.

`DpoPolicy` is a `Llama` (same parameters, same state dict: checkpoints export as any policy)
whose `forward(tokens, targets)` returns the DPO loss when given the DPO targets.
"""

from __future__ import annotations

import torch

from models.llama import Llama
from models.losses import pairwise_loss
from models.ppo import sequence_logprobs

# columns of the targets (2B, 4): chosen rows then rejected rows
Y_LENGTH, Y_MARGIN, Y_PROMPT, Y_REF = 0, 1, 2, 3
Y_COLUMNS = 4


def response_mask(tokens: torch.Tensor, prompt_len: torch.Tensor, length: torch.Tensor):
    """(B, T) bool: columns prompt_len .. length - 1, the response tokens of each row."""
    cols = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
    return (cols >= prompt_len.long().unsqueeze(1)) & (cols < length.long().unsqueeze(1))


def response_logprobs(
    model: Llama, tokens: torch.Tensor, prompt_len: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Sum of log p(response tokens | earlier tokens) per row, (B,) float32."""
    logits, _ = Llama.forward(model, tokens)
    mask = response_mask(tokens, prompt_len, length)
    return sequence_logprobs(logits, tokens, mask).sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    margin: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sigmoid DPO loss (module docstring), mean over pairs; all inputs (B,)."""
    return pairwise_loss(
        beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected), margin
    )


class DpoPolicy(Llama):
    """A Llama trained with the DPO loss (the targets carry the reference log-probs)."""

    beta: float = 0.1
    use_margin: bool = False

    @classmethod
    def from_llama(cls, policy: Llama, beta: float, use_margin: bool) -> "DpoPolicy":
        model = cls(policy.config)
        model.load_state_dict(policy.state_dict())
        model.beta, model.use_margin = float(beta), bool(use_margin)
        return model

    def forward(self, tokens, targets=None, *args, **kwargs):
        """With DPO targets (2B, 4): (policy response log-probs (2B,), loss). Otherwise a plain
        Llama forward (generation, evaluation)."""
        if targets is None or targets.dim() != 2 or targets.shape[1] != Y_COLUMNS:
            return super().forward(tokens, targets, *args, **kwargs)
        N = tokens.shape[0]
        if N % 2:
            raise ValueError(f"DPO batches hold chosen then rejected rows; got {N} rows")
        lp = response_logprobs(self, tokens, targets[:, Y_PROMPT], targets[:, Y_LENGTH])
        ref = targets[:, Y_REF].float()
        B = N // 2
        margin = targets[:B, Y_MARGIN].float() if self.use_margin else None
        return lp, dpo_loss(lp[:B], lp[B:], ref[:B], ref[B:], self.beta, margin)
