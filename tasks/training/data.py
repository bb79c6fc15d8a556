"""Batches of next-token windows cut from a flat token array, computed from (seed, index) alone.

The token array is 1-D (an `np.memmap` of uint16/uint32 shards written by the tokenize stage,
or anything `np.asarray` accepts). A batch is a pure function of the seed and its micro-batch
index, so the data position of a run is just its step: resuming at step k reads exactly the
batches an uninterrupted run would have read, and no sampler state needs saving.

SFT, rejection-sampling fine-tuning and distillation plug in through `loss_mask`, an array as
long as the tokens: 1 where a token is trained as a target (answer tokens), 0 where it is not
(prompt tokens, padding). Masked targets become `IGNORE_INDEX`, which the model's loss skips.

Packed examples can also bring `segments` (tasks.chat.format.Packed.segments): then a batch is
(x, y, s) with s the (B, T) segment ids of x, and the engine attends block-diagonally
(models.llama.segment_layout). Without them a batch is (x, y), plain causal attention.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from models.llama import IGNORE_INDEX

Order = Literal["random", "epochs"]


def micro_batch_index(
    step: int, micro: int, grad_accum_steps: int, rank: int = 0, world_size: int = 1
) -> int:
    """Global ordinal of a micro-batch: with no accumulation and one rank it is the step."""
    return (step * grad_accum_steps + micro) * world_size + rank


def _per_token(name: str, values, tokens: np.ndarray) -> np.ndarray | None:
    """An optional array with one value per token (loss mask, segment ids), as an ndarray."""
    if values is None:
        return None
    values = values if isinstance(values, np.ndarray) else np.asarray(values)
    if values.shape != tokens.shape:
        raise ValueError(f"{name} shape {values.shape} != tokens shape {tokens.shape}")
    return values


class TokenBatches:
    """`batch(index) -> (x, y)`: int64 tensors (B, T); y is x shifted by one token. With
    `segments`, `(x, y, s)`: s (B, T) int64, the segment id of each token of x.

    order="random": each sequence starts at a uniformly random offset (pretraining: any window
    of the stream is a sample). order="epochs": the stream is cut into non-overlapping windows,
    visited in a fresh seeded permutation per epoch (SFT's "2 epochs", §3.1).
    """

    def __init__(
        self,
        tokens,
        batch_size: int,
        seq_len: int,
        seed: int = 0,
        loss_mask=None,
        order: Order = "random",
        segments=None,
    ):
        self.tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
        if self.tokens.ndim != 1:
            raise ValueError(f"tokens must be a 1-D array, got shape {self.tokens.shape}")
        if len(self.tokens) < seq_len + 1:
            raise ValueError(
                f"{len(self.tokens)} tokens cannot fill one window of seq_len {seq_len} + 1; "
                "lower seq_len or tokenize more text"
            )
        loss_mask = _per_token("loss_mask", loss_mask, self.tokens)
        segments = _per_token("segments", segments, self.tokens)
        if order not in ("random", "epochs"):
            raise ValueError(f"order must be 'random' or 'epochs', got {order!r}")
        self.loss_mask, self.segments = loss_mask, segments
        self.batch_size, self.seq_len, self.seed, self.order = batch_size, seq_len, seed, order
        self._perm: tuple[int, np.ndarray] | None = None  # (epoch, permutation): a cache only

    @property
    def windows_per_epoch(self) -> int:
        """Non-overlapping windows in the stream (order="epochs")."""
        return (len(self.tokens) - 1) // self.seq_len

    def starts(self, index: int) -> np.ndarray:
        """Start offsets (B,) of micro-batch `index`."""
        if self.order == "random":
            rng = np.random.default_rng([self.seed, index])
            return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        samples = index * self.batch_size + np.arange(self.batch_size)
        epochs, positions = np.divmod(samples, self.windows_per_epoch)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            out[epochs == epoch] = self._permutation(int(epoch))[positions[epochs == epoch]]
        return out * self.seq_len

    def batch(self, index: int) -> tuple[torch.Tensor, ...]:
        return gather_windows(
            self.tokens, self.starts(index), self.seq_len, self.loss_mask, self.segments
        )

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch, 1])  # 1: apart from random order's seeds
            self._perm = (epoch, rng.permutation(self.windows_per_epoch))
        return self._perm[1]


def gather_windows(
    tokens: np.ndarray,
    starts: np.ndarray,
    seq_len: int,
    loss_mask: np.ndarray | None = None,
    segments: np.ndarray | None = None,
) -> tuple[torch.Tensor, ...]:
    """(x, y) for windows tokens[s : s + seq_len + 1]; y = IGNORE_INDEX where loss_mask is 0.
    With `segments`, (x, y, the segment ids of x)."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seq_len + 1)  # (B, T + 1)
    window = np.asarray(tokens[idx], dtype=np.int64)  # reads only these pages of a memmap
    x, y = window[:, :-1], window[:, 1:].copy()
    if loss_mask is not None:
        y[np.asarray(loss_mask[idx[:, 1:]]) == 0] = IGNORE_INDEX
    xy = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    if segments is None:
        return xy
    return *xy, torch.from_numpy(np.asarray(segments[idx[:, :-1]], dtype=np.int64))


def eval_batches(
    tokens,
    n: int,
    batch_size: int,
    seq_len: int,
    loss_mask=None,
    segments=None,
    aligned: bool = False,
) -> list[tuple[torch.Tensor, ...]]:
    """`n` fixed validation batches: windows evenly spaced over the array (same every call).
    `aligned`: the array is whole windows back to back (packed examples, order="epochs"), and
    every validation window is one of them, so none starts inside an example."""
    tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
    if len(tokens) < seq_len + 1:
        raise ValueError(f"{len(tokens)} validation tokens cannot fill one window of {seq_len} + 1")
    loss_mask = _per_token("loss_mask", loss_mask, tokens)
    segments = _per_token("segments", segments, tokens)
    if aligned:
        windows = (len(tokens) - 1) // seq_len
        starts = np.linspace(0, windows - 1, n * batch_size).round().astype(np.int64) * seq_len
    else:
        starts = np.linspace(0, len(tokens) - seq_len - 1, n * batch_size).round().astype(np.int64)
    return [
        gather_windows(tokens, s, seq_len, loss_mask, segments)
        for s in starts.reshape(n, batch_size)
    ]
