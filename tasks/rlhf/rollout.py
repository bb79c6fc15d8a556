"""PPO rollouts: which prompts an iteration draws, the responses the policy samples for them,
and the no-grad pass that scores them (tasks/rlhf/ppo.py runs these; RECIPE.md §7).

Log-probs, entropy and values are computed on logits / temperature, the distribution actually
sampled from (top-p truncation is not modelled), so at temperature 1 they are the policy's own.
Per-token fields follow models/ppo.py's alignment: column t belongs to token t, the action taken
in state tokens[:t], and is 0 off the response. Pure torch: no Prefect, no MLflow.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from models.generation import ended_at_eos, generate
from models.llama import Llama
from models.ppo import PolicyWithValue, align_to_tokens, entropy_from_logits, sequence_logprobs
from tasks.rlhf.ppo_ranks import RankGroup


class Rollout(NamedTuple):
    """One iteration's sampled batch: B rows of prompt + response, right-padded to T columns."""

    # --- what was sampled ---------------------------------------------------------------------
    indices: list[int]  # (B,) index into the trainer's prompt list of each row
    responses: list[list[int]]  # B sampled responses, token ids, EOS included, never empty
    tokens: torch.Tensor  # (B, T) long, prompt + response, right-padded with pad_id
    response_mask: torch.Tensor  # (B, T) bool, True on the response tokens (EOS included)

    # --- the no-grad pass of the policy that sampled them, and of the reference ----------------
    logprobs: torch.Tensor  # (B, T) log pi_theta_old(token t | tokens[:t]), 0 off the response
    ref_logprobs: torch.Tensor  # (B, T) log pi_0(token t | tokens[:t]), 0 off the response
    values: torch.Tensor  # (B, T) V_old(tokens[:t]), the value head's estimate, 0 off the response
    entropy: float  # mean per-token entropy of the sampling distribution over response tokens
    ended: list[bool]  # (B,) the response stopped at EOS; False: cut off at max_new_tokens
    # what reward_fn returned for the rows, each (B,) float ("r_c" among them); {} without one
    rewards: dict[str, torch.Tensor] = {}


class PromptCycle:
    """Prompt indices in a shuffled order, reshuffled each time the order runs out."""

    def __init__(self, n: int, rng: torch.Generator):
        self.n, self.rng = n, rng
        self.order: list[int] = []

    def draw(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.rng).tolist()
            take = min(k - len(out), len(self.order))
            out += self.order[:take]
            self.order = self.order[take:]
        return out


def generation_seed(seed: int, iteration: int) -> int:
    """A different sampling seed per iteration, reproducible from the run's seed."""
    return (seed * 1_000_003 + iteration) % (2**63)


def chunk_seed(seed: int, chunk: int) -> int:
    """The sampling seed of one chunk of an iteration's batch: a chunk's samples do not depend
    on which rank draws them, nor on how many ranks there are."""
    return (seed * 7_919 + chunk) % (2**63)


# (prompt indices, sampled responses) -> {"r_c": (B,), any other key: (B,)}
ChunkRewardFn = Callable[[list[int], list[list[int]]], dict[str, torch.Tensor]]


