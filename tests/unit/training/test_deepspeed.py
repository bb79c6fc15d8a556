"""SLOW (about 40 s): the DeepSpeed engine on CPU (gloo), in this process and as two ranks under
torchrun. Runs in CI (not skipped); DeepSpeed's C++ ops are never built (engines.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.llama import Llama, tiny
from tasks.tracking import InMemoryLogger
from tasks.training.checkpoint import latest_checkpoint, load_weights
from tasks.training.data import TokenBatches
from tasks.training.loop import train
from tests.unit.training.test_loop import Crash, CrashingLogger
from tests.unit.training.train_worker import ROOT, VOCAB, corpus, make_model, tiny_config

WORKER = Path(__file__).with_name("train_worker.py")
pytestmark = pytest.mark.slow


def _train(model, cfg, out, logger=None):
    data = TokenBatches(corpus(), cfg.batch_size, cfg.seq_len, cfg.seed)
    return train(
        model, data, cfg, logger or InMemoryLogger(), out, val_tokens=corpus(4_000, seed=1)
    )


def test_zero2_bf16_loss_decreases_and_saves_loadable_weights(tmp_path):
    cfg = tiny_config(
        engine="deepspeed",
        zero_stage=2,
        dtype="bf16",
        max_steps=30,
        log_every=5,
        checkpoint_every=0,
    )
    logger = InMemoryLogger()
    model = make_model()
    stats = _train(model, cfg, tmp_path, logger)
    losses = [v for _, v in logger.metrics["loss"]]
    assert losses[-1] < losses[0] - 1.0, losses
    assert all(v > 0 for _, v in logger.metrics["grad_norm"])
    folder = latest_checkpoint(tmp_path / "checkpoints")
    assert (folder / "deepspeed").is_dir()
    fresh = Llama(tiny(vocab_size=VOCAB))
    load_weights(fresh, folder / "model.safetensors")
    assert torch.equal(fresh.output.weight, model.output.weight.float())
    assert stats["val_loss"] < losses[0] - 1.0


def test_zero2_fp32_follows_the_torch_engine(tmp_path):
    """Same AdamW, schedule and clipping: the two engines agree to float rounding."""
    plain, ds = make_model(), make_model()
    _train(plain, tiny_config(max_steps=8, checkpoint_every=0), tmp_path / "torch")
    _train(
        ds,
        tiny_config(engine="deepspeed", zero_stage=2, max_steps=8, checkpoint_every=0),
        tmp_path / "ds",
    )
    for (name, a), (_, b) in zip(plain.state_dict().items(), ds.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_zero2_block_diagonal_follows_the_torch_engine(tmp_path):
    """Segment ids (sft.format.packing: block_diagonal) reach the model under DeepSpeed as under
    the torch engine: the same weights after 6 steps, and not those of plain causal training."""
    import numpy as np

    tokens = corpus()
    segments = np.arange(len(tokens)) // 13  # a new "example" every 13 tokens

    def run(name, segs, **engine):
        model = make_model()
        cfg = tiny_config(max_steps=6, checkpoint_every=0, **engine)
        data = TokenBatches(tokens, cfg.batch_size, cfg.seq_len, cfg.seed, segments=segs)
        train(model, data, cfg, InMemoryLogger(), tmp_path / name)
        return model.state_dict()

    plain = run("torch", segments)
    ds = run("ds", segments, engine="deepspeed", zero_stage=2)
    causal = run("causal", None)
    for name, a in plain.items():
        torch.testing.assert_close(a, ds[name], rtol=1e-4, atol=1e-6, msg=name)
    assert (plain["output.weight"] - causal["output.weight"]).abs().max() > 1e-4


def test_zero1_exact_resume_with_accumulation(tmp_path):
    cfg = tiny_config(
        engine="deepspeed", zero_stage=1, grad_accum_steps=2, max_steps=10, checkpoint_every=4
    )
    reference = make_model()
    _train(reference, cfg, tmp_path / "straight")
    with pytest.raises(Crash):
        _train(make_model(), cfg, tmp_path / "crashed", CrashingLogger(at=7))
    resumed = make_model(seed=999)
    assert _train(resumed, cfg, tmp_path / "crashed")["start_step"] == 4
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_zero3_resumes_and_saves_gathered_full_weights(tmp_path):
    """ZeRO-3 (the paper-7b preset) partitions the parameters themselves: the checkpoint's
    safetensors must still hold the full model, and a crashed run must resume."""
    plain = make_model()
    _train(plain, tiny_config(max_steps=8, checkpoint_every=0), tmp_path / "torch")
    cfg = tiny_config(engine="deepspeed", zero_stage=3, max_steps=8, checkpoint_every=4)
    with pytest.raises(Crash):
        _train(make_model(), cfg, tmp_path / "z3", CrashingLogger(at=6))
    assert _train(make_model(seed=999), cfg, tmp_path / "z3")["start_step"] == 4
    saved = Llama(tiny(vocab_size=VOCAB))
    load_weights(saved, latest_checkpoint(tmp_path / "z3" / "checkpoints") / "model.safetensors")
    for (name, a), (_, b) in zip(plain.state_dict().items(), saved.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def _torchrun(tmp_path, engine, zero_stage, steps):
    out, results = tmp_path / "out", tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        "--out",
        str(out),
        "--result-dir",
        str(results),
        "--engine",
        engine,
        "--zero-stage",
        str(zero_stage),
        "--max-steps",
        str(steps),
        "--checkpoint-every",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # this process may hold a one-rank group of its own
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((results / f"result-rank{r}.json").read_text()) for r in range(2)]
    return out, ranks


@pytest.mark.parametrize("engine, zero_stage", [("torch", 0), ("deepspeed", 2), ("deepspeed", 3)])
def test_two_ranks_agree_and_equal_one_rank_with_accumulation(tmp_path, engine, zero_stage):
    steps = 6
    out, (r0, r1) = _torchrun(tmp_path, engine, zero_stage, steps)
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    assert r0["weights"] == r1["weights"]  # identical replicas
    assert r0["val_loss"] == r1["val_loss"] and r0["train_loss"] == r1["train_loss"]

    # rank r reads micro-batch 2*step + r: the same batches as one rank accumulating two
    single = make_model()
    stats = _train(
        single,
        tiny_config(grad_accum_steps=2, max_steps=steps, checkpoint_every=0),
        tmp_path / "single",
    )
    two_rank = Llama(tiny(vocab_size=VOCAB))
    load_weights(two_rank, latest_checkpoint(out / "checkpoints") / "model.safetensors")
    for (name, a), (_, b) in zip(single.state_dict().items(), two_rank.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert r0["val_loss"] == pytest.approx(stats["val_loss"], rel=1e-5)
