"""SLOW (about 45 s on two shared cores): two fresh Python processes pretrain the tiny preset's
model for a few CPU steps and end with bit-identical weights. Runs in CI (not skipped).

Each process first reseeds torch's global RNG from the OS, standing in for whatever earlier
tasks of a pipeline process drew from it: only a model whose construction is seeded from the
config (tasks.pretrain.steps.build_model) starts, and so ends, the same both times. The
kill-and-resume test seeds its model by hand and cannot see this.

Run as a script, this file is the worker: `python test_reproducible.py OUT_DIR` prints JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STEPS = 4


def _worker(out_dir: Path) -> dict:
    import numpy as np
    import torch

    from models.llama import LlamaConfig
    from tasks.config import load_config
    from tasks.pretrain.steps import build_model
    from tasks.tracking import InMemoryLogger
    from tasks.training.data import TokenBatches
    from tasks.training.loop import train
    from tests.unit.training.train_worker import weights_digest_of

    torch.seed()  # a process-dependent RNG state, as a pipeline's earlier tasks leave it
    cfg = load_config("tiny")
    t = cfg.pretrain.train.model_copy(
        update={
            "max_steps": STEPS,
            "warmup_steps": 2,
            "log_every": 1,
            "eval_every": 0,
            "checkpoint_every": 0,
            "sample_every": 0,
        }
    )
    vocab = cfg.tokenizer.vocab_size
    config = LlamaConfig(**{**cfg.pretrain.model_config_dict(), "vocab_size": vocab})
    model = build_model(config, t.seed)
    initial = weights_digest_of(model.state_dict())
    tokens = np.random.default_rng(0).integers(0, vocab, size=20_000).astype(np.uint16)
    stats = train(
        model,
        TokenBatches(tokens, t.batch_size, t.seq_len, seed=t.seed),
        t,
        InMemoryLogger(),
        out_dir,
    )
    return {
        "initial": initial,
        "final": weights_digest_of(model.state_dict()),
        "steps": stats["steps"],
        "train_loss": stats["train_loss"],
    }


def _fresh_run(tmp_path: Path, name: str) -> dict:
    # CPU only: CUDA kernels such as the embedding backward add with atomics, in any order
    env = {
        **os.environ,
        "RECIPE_RUN_DIR": str(tmp_path / "run"),
        "PYTHONPATH": str(ROOT),
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path / name)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_fresh_processes_pretrain_bit_identical_weights(tmp_path):
    first, second = _fresh_run(tmp_path, "a"), _fresh_run(tmp_path, "b")
    assert first["steps"] == second["steps"] == STEPS
    assert first["initial"] == second["initial"], "model construction is not seeded"
    assert first["final"] == second["final"]
    assert first["train_loss"] == second["train_loss"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(_worker(Path(sys.argv[1]))))
