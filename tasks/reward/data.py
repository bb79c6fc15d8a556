"""Reward-model data (RECIPE.md §6): the data mix, pairs as chat-format tokens, and batches.

Mix (§3.2.2): the Helpfulness RM trains on every helpfulness pair plus an equal number sampled
from the safety pairs; the Safety RM on every safety pair mixed 90/10 with helpfulness pairs.

Encoding: a sequence is the prompt exactly as the policy sees it (`prompt_tokens`, ending with
"[/INST]") followed by the response exactly as SFT trains an answer:
encode(f"{response.strip()} ") + [eos]. A response longer than MAX_RESPONSE_SHARE of seq_len
(seq_len // 2 tokens, </s> included) excludes its pair (`reward_too_long`), so at least half of
every sequence remains for the prompt. When prompt + response does not fit, the prompt loses
its oldest tokens (after the leading <s>): the response is never cut, and the chosen and
rejected sequences keep the same prompt tokens, so the RM compares the two responses in the
same context.

Batches: `PairBatches.batch(index) -> (x, y)`, x (2B, seq_len) right-padded with the B chosen
sequences first, then the B rejected ones (row i and row B + i are one pair); y (2B, 3) float32
with columns Y_LENGTH, Y_MARGIN, Y_SAFE, as RewardModel.forward reads them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from tasks.chat.format import answer_tokens, prompt_tokens
from tasks.judges.scoring import MAX_RESPONSE_SHARE

RewardModelKind = Literal["helpfulness", "safety"]
Y_LENGTH, Y_MARGIN, Y_SAFE = 0, 1, 2  # columns of y
SAFE, UNSAFE, UNKNOWN = 1, 0, -1  # the safe label column
Excluded = tuple[dict, str, str]  # (row, reason, detail), like tasks.sft.tokenize


def data_mix(
    pairs: list[dict],
    rm: RewardModelKind,
    seed: int,
    safety_share: float = 0.9,
    other_pairs: str = "all",
) -> tuple[list[dict], dict]:
    """(train rows of `rm`'s mix, stats). Only rows with split == "train" are used.

    helpfulness: all helpfulness pairs + min(n_helpfulness, n_safety) safety pairs.
    safety: all safety pairs + min(round(n_safety * (1 - share) / share), n_helpfulness)
    helpfulness pairs, so that safety pairs are `safety_share` of the mix when enough exist.
    The sampled pairs are drawn with a seeded RNG, without replacement, and kept in input order
    after the primary kind (PairBatches shuffles). Stats: counts available and mixed, by kind.
    `other_pairs` narrows the other kind's candidates first: "benign" keeps the pairs whose
    prompt has no risk category, "none" keeps none.
    """
    if rm not in ("helpfulness", "safety"):
        raise ValueError(f"rm must be 'helpfulness' or 'safety', got {rm!r}")
    if not 0 < safety_share <= 1:
        raise ValueError(f"safety_share must be in (0, 1], got {safety_share}")
    train = [p for p in pairs if p["split"] == "train"]
    by_kind = {kind: [p for p in train if p["kind"] == kind] for kind in ("helpfulness", "safety")}
    other_kind = "safety" if rm == "helpfulness" else "helpfulness"
    primary, other = by_kind[rm], by_kind[other_kind]
    if other_pairs == "benign":
        other = [p for p in other if p.get("risk_category") is None]
    elif other_pairs == "none":
        other = []
    elif other_pairs != "all":
        raise ValueError(f"other_pairs must be 'all', 'benign' or 'none', got {other_pairs!r}")
    if not primary:
        raise ValueError(
            f"no train pairs of kind {rm!r} among {len(pairs)} pairs; the {rm} RM "
            "needs them (check the preference data's kind and split columns)"
        )
    if rm == "helpfulness":
        wanted = len(primary)
    else:
        wanted = round(len(primary) * (1 - safety_share) / safety_share)
    n_other = min(wanted, len(other))
    picked = np.random.default_rng([seed, 2]).choice(len(other), size=n_other, replace=False)
    mix = primary + [other[i] for i in sorted(picked.tolist())]
    stats = {
        "pairs": len(mix),
        f"pairs.{rm}": len(primary),
        f"pairs.{other_kind}": n_other,
        f"wanted.{other_kind}": wanted,
        f"available.{other_kind}": len(other),
        "skipped_not_train": len(pairs) - len(train),
    }
    return mix, stats


@dataclass(frozen=True)
class EncodedPair:
    pair_id: str
    chosen: list[int]  # prompt + chosen response + </s>, at most seq_len tokens
    rejected: list[int]  # the same prompt tokens + rejected response + </s>
    margin: float  # m(r) of the pair's rating (0 for no margin)
    chosen_safe: int  # SAFE 1, UNSAFE 0, UNKNOWN -1
    rejected_safe: int
    rating: str
    kind: str
    prompt_len: int = 0  # prompt tokens at the front of both sequences (0: not recorded)


def _safe_label(value) -> int:
    return UNKNOWN if value is None else (SAFE if value else UNSAFE)


def encode_pairs(
    rows: list[dict], processor, seq_len: int, margins: Sequence[float]
) -> tuple[list[EncodedPair], list[Excluded], dict]:
    """(encoded pairs, excluded (row, reason, detail), stats); margins[i] belongs to rows[i].

    `processor` is a tasks.chat.tokenizer.Tokenizer. Stats: pairs, truncated (prompts
    left-cut), excluded, excluded.<reason>, tokens (chosen + rejected, unpadded).
    """
    if len(margins) != len(rows):
        raise ValueError(f"{len(margins)} margins for {len(rows)} rows; give one per row")
    if seq_len < 2:
        raise ValueError(f"seq_len {seq_len} cannot hold a prompt and a response; use >= 2")
    max_response = int(seq_len * MAX_RESPONSE_SHARE)
    encoded: list[EncodedPair] = []
    excluded: list[Excluded] = []
    truncated = 0
    for row, margin in zip(rows, margins):
        # a response cut off at max_new_tokens is trained on without EOS, as PPO scores it;
        # rows without the flags (labels people wrote) are complete answers
        chosen = answer_tokens(processor, row["chosen"], row.get("chosen_ended", True))
        rejected = answer_tokens(processor, row["rejected"], row.get("rejected_ended", True))
        longest = max(len(chosen), len(rejected))
        if longest > max_response:
            which = "chosen" if len(chosen) >= len(rejected) else "rejected"
            excluded.append(
                (
                    row,
                    "reward_too_long",
                    f"the {which} response is {longest} tokens "
                    f"> {max_response} (seq_len {seq_len} // 2)",
                )
            )
            continue
        prompt = prompt_tokens(processor, row["system"], row["prompt"])
        budget = seq_len - longest  # >= 1: room for <s> at least
        if len(prompt) > budget:
            prompt = [prompt[0], *prompt[len(prompt) - (budget - 1) :]]  # keep <s>, drop oldest
            truncated += 1
        encoded.append(
            EncodedPair(
                pair_id=row["pair_id"],
                chosen=prompt + chosen,
                rejected=prompt + rejected,
                margin=float(margin),
                chosen_safe=_safe_label(row.get("chosen_safe")),
                rejected_safe=_safe_label(row.get("rejected_safe")),
                rating=row["rating"],
                kind=row["kind"],
                prompt_len=len(prompt),
            )
        )
    stats: dict = {
        "pairs": len(encoded),
        "truncated": truncated,
        "excluded": len(excluded),
        "tokens": sum(len(p.chosen) + len(p.rejected) for p in encoded),
    }
    for reason, n in Counter(reason for _, reason, _ in excluded).items():
        stats[f"excluded.{reason}"] = n
    return encoded, excluded, stats


def collate_pairs(
    pairs: Sequence[EncodedPair], seq_len: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (2B, seq_len) int64 right-padded, chosen rows then rejected rows; y (2B, 3) float32
    [length, margin, safe label]."""
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    x = np.full((len(sequences), seq_len), pad_id, dtype=np.int64)
    for i, seq in enumerate(sequences):
        if len(seq) > seq_len:
            raise ValueError(
                f"a sequence of {len(seq)} tokens does not fit seq_len {seq_len}; "
                "encode the pairs with encode_pairs at this seq_len"
            )
        x[i, : len(seq)] = seq
    y = np.empty((len(sequences), 3), dtype=np.float32)
    y[:, Y_LENGTH] = [len(seq) for seq in sequences]
    y[:, Y_MARGIN] = [p.margin for p in pairs] * 2
    y[:, Y_SAFE] = [p.chosen_safe for p in pairs] + [p.rejected_safe for p in pairs]
    return torch.from_numpy(x), torch.from_numpy(y)


class PairBatches:
    """`batch(index) -> (x, y)` of `batch_size` pairs, a pure function of (seed, index).

    Pairs are visited in epochs, each a fresh seeded permutation (like TokenBatches with
    order="epochs"); sample k of the run is pair perm_{k // n}[k % n], so the last batch of an
    epoch is topped up with the first pairs of the next one and every batch is full.
    x is always padded to seq_len, so every step has the same shape.
    """

    sequences_per_item = 2  # a pair is two sequences: the loop counts tokens/s and MFU with it

    def __init__(
        self,
        pairs: list[EncodedPair],
        batch_size: int,
        seq_len: int,
        pad_id: int = 0,
        seed: int = 0,
    ):
        if not pairs:
            raise ValueError("PairBatches: no pairs (all excluded, or an empty mix?)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        too_long = [p.pair_id for p in pairs if max(len(p.chosen), len(p.rejected)) > seq_len]
        if too_long:
            raise ValueError(
                f"{len(too_long)} pairs longer than seq_len {seq_len} (first: "
                f"{too_long[0]}); encode them with encode_pairs at this seq_len"
            )
        self.pairs, self.batch_size, self.seq_len = pairs, batch_size, seq_len
        self.pad_id, self.seed = pad_id, seed
        self._perm: tuple[int, np.ndarray] | None = None  # (epoch, permutation): a cache only

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def pair_indices(self, index: int) -> np.ndarray:
        """Indices into `pairs` (B,) of micro-batch `index`."""
        samples = index * self.batch_size + np.arange(self.batch_size)
        epochs, positions = np.divmod(samples, len(self.pairs))
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            out[epochs == epoch] = self._permutation(int(epoch))[positions[epochs == epoch]]
        return out

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [self.pairs[i] for i in self.pair_indices(index)]
        return collate_pairs(chosen, self.seq_len, self.pad_id)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 1])
            self._perm = (epoch, rng.permutation(len(self.pairs)))
        return self._perm[1]
