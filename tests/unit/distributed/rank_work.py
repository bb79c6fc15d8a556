"""Work functions the launcher tests run on every rank (module-level, importable by name)."""

import os
import time

import torch
import torch.distributed as dist


def ranks_sum(value: int) -> dict:
    """Each rank contributes rank + value; every rank must see the same all-reduced sum."""
    from tasks.training.engines import init_distributed

    rank, world = init_distributed()
    t = torch.tensor([float(rank + value)])
    dist.all_reduce(t)
    print(f"rank {rank} of {world}: sum {t.item()}", flush=True)
    return {"world": world, "sum": t.item(), "rank": rank, "pid": os.getpid()}


def one_rank_fails(bad_rank: int) -> dict:
    """`bad_rank` raises; the others wait in a collective that would never finish alone."""
    from tasks.training.engines import init_distributed

    rank, _ = init_distributed()
    if rank == bad_rank:
        time.sleep(0.5)
        raise ValueError(f"rank {rank} found a broken shard")
    t = torch.zeros(1)
    dist.all_reduce(t)  # blocks until the launcher stops this rank
    return {"rank": rank}
