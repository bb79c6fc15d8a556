"""Batched sampling with a KV cache: greedy, temperature and top-p (nucleus, Holtzman et al., 2020).

Prompts of different lengths share one batch. Padding only changes where the pad columns sit in
the cache; every sequence gets its own positions (0, 1, ... over its real tokens) and a key mask
that hides pad columns, so a padded prompt gives the same tokens as that prompt alone:

    left   [pad pad a b c] -> new tokens at columns 5, 6, ...; positions 3, 4, ...
    right  [a b c pad pad] -> first token from column 2's logits, then columns 5, 6, ...;
           the pad columns 3-4 stay masked for the rest of the generation.

Left padding is the default (the first new token's logits are in the last column for all rows).
`use_cache=False` re-runs the whole sequence at every step with the same positions and masks
(same tokens, for benchmarks and checks; quadratic in length).
Used by rejection sampling, PPO rollouts, preference collection, distillation and evaluation.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from models.llama import KVCache, Llama


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """probs (B, V) -> (B, V): zero all but the smallest set of most likely tokens whose mass
    reaches p, renormalised. The top token is always kept, so p = 0 is greedy."""
    if p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above
    drop = mass_before >= p
    drop[..., 0] = False
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def sample_top_p(
    probs: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """probs (B, V) -> token ids (B,), sampled from the top-p nucleus of each row."""
    return torch.multinomial(top_p_filter(probs, p), 1, generator=generator).squeeze(-1)


def next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """logits (B, V) -> token ids (B,): argmax when temperature is 0, else top-p sampling from
    softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    return sample_top_p(F.softmax(logits.float() / temperature, dim=-1), top_p, generator)


def _pad_batch(
    prompts: list[list[int]], pad_id: int, padding: str, total: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, L) padded to the longest prompt, and valid (B, total) bool: True on real prompt
    tokens and on every column after the prompt block (where new tokens go)."""
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    valid = torch.ones(len(prompts), total, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        start = width - len(prompt) if padding == "left" else 0
        tokens[row, start : start + len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        valid[row, :width] = False
        valid[row, start : start + len(prompt)] = True
    return tokens.to(device), valid.to(device)


def _prefix_inputs(valid: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, T) and attention mask (B, 1, T, T) for the first T columns: each sequence
    counts positions over its real tokens; causal over real tokens, and a pad column also sees
    itself (no all-masked row)."""
    positions = (valid[:, :T].cumsum(dim=-1) - 1).clamp(min=0)
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=valid.device)
    return positions, ((causal & valid[:, None, :T]) | eye)[:, None]


def _check_args(model: Llama, prompts, max_new_tokens, temperature, top_p, padding) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and no prompt may be empty")
    if padding not in ("left", "right"):
        raise ValueError(f"padding must be 'left' or 'right', got {padding!r}")
    if temperature < 0 or not 0 <= top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 <= top_p <= 1, got {temperature}, {top_p}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > model.config.max_seq_len:
        raise ValueError(
            f"prompt length {longest} + max_new_tokens {max_new_tokens} exceeds the "
            f"model's max_seq_len {model.config.max_seq_len}"
        )


@torch.inference_mode()
def generate(
    model: Llama,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    seed: int | None = None,
    padding: Literal["left", "right"] = "left",
    use_cache: bool = True,
) -> list[list[int]]:
    """New tokens for each prompt (the prompt excluded), at most `max_new_tokens`; a sequence
    stops after it samples `eos_id` (included in its output), the others carry on.
    temperature 0 = greedy; `seed` makes sampling reproducible (else torch's global RNG).
    `pad_id` is what the pad columns are fed; they are masked, so it never changes the result
    and never appears in the output; a negative id (sentencepiece's "no pad", -1) is fed as 0.
    `use_cache=False` runs the full prompt + new tokens through the model at every step instead
    of one token against a KV cache: the same tokens, only slower."""
    _check_args(model, prompts, max_new_tokens, temperature, top_p, padding)
    pad_id = max(pad_id, 0)
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    cfg, param = model.config, next(model.parameters())
    device = param.device
    generator = None if seed is None else torch.Generator(device).manual_seed(seed)
    B, width = len(prompts), max(len(p) for p in prompts)
    total = width + max_new_tokens
    tokens, valid = _pad_batch(prompts, pad_id, padding, total, device)
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
    unpadded = all(len(p) == width for p in prompts)  # no pad column: decode steps need no mask
    cache = (
        KVCache(cfg.n_layers, B, cfg.n_kv_heads, total, cfg.head_dim, param.dtype, device)
        if use_cache
        else None
    )

    # 1. prefill: causal over real tokens; a pad row also sees itself (no all-masked row).
    # The LM head runs on each row's last prompt position only: on the other positions it would
    # be (B * L * vocab) multiply-adds of logits nobody reads (vocab 49,152 on SmolLM2).
    positions, mask = _prefix_inputs(valid, width)  # (B, L), (B, 1, L, L)
    if unpadded:  # positions 0..L-1 and plain causal attention (SDPA's is_causal, no mask)
        positions, mask = None, None
    hidden = model.hidden_states(tokens, positions=positions, attention_mask=mask, cache=cache)
    last = torch.full_like(lengths, width - 1) if padding == "left" else lengths - 1
    logits = model.output(hidden[torch.arange(B, device=device), last]).float()  # (B, V)

    # 2. decode one token per step for all rows; finished rows are fed pad and ignored
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    steps = 0
    for step in range(max_new_tokens):
        tok = next_token(logits, temperature, top_p, generator).masked_fill(done, pad_id)
        out[:, step] = tok
        steps = step + 1
        if eos_id is not None:
            done |= tok == eos_id
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if use_cache:
            hidden = model.hidden_states(
                tok[:, None],
                positions=(lengths + step)[:, None],
                attention_mask=None if unpadded else valid[:, None, None, : width + step + 1],
                cache=cache,
            )
            logits = model.output(hidden).float()
        else:  # the whole sequence again: prompt block + every token so far (pad after EOS)
            positions, mask = _prefix_inputs(valid, width + step + 1)
            sequence = torch.cat([tokens, out[:, : step + 1]], dim=1)
            logits, _ = model(sequence, positions=positions, attention_mask=mask)
        logits = logits[:, -1]
    return [_until_eos(row, eos_id) for row in out[:, :steps].tolist()]


def _until_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    if eos_id is not None and eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1]
    return tokens


@torch.inference_mode()
def greedy_reference(
    model: Llama, prompt: list[int], n: int, eos_id: int | None = None
) -> list[int]:
    """Greedy decoding the slow, obviously correct way: the whole sequence through the model
    at every step, no cache, no padding. For tests."""
    device = next(model.parameters()).device
    sequence, new = list(prompt), []
    for _ in range(n):
        logits, _ = model(torch.tensor([sequence], device=device))
        tok = int(logits[0, -1].argmax())
        sequence.append(tok)
        new.append(tok)
        if tok == eos_id:
            break
    return new


def ended_at_eos(rows: list[list[int]], eos_id: int | None) -> list[bool]:
    """Per row of `generate`'s output: True when the row stopped at `eos_id`, False when it was
    cut off at max_new_tokens (or no eos_id was given). `generate` truncates after EOS, so a row
    ended iff its last token is eos_id."""
    return [eos_id is not None and bool(row) and row[-1] == eos_id for row in rows]
