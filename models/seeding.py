"""Seeded model construction: weights initialised from a seed, not from whatever state the
process's global RNG is in (earlier tasks in a pipeline process draw from it, cached or not)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded by `seed`, then restore the caller's
    generator state, so seeding one model's construction changes nothing that follows.

        with seeded(cfg.seed):
            model = Llama(config)

    Models are built on the CPU (engines move them afterwards), so only the CPU generator is
    seeded and restored."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
