"""PPO math for iterative RLHF (Touvron et al., 2023, §3.2.3; RECIPE.md §7). Pure torch, no I/O.

The policy maximises R(g|p) = R~c(g|p) - beta * KL(pi_theta(g|p) || pi_0(g|p)), where

    R_c  = R_s if IS_SAFETY(p) or R_s < SAFETY_GATE else R_h         (gated_reward)
    R~c  = WHITEN(LOGIT(R_c))                                        (logit, RunningWhitener)

One PPO step, as the caller strings these together:
    1. logprobs / ref_logprobs / values of the rollout           (logprobs_from_logits)
    2. score = whitener.whiten(logit(gated_reward(...)))          (after whitener.update)
    3. rewards, kl = per_token_rewards(score, ..., beta)          (-beta * KL_t, score at the end)
    4. advantages, returns = gae(rewards, values, response_mask)
    5. advantages = whiten(advantages, response_mask)
    6. policy_loss + value_loss per minibatch                     (stats come back detached)

Shapes: B rows, T tokens (prompt + response + pad), V vocabulary. `response_mask` (B, T) bool is
True on the tokens the policy generated; every per-token quantity is only meaningful there.

Alignment: every per-token quantity at column t belongs to token t, the action taken in state
tokens[:t]. Its log-prob and value are therefore read one column earlier, from the output at
t - 1 (`sequence_logprobs`, `align_to_tokens`); column 0 has no state before it and gets 0.
`PolicyWithValue` gives the logits and values of one trunk pass, unshifted.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from models.llama import Llama

SAFETY_GATE = 0.15  # §3.2.3: R_s < 0.15 -> use R_s (precision 0.89, recall 0.55 on safety tests)
KLEstimator = Literal["k1", "k3"]
KL_ESTIMATORS = ("k1", "k3")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the True entries of mask (same shape); over all dims (scalar) or `dim`.

    Masked entries are replaced by 0 before summing, so inf/NaN there (e.g. -inf log-probs on
    pad) cannot leak in. An empty mask gives 0, not NaN (count clamped to 1).
    """
    mask = mask.bool()
    kept = torch.where(mask, x, torch.zeros_like(x))
    total, count = (kept.sum(), mask.sum()) if dim is None else (kept.sum(dim), mask.sum(dim))
    return total / count.clamp(min=1).to(total.dtype)


# --- rewards ------------------------------------------------------------------------------


def gated_reward(
    r_help: torch.Tensor, r_safe: torch.Tensor, is_safety: torch.Tensor
) -> torch.Tensor:
    """R_c (B,) from sigmoid scores r_help, r_safe in (0, 1) (B,) and is_safety (B,) bool.

    R_s where the prompt is safety-tagged or R_s < SAFETY_GATE (strict: R_s == 0.15 is not
    gated), else R_h.
    """
    use_safety = is_safety.bool() | (r_safe < SAFETY_GATE)
    return torch.where(use_safety, r_safe, r_help)


