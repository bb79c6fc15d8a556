import math

import numpy as np
import pytest
import torch

from tasks.tracking import InMemoryLogger
from tasks.training.data import TokenBatches
from tasks.training.loop import train
from tests.unit.training.train_worker import corpus, make_model, tiny_config


class Crash(Exception):
    pass


class CrashingLogger(InMemoryLogger):
    """Raises when asked to log step `at`: a run dying between two checkpoints."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def log_metrics(self, metrics, step=None):
        if step == self.at:
            raise Crash(f"killed at step {step}")
        super().log_metrics(metrics, step)


def _data(cfg, mask=None):
    return TokenBatches(corpus(), cfg.batch_size, cfg.seq_len, cfg.seed, loss_mask=mask)


def _assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), f"{name} differs"


def test_exact_resume_after_a_crash_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    cfg = tiny_config(max_steps=12, checkpoint_every=5, grad_accum_steps=2)
    reference = make_model()
    train(reference, _data(cfg), cfg, InMemoryLogger(), tmp_path / "straight")

    crashed = make_model()
    with pytest.raises(Crash):  # dies at step 8; the last checkpoint is step 5
        train(crashed, _data(cfg), cfg, CrashingLogger(at=8), tmp_path / "crashed")
    del crashed  # nothing survives but the checkpoint folder

    resumed = make_model(seed=999)  # different init: the checkpoint must supply everything
    logger = InMemoryLogger()
    stats = train(resumed, _data(cfg), cfg, logger, tmp_path / "crashed")
    assert stats["start_step"] == 5 and stats["steps"] == 12
    assert [step for step, _ in logger.metrics["loss"]] == list(range(6, 13))
    _assert_same_weights(reference, resumed)


def test_logs_metrics_samples_and_loss_curve(tmp_path, capsys):
    cfg = tiny_config(max_steps=6, log_every=2, eval_every=3, sample_every=3, checkpoint_every=0)
    logger = InMemoryLogger()
    stats = train(
        make_model(),
        _data(cfg),
        cfg,
        logger,
        tmp_path,
        val_tokens=corpus(4_000, seed=1),
        sample_fn=lambda model, step: f"sample at {step}",
    )
    assert [s for s, _ in logger.metrics["loss"]] == [2, 4, 6]
    for key in ("lr", "grad_norm", "tokens_per_s", "mfu"):
        assert [s for s, _ in logger.metrics[key]] == [2, 4, 6]
    assert [s for s, _ in logger.metrics["val_loss"]] == [3, 6]
    assert all(0 < v < 1.5 for _, v in logger.metrics["mfu"])
    val_loss = logger.metrics["val_loss"][-1][1]
    assert logger.metrics["val_ppl"][-1][1] == pytest.approx(math.exp(val_loss))
    samples = sorted(p.name for p, folder in logger.artifacts if folder == "samples")
    assert samples == ["step-00000003.txt", "step-00000006.txt"]
    assert (tmp_path / "samples" / "step-00000006.txt").read_text() == "sample at 6"
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert stats["checkpoint"].endswith("step-00000006")  # the last step always checkpoints
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("step ") and "tok/s" in line for line in lines) == 3


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_loss_decreases(tmp_path, dtype):
    cfg = tiny_config(max_steps=30, dtype=dtype, log_every=5, checkpoint_every=0)
    logger = InMemoryLogger()
    stats = train(make_model(), _data(cfg), cfg, logger, tmp_path, val_tokens=corpus(4_000, seed=1))
    losses = [v for _, v in logger.metrics["loss"]]
    assert losses[-1] < losses[0] - 1.0, losses  # ln(256) = 5.5 at the start
    assert stats["val_loss"] < losses[0] - 1.0


def test_a_finished_run_resumes_as_a_no_op_and_resume_false_starts_over(tmp_path):
    cfg = tiny_config(max_steps=4)
    model = make_model()
    first = train(model, _data(cfg), cfg, InMemoryLogger(), tmp_path)
    again = InMemoryLogger()
    stats = train(make_model(), _data(cfg), cfg, again, tmp_path, val_tokens=corpus(4_000, seed=1))
    assert stats["start_step"] == 4 and "loss" not in again.metrics and "val_loss" in again.metrics
    assert stats["train_loss"] == first["train_loss"]  # the last logged loss, from the checkpoint
    fresh = InMemoryLogger()
    assert train(make_model(), _data(cfg), cfg, fresh, tmp_path, resume=False)["start_step"] == 0
    assert len(fresh.metrics["loss"]) == 4


def test_an_all_ones_loss_mask_changes_nothing(tmp_path):
    """The SFT plug-in point: a mask that trains every target is the pretraining run."""
    cfg = tiny_config(max_steps=3, checkpoint_every=0)
    plain, masked = make_model(), make_model()
    train(plain, _data(cfg), cfg, InMemoryLogger(), tmp_path / "a")
    ones = np.ones(len(corpus()), dtype=np.uint8)
    train(masked, _data(cfg, mask=ones), cfg, InMemoryLogger(), tmp_path / "b")
    _assert_same_weights(plain, masked)


def test_batches_that_disagree_with_the_config_are_refused(tmp_path):
    cfg = tiny_config()
    with pytest.raises(ValueError, match="batch_size"):
        train(make_model(), TokenBatches(corpus(), 2, cfg.seq_len), cfg, InMemoryLogger(), tmp_path)
    long = tiny_config(seq_len=256)
    with pytest.raises(ValueError, match="max_seq_len"):
        train(make_model(), TokenBatches(corpus(), 4, 256), long, InMemoryLogger(), tmp_path)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """SLOW (about 30 s with a cold inductor cache, 7 s warm): torch.compile changes speed, not
    the result beyond float rounding."""
    eager, compiled = make_model(), make_model()
    train(
        eager,
        _data(tiny_config(max_steps=4)),
        tiny_config(max_steps=4, checkpoint_every=0),
        InMemoryLogger(),
        tmp_path / "eager",
    )
    cfg = tiny_config(max_steps=4, checkpoint_every=0, compile=True)
    train(compiled, _data(cfg), cfg, InMemoryLogger(), tmp_path / "compiled")
    for (name, a), (_, b) in zip(eager.state_dict().items(), compiled.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_items_of_several_sequences_count_all_their_tokens(tmp_path):
    """A reward-model batch item is a pair (two sequences): tokens/s and MFU count both."""
    cfg = tiny_config(max_steps=4)

    class Pairs:
        sequences_per_item = 2

        def __init__(self, inner):
            self.inner, self.batch_size, self.seq_len = inner, inner.batch_size, inner.seq_len

        def batch(self, index):
            return self.inner.batch(index)

    single = train(make_model(), _data(cfg), cfg, InMemoryLogger(), tmp_path / "a")
    double = train(make_model(), Pairs(_data(cfg)), cfg, InMemoryLogger(), tmp_path / "b")
    assert double["train_tokens"] == 2 * single["train_tokens"] == 2 * 4 * cfg.tokens_per_step


def test_dtype_auto_trains_in_the_dtype_this_machine_multiplies_faster(tmp_path):
    """`dtype: auto` resolves once per run to what `faster_dtype` measures (bf16 only where
    bf16 matmuls beat fp32) and records the choice as a parameter."""
    from tasks.training.mfu import faster_dtype

    cfg = tiny_config(max_steps=3, dtype="auto", checkpoint_every=0)
    logger = InMemoryLogger()
    train(make_model(), _data(cfg), cfg, logger, tmp_path)
    chosen = logger.params["train.dtype_chosen"]
    assert chosen in ("fp32", "bf16")
    assert chosen == faster_dtype(cfg.threads)
