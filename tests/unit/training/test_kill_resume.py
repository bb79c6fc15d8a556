"""SLOW (about 10 s): a training process killed with SIGKILL after a checkpoint, resumed in this
process, ends bit for bit where an uninterrupted run ends. Runs in CI (not skipped)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.tracking import InMemoryLogger
from tasks.training.checkpoint import latest_checkpoint
from tasks.training.data import TokenBatches
from tasks.training.loop import train
from tests.unit.training.train_worker import ROOT, corpus, make_model, tiny_config

WORKER = Path(__file__).with_name("train_worker.py")
MAX_STEPS, EVERY = 30, 5


def _run_in_process(model, out):
    cfg = tiny_config(max_steps=MAX_STEPS, checkpoint_every=EVERY)  # as the worker builds it
    data = TokenBatches(corpus(), cfg.batch_size, cfg.seq_len, cfg.seed)
    return train(model, data, cfg, InMemoryLogger(), out, val_tokens=corpus(4_000, seed=1))


def _kill_after_checkpoint(out: Path, log: Path, min_step: int) -> Path:
    """Start the worker (slowed to ~10 steps/s), SIGKILL it once `latest` reaches min_step."""
    cmd = [
        sys.executable,
        str(WORKER),
        "--out",
        str(out),
        "--max-steps",
        str(MAX_STEPS),
        "--checkpoint-every",
        str(EVERY),
        "--log-sleep",
        "0.1",
    ]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    pointer, deadline = out / "checkpoints" / "latest", time.monotonic() + 120
    try:
        while not (pointer.exists() and int(pointer.read_text().split("-")[1]) >= min_step):
            assert proc.poll() is None, f"worker exited before the kill:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return latest_checkpoint(out / "checkpoints")


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    survivor = _kill_after_checkpoint(out, tmp_path / "worker.log", min_step=10)
    killed_at = int(survivor.name.split("-")[1])
    assert 10 <= killed_at < MAX_STEPS, "the worker must die mid-run"

    resumed = make_model(seed=999)
    stats = _run_in_process(resumed, out)
    assert stats["start_step"] == killed_at and stats["steps"] == MAX_STEPS

    reference = make_model()
    _run_in_process(reference, tmp_path / "straight")
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after resuming from step {killed_at}"