def logit(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Inverse sigmoid log(p / (1 - p)), same shape as p, with p clamped to [eps, 1 - eps].

    p and 1 - p are clamped separately: in float32, 1 - 1e-6 rounds, so clamping p alone gives
    logit(1) = 13.802 against logit(0) = -13.8155; this way the ends are symmetric, +-13.8155.
    """
    return torch.log(p.clamp(eps, 1 - eps)) - torch.log((1 - p).clamp(eps, 1 - eps))


def _whiten_with(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, shift_mean: bool, eps: float
) -> torch.Tensor:
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Batch whitening of x (any shape) with the mean and population variance of its masked entries.

    Returns x's shape: (x - mean) / sqrt(var + eps) on the masked entries and 0 on the others
    (advantages of prompt/pad tokens are then 0). shift_mean=False adds the mean back (scale
    only, as TRL does for rewards).
    """
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    mask = mask.bool()
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = _whiten_with(x, mean, var, shift_mean, eps)
    return torch.where(mask, out, torch.zeros_like(out))


class RunningWhitener:
    """WHITEN for the scores R~c with the mean/std of the last `window` scores seen.

    The paper whitens but does not say over what. One PPO batch (512 prompts) is already a fair
    sample, but the reward distribution drifts as the policy improves, so stats over all history
    go stale. The default window of 1024 = the last two PPO batches: steadier than one batch,
    still tracking the current policy. Values older than the window are forgotten. The std is
    the population std (no Bessel correction), as in `whiten`.
    """

    def __init__(self, window: int = 1024) -> None:
        if window < 1:
            raise ValueError(f"RunningWhitener window must be >= 1; got {window}")
        self.window = window
        self._values = torch.zeros(0, dtype=torch.float64)  # (<= window,) newest last

    def update(self, x: torch.Tensor) -> None:
        """Add the values of x (any shape, flattened in order) to the window."""
        flat = x.detach().flatten().to("cpu", torch.float64)
        self._values = torch.cat([self._values, flat])[-self.window :]

    @property
    def count(self) -> int:
        return self._values.numel()

    @property
    def mean(self) -> float:
        self._require_values()
        return float(self._values.mean())

    @property
    def std(self) -> float:
        self._require_values()
        return float(self._values.std(unbiased=False))

    def whiten(self, x: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
        """x (any shape) whitened with the window's mean/std; call update() first."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
        var = torch.tensor(self.std**2, dtype=x.dtype, device=x.device)
        return _whiten_with(x, mean, var, shift_mean, eps)

    def _require_values(self) -> None:
        if self.count == 0:
            raise RuntimeError("RunningWhitener has seen no values; call update() before whiten()")


# --- per-token quantities -----------------------------------------------------------------


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(tokens[b, t]) (B, T) float32 from logits (B, T, V) already aligned with tokens (B, T).

    The caller shifts: logits[:, t] must be the prediction for tokens[:, t]. log_softmax runs in
    float32 (bf16 logits lose the small differences that the ratio exp(lp - old_lp) amplifies).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLEstimator = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_0), (B, T), from samples of pi_theta.

    k1 = lp - ref (unbiased, can be negative); k3 = exp(ref - lp) - 1 - (ref - lp) (unbiased,
    always >= 0, lower variance; Schulman, "Approximating KL divergence").
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; choose one of {KL_ESTIMATORS}")


def _last_true_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last True of each row of mask (B, T); ValueError if a row has none."""
    empty = ~mask.any(dim=-1)
    if empty.any():
        raise ValueError(
            f"rows {empty.nonzero().flatten().tolist()} have no response token; "
            "drop empty responses (or keep their EOS in response_mask)"
        )
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask, positions, -1).argmax(dim=-1)


def per_token_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    beta: float,
    kind: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO rewards (B, T) and the KL (B, T), both 0 off the response.

    score (B,) = R~c; logprobs, ref_logprobs (B, T) of the rollout (no grad expected);
    response_mask (B, T) bool. rewards = -beta * KL_t on response tokens, plus score on the
    last response token of each row. Row lengths may differ; every row needs a response token.
    """
    mask = response_mask.bool()
    kl = torch.where(mask, kl_penalty(logprobs, ref_logprobs, kind), 0.0)  # (B, T)
    rewards = -beta * kl
    last = _last_true_index(mask)  # (B,)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score.to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the response tokens: (advantages, returns), (B, T).

    rewards, values (B, T); response_mask (B, T) bool. Masked tokens are skipped as if absent
    (the step after a response token is the next response token; after the last one, value 0),
    so padding on either side and holes inside the response are all handled:
        delta_t = r_t + gamma * V_next - V_t,   A_t = delta_t + gamma * lam * A_next.
    returns = advantages + values. Both are 0 off the response and carry no grad (targets).
    """
    rewards, values, mask = rewards.detach(), values.detach(), response_mask.bool()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_adv = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(m, adv_t, 0.0)
        next_value = torch.where(m, values[:, t], next_value)
        next_adv = torch.where(m, adv_t, next_adv)
    returns = torch.where(mask, advantages + values, 0.0)
    return advantages, returns


# --- losses -------------------------------------------------------------------------------


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate: (loss, clipfrac, approx_kl), scalars; stats detached.

    All inputs (B, T). ratio = exp(lp - old_lp);
    loss = masked mean of max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip)).
    clipfrac = share of response tokens where the clipped term won (clipping changed the loss).
    approx_kl = masked mean of k3 KL(old || new) = (ratio - 1) - log ratio >= 0.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    clipfrac = masked_mean((clipped > unclipped).float(), response_mask)
    approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, response_mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip: float = 0.2,
) -> torch.Tensor:
    """Clipped value loss, a scalar: 0.5 * masked mean of max((V - R)^2, (V_clip - R)^2).

    All inputs (B, T); V_clip = old_V + clamp(V - old_V, -clip, clip) keeps the value head
    within `clip` of its rollout estimate, as the policy is kept within its ratio clip.
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    err = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, response_mask)


def entropy_from_logits(logits: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over response tokens of the entropy of softmax(logits (B, T, V)): a scalar.

    H = logsumexp(l) - sum softmax(l) * l, in float32.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    entropy = torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)  # (B, T)
    return masked_mean(entropy, response_mask)


# --- policy with value head ---------------------------------------------------------------


def align_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) read at each column -> (B, T, ...) moved one column right, column 0 zero.

    The output at column t - 1 has seen tokens[:t], so it is what the model says about token t
    (the value V(tokens[:t]) of the state token t is chosen in, for instance).
    """
    out = torch.zeros_like(x)
    out[:, 1:] = x[:, :-1]
    return out


def sequence_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, response_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """log p(tokens[:, t] | tokens[:, :t]) at column t, (B, T) float32, from logits (B, T, V).

    Column t comes from logits[:, t - 1] (the next-token prediction made after tokens[:t]);
    column 0 has no prediction and gets 0. With response_mask (B, T) bool, columns off the mask
    are 0 as well.
    """
    B = tokens.shape[0]
    lp = logprobs_from_logits(logits[:, :-1], tokens[:, 1:])  # (B, T - 1)
    out = torch.cat([lp.new_zeros(B, 1), lp], dim=1)  # (B, T)
    if response_mask is not None:
        out = torch.where(response_mask.bool(), out, torch.zeros_like(out))
    return out


class PolicyWithValue(nn.Module):
    """A `Llama` policy plus a scalar value head on the same final-norm hidden states that its LM
    head reads: one trunk pass gives both the logits and the values.

    `self.policy` stays a plain `Llama` (save it or sample from it as is); the head is
    `value_head`, nn.Linear(dim, 1), zero at the start so that the first value-loss gradients
    move the head only, not the trunk the policy shares with it.
    """

    def __init__(self, policy: Llama):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.dim, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        first = next(policy.parameters())
        self.value_head.to(device=first.device, dtype=first.dtype)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> (logits (B, T, V) float32, values (B, T) float32), both unshifted:
        column t is read after tokens[:t + 1]. Attention is causal, so right padding leaves the
        columns before it unchanged."""
        h = self.policy.hidden_states(tokens)  # (B, T, C): Llama.forward's pass up to its head
        logits = self.policy.output(h).float()
        values = self.value_head(h).squeeze(-1).float()
        return logits, values
