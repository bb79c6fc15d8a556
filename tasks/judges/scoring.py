"""Scoring responses for RLHF: both reward models and the gated R_c, the rule annotator's score
(a stand-in for people), and the KL of one model to another along given answers.

Responses are scored as the reward models were trained (tasks/reward/data.py `encode_pairs`):
the prompt in the Llama 2 chat format, then the response text re-encoded with a trailing space
and EOS (`answer_tokens`); a response cut off at `max_new_tokens` gets no EOS, so it is not
scored as if it had ended. A prompt too long for `seq_len` loses its oldest tokens (its `<s>`
is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.llama import Llama
from models.ppo import gated_reward
from models.reward import RewardModel
from tasks.chat.format import answer_tokens, prompt_tokens
from tasks.chat.prompt import Prompt
from tasks.judges.annotator import RuleAnnotator, RuleAnnotatorConfig, toxicity
from tasks.judges.toxicity import ToxicityConfig, make_scorer
from tasks.training.model_io import load_reward_model

MAX_RESPONSE_SHARE = 0.5  # a response (with </s>) may take at most seq_len // 2 tokens


def rm_sequence(
    processor, prompt: Prompt, response: str, seq_len: int, ended: bool = True
) -> list[int]:
    """The tokens a reward model scores for (prompt, response), at most `seq_len`; no EOS after
    a response that did not end (cut off at max_new_tokens)."""
    answer = answer_tokens(processor, response, ended)
    answer = answer[: max(1, int(seq_len * MAX_RESPONSE_SHARE))]  # an over-long answer is cut
    tokens = prompt_tokens(processor, prompt["system"], prompt["turns"])
    budget = seq_len - len(answer)
    if len(tokens) > budget:
        tokens = [tokens[0], *tokens[len(tokens) - (budget - 1) :]]
    return tokens + answer


def rm_probs(
    model: RewardModel, sequences: Sequence[list[int]], batch_size: int = 32, pad_id: int = 0
) -> np.ndarray:
    """sigmoid(score) (N,) float64 of each token sequence, `batch_size` at a time."""
    out = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            lengths = torch.tensor([len(s) for s in batch], dtype=torch.long)
            tokens = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)
            for i, seq in enumerate(batch):
                tokens[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            out.append(torch.sigmoid(model.scores(tokens, lengths)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class RewardScorer:
    """Both reward models; `score` gives R_h, R_s and the gated R_c (sigmoid scores)."""

    helpfulness: RewardModel
    safety: RewardModel
    processor: object
    seq_len: int
    batch_size: int = 32

    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        ended: Sequence[bool] | None = None,
    ) -> dict[str, np.ndarray]:
        """`ended[i]` False: response i was cut off and is scored without EOS (default: all
        ended, e.g. texts people wrote)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        ended = [True] * len(responses) if ended is None else list(ended)
        if len(ended) != len(responses):
            raise ValueError(f"{len(ended)} ended flags for {len(responses)} responses")
        seqs = [
            rm_sequence(self.processor, p, r, self.seq_len, e)
            for p, r, e in zip(prompts, responses, ended)
        ]
        r_h = rm_probs(self.helpfulness, seqs, self.batch_size)
        r_s = rm_probs(self.safety, seqs, self.batch_size)
        is_safety = torch.tensor([bool(p["is_safety"]) for p in prompts], dtype=torch.bool)
        r_c = gated_reward(torch.from_numpy(r_h), torch.from_numpy(r_s), is_safety).numpy()
        return {"r_h": r_h, "r_s": r_s, "r_c": r_c}


def load_scorer(rms: dict[str, str], processor, seq_len: int) -> RewardScorer:
    """The scorer of the reward models in `rms` ({"helpfulness": folder, "safety": folder})."""
    return RewardScorer(
        load_reward_model(Path(rms["helpfulness"])),
        load_reward_model(Path(rms["safety"])),
        processor,
        seq_len,
    )


def rule_annotator(
    cfg: RuleAnnotatorConfig, toxicity_cfg: ToxicityConfig, noise: bool = True
) -> RuleAnnotator:
    """The rule annotator; `noise=False` for measurements (its noise imitates labelling)."""
    return RuleAnnotator(
        cfg if noise else cfg.model_copy(update={"noise": 0.0}), make_scorer(toxicity_cfg)
    )


def annotator_scores(
    annotator: RuleAnnotator, prompts: Sequence[Prompt], answers: Sequence[str]
) -> np.ndarray:
    """The rule annotator's quality score in [0, 1] of each answer on its prompt's own axis:
    safety for safety-tagged prompts, helpfulness otherwise (what `judge` compares). No noise:
    this is a measurement, not a simulated label."""
    tox = toxicity(list(answers), annotator.scorer) if len(answers) else np.zeros(0)
    out = np.zeros(len(answers))
    for i, (p, a) in enumerate(zip(prompts, answers)):
        help_score = annotator.helpfulness(p, a)
        out[i] = (
            annotator.safety(p, a, float(tox[i]), help_score)[1] if p["is_safety"] else help_score
        )
    return out


def win_rates(scores: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """1 where score beats the baseline's on the same prompt, 0.5 on a tie, 0 on a loss."""
    return np.where(scores > baseline, 1.0, np.where(scores == baseline, 0.5, 0.0))


def kl_along(
    model: Llama,
    reference: Llama,
    prompts: Sequence[list[int]],
    answers: Sequence[list[int]],
    batch_size: int = 16,
) -> list[float | None]:
    """Per answer, the mean over its tokens of the exact KL(model || reference) between the two
    next-token distributions, given the same prefix (prompt + answer so far). None for an empty
    answer. Rows are right-padded; attention is causal, so the padding changes nothing."""
    out: list[float | None] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            rows = [
                (p, a)
                for p, a in zip(
                    prompts[start : start + batch_size], answers[start : start + batch_size]
                )
            ]
            width = max(len(p) + len(a) for p, a in rows)
            tokens = torch.zeros(len(rows), width, dtype=torch.long)
            for i, (p, a) in enumerate(rows):
                tokens[i, : len(p) + len(a)] = torch.tensor(p + a, dtype=torch.long)
            logp = torch.log_softmax(model(tokens)[0], dim=-1)  # (B, T, V)
            logq = torch.log_softmax(reference(tokens)[0], dim=-1)
            kl = (logp.exp() * (logp - logq)).sum(-1)  # (B, T): KL of the distribution at t
            for i, (p, a) in enumerate(rows):
                if not a:
                    out.append(None)
                    continue
                # the distribution that produced answer token j sits at position len(p) - 1 + j
                out.append(float(kl[i, len(p) - 1 : len(p) - 1 + len(a)].mean().clamp(min=0)))
    return out