def collect_rollout(
    model: PolicyWithValue,
    reference: Llama,
    prompts: list[list[int]],
    indices: list[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_id: int | None,
    pad_id: int,
    seed: int,
    chunk_rows: int,
    reward_fn: ChunkRewardFn | None = None,
    group: RankGroup = RankGroup(0, 1),
) -> Rollout:
    """Sample one response per prompt in `indices` (each must leave room for max_new_tokens)
    with the policy in eval mode, score it (`score_rollout`) and reward it (`reward_fn`), in
    chunks of `chunk_rows` prompts; chunk k runs on rank k mod N and every rank ends with the
    whole batch in order (tasks/rlhf/ppo_ranks.py). The model is left in eval mode."""
    model.eval()
    chunks = [indices[i : i + chunk_rows] for i in range(0, len(indices), chunk_rows)]
    local = {
        k: _chunk(
            model,
            reference,
            prompts,
            chunk,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            eos_id=eos_id,
            pad_id=pad_id,
            seed=chunk_seed(seed, k),
            reward_fn=reward_fn,
        )
        for k, chunk in enumerate(chunks)
        if group.owns(k)
    }
    parts = [p for p in group.gather(local) if p["indices"]]
    if not parts:
        raise RuntimeError(f"no response was sampled for the {len(indices)} prompts")
    device = next(model.parameters()).device
    T = max(p["tokens"].shape[1] for p in parts)

    def cat(key: str, fill) -> torch.Tensor:
        padded = [
            torch.nn.functional.pad(p[key], (0, T - p[key].shape[1]), value=fill) for p in parts
        ]
        return torch.cat(padded).to(device)

    rewards = {
        key: torch.cat([torch.as_tensor(p["rewards"][key]).float().flatten() for p in parts])
        for key in (parts[0]["rewards"] if parts else {})
    }
    counted = sum(p["counted"] for p in parts)
    return Rollout(
        indices=[i for p in parts for i in p["indices"]],
        responses=[r for p in parts for r in p["responses"]],
        tokens=cat("tokens", max(pad_id, 0)),
        response_mask=cat("mask", False),
        logprobs=cat("logprobs", 0.0),
        ref_logprobs=cat("ref_logprobs", 0.0),
        values=cat("values", 0.0),
        entropy=sum(p["entropy_sum"] for p in parts) / max(counted, 1),
        ended=[e for p in parts for e in p["ended"]],
        rewards=rewards,
    )


def _chunk(
    model: PolicyWithValue,
    reference: Llama,
    prompts: list[list[int]],
    indices: list[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_id: int | None,
    pad_id: int,
    seed: int,
    reward_fn: ChunkRewardFn | None,
) -> dict:
    """One chunk, sampled, scored and rewarded; tensors on the CPU (they are gathered)."""
    responses = generate(
        model.policy,
        [prompts[i] for i in indices],
        max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        seed=seed,
    )
    kept = [k for k, r in enumerate(responses) if r]  # generate returns >= 1 token; be safe
    indices, responses = [indices[k] for k in kept], [responses[k] for k in kept]
    if not indices:
        return {"indices": []}
    tokens, mask = pack([prompts[i] for i in indices], responses, max(pad_id, 0))  # (b, t)
    device = next(model.parameters()).device
    logprobs, ref_logprobs, values, entropy = score_rollout(
        model, reference, tokens.to(device), mask.to(device), temperature, len(indices)
    )
    counted = int(mask[:, 1:].sum())
    rewards = reward_fn(indices, responses) if reward_fn is not None else {}
    return {
        "indices": indices,
        "responses": responses,
        "tokens": tokens,
        "mask": mask,
        "logprobs": logprobs.cpu(),
        "ref_logprobs": ref_logprobs.cpu(),
        "values": values.cpu(),
        "entropy_sum": entropy * counted,
        "counted": counted,
        "ended": ended_at_eos(responses, eos_id),
        "rewards": {k: torch.as_tensor(v).detach().float().cpu() for k, v in rewards.items()},
    }


@torch.no_grad()
def score_rollout(
    model: PolicyWithValue,
    reference: Llama,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    chunk_rows: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Old log-probs, reference log-probs and values (B, T), aligned to tokens and 0 off the
    response, plus the mean response entropy; in chunks of chunk_rows rows (the logits of a
    whole batch, B x T x V floats, need not fit in memory)."""
    logprobs, values, ref_logprobs = [], [], []
    entropy_sum, counted = 0.0, 0
    for rows in torch.arange(tokens.shape[0]).split(chunk_rows):
        tok, m = tokens[rows], mask[rows]
        logits, v = model(tok)
        logits = logits / temperature
        logprobs.append(sequence_logprobs(logits, tok, m))
        values.append(torch.where(m, align_to_tokens(v), 0.0))
        ref_logits = reference(tok)[0] / temperature
        ref_logprobs.append(sequence_logprobs(ref_logits, tok, m))
        n = int(m[:, 1:].sum())
        entropy_sum += float(entropy_from_logits(logits[:, :-1], m[:, 1:])) * n
        counted += n
    return (
        torch.cat(logprobs),
        torch.cat(ref_logprobs),
        torch.cat(values),
        entropy_sum / max(counted, 1),
    )


def pack(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompt + response tokens (B, T) and response_mask (B, T), True on the
    response tokens (EOS included)."""
    T = max(len(p) + len(r) for p, r in zip(prompts, responses))
    tokens = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.bool)
    for row, (p, r) in enumerate(zip(prompts, responses)):
        tokens[row, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        mask[row, len(p) : len(p) + len(r)] = True
    return tokens, mask
