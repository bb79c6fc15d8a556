"""A tiny training run as a process of its own, for the tests that need one: a run killed with
SIGKILL, and two ranks under `torchrun --nproc_per_node 2`. Also the fixtures those tests share.

    python tests/unit/training/train_worker.py --out DIR [--engine deepspeed --zero-stage 2]
        [--max-steps 12] [--checkpoint-every 4] [--log-sleep 0.05] [--result-dir DIR]

Each rank writes result-rank<r>.json: final train loss, val loss and a digest of its weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.llama import Llama, tiny  # noqa: E402
from tasks.tracking import InMemoryLogger  # noqa: E402
from tasks.training.config import TrainConfig  # noqa: E402
from tasks.training.data import TokenBatches  # noqa: E402

VOCAB = 256


def corpus(n: int = 40_000, seed: int = 0) -> np.ndarray:
    """A learnable token stream: runs of counting sequences with random starts, as uint16."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, VOCAB, size=n // 16)
    return ((starts[:, None] + np.arange(16)) % VOCAB).reshape(-1).astype(np.uint16)


def make_model(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    return Llama(tiny(vocab_size=VOCAB))


def tiny_config(**overrides) -> TrainConfig:
    base = dict(
        max_steps=12,
        batch_size=4,
        seq_len=32,
        warmup_steps=3,
        lr=3e-3,
        threads=1,
        log_every=1,
        eval_every=4,
        eval_batches=2,
        checkpoint_every=4,
        seed=7,
    )
    return TrainConfig(**{**base, **overrides})


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the weights; under ZeRO-3 (parameters partitioned across ranks) of the gathered
    weights, so each rank hashes the full model it would reassemble."""
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            return weights_digest_of(model.state_dict())
    return weights_digest_of(model.state_dict())


def weights_digest_of(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        assert tensor.numel() > 0, f"{name} is empty"
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


class SlowLogger(InMemoryLogger):
    """Sleeps on every metrics call, so a run lasts long enough to be killed mid-way."""

    def __init__(self, sleep_s: float):
        super().__init__()
        self.sleep_s = sleep_s

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)
        time.sleep(self.sleep_s)


def main(argv: list[str] | None = None) -> None:
    from tasks.training.loop import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result-dir", type=Path)
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--log-sleep", type=float, default=0.0)
    args = parser.parse_args(argv)

    cfg = tiny_config(
        engine=args.engine,
        zero_stage=args.zero_stage,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
    )
    model = make_model()
    tokens = corpus()
    logger = SlowLogger(args.log_sleep) if args.log_sleep else InMemoryLogger()
    stats = train(
        model,
        TokenBatches(tokens, cfg.batch_size, cfg.seq_len, cfg.seed),
        cfg,
        logger,
        args.out,
        val_tokens=corpus(4_000, seed=1),
    )
    if args.result_dir:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        result = {
            "rank": rank,
            "world_size": world,
            "train_loss": stats["train_loss"],
            "val_loss": stats["val_loss"],
            "weights": weights_digest(model),
        }
        args.result_dir.mkdir(parents=True, exist_ok=True)
        (args.result_dir / f"result-rank{rank}.json").write_text(json.dumps(result))
    if torch.distributed.is_initialized():
        # Both ranks leave their last collective (ZeRO-3's gather in weights_digest) before either
        # tears the group down: a rank that destroys first can abort its peer mid-collective.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
