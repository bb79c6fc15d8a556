"""Pretraining outside Prefect, one process per rank: the multi-GPU / multi-node entry point.

The Prefect flow trains in-process (the laptop path). On a cluster, build the token shards with
the pipeline (`--stage pretrain` stops short of nothing: run it once on a small preset, or any
preset's `pretrain.token_shards` task), then launch every rank with this module:

    torchrun --nproc_per_node 8 -m tasks.pretrain.launch --preset paper-7b \\
        --shards runs/artifacts/pretrain/shards-<key>/manifest.json --out runs/train-7b
    deepspeed --num_gpus 8 --module tasks.pretrain.launch --preset paper-7b --shards ... --out ...

Rank 0 logs to MLflow (a new run in the preset's experiment, or `--mlflow-run-id`); the
checkpoint folder is shared, so a relaunch with the same arguments resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tasks.config import load_config
from tasks.runtime import configure_environment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tasks.pretrain.launch", description=__doc__.split("\n")[0]
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--shards", required=True, type=Path, help="token shard manifest.json")
    p.add_argument("--out", required=True, type=Path, help="output / checkpoint folder (shared)")
    p.add_argument("--mlflow-run-id", default=None)
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    args = p.parse_args(argv)

    cfg = load_config(args.preset, args.set)
    configure_environment(cfg.run_dir, cfg.pretrain.train.threads)
    from models.llama import Llama, LlamaConfig
    from models.seeding import seeded
    from tasks.pretrain.shards import load_shards
    from tasks.tracking import InMemoryLogger, attach_run, open_run
    from tasks.training.data import TokenBatches
    from tasks.training.loop import train

    rank = int(os.environ.get("RANK", "0"))
    train_tokens, val_tokens, meta = load_shards(args.shards)
    model_cfg = {**cfg.pretrain.model_config_dict(), "vocab_size": int(meta["vocab_size"])}
    t = cfg.pretrain.train
    with seeded(t.seed):  # every rank starts from the same weights, run after run
        model = Llama(LlamaConfig(**model_cfg))
    if rank != 0:
        logger = InMemoryLogger()
    elif args.mlflow_run_id:
        logger = attach_run(cfg.run_dir, args.mlflow_run_id)
    else:
        logger = open_run(
            cfg.run_dir,
            cfg.preset,
            "pretrain (launched)",
            {"stage": "pretrain", "launcher": "torchrun/deepspeed"},
        )
    stats = train(
        model,
        TokenBatches(train_tokens, t.batch_size, t.seq_len, seed=t.seed),
        t,
        logger,
        args.out,
        val_tokens=val_tokens,
    )
    if rank == 0:
        print({k: v for k, v in stats.items() if k in ("steps", "val_loss", "tokens_per_s", "mfu")})
        if not args.mlflow_run_id and hasattr(logger, "close"):
            logger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
