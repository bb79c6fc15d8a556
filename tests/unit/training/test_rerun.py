"""`--rerun` forces a task with Prefect's refresh_cache: a forced training task trains again from
step 0 (its earlier output set aside, not deleted); a plain re-run of the task, as after a
crash, still resumes from the last checkpoint. Real Prefect task runs, the real loop."""

import logging

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.tracking import InMemoryLogger
from tasks.training.data import TokenBatches
from tasks.training.loop import train
from tasks.training.rerun import SET_ASIDE, set_aside_if_forced
from tests.unit.training.train_worker import corpus, make_model, tiny_config


@task(cache_policy=NO_CACHE)
def train_task(out: str) -> dict:
    cfg = tiny_config(max_steps=4, checkpoint_every=2, eval_every=0)
    set_aside_if_forced(out)  # what the training steps do before `train`
    return train(
        make_model(),
        TokenBatches(corpus(4_000), cfg.batch_size, cfg.seq_len, cfg.seed),
        cfg,
        InMemoryLogger(),
        out,
    )


@flow
def run_training(out: str, forced: bool) -> dict:
    return (train_task.with_options(refresh_cache=True) if forced else train_task)(out)


def test_forced_rerun_trains_again_and_a_plain_rerun_resumes(tmp_path, caplog):
    out = tmp_path / "train-key"
    first = run_training(str(out), forced=False)
    assert (first["start_step"], first["steps"]) == (0, 4)

    resumed = run_training(str(out), forced=False)  # a crash retry: same folder, nothing to train
    assert (resumed["start_step"], resumed["steps"]) == (4, 4)
    assert not list(tmp_path.glob(f"*{SET_ASIDE}*"))

    with caplog.at_level(logging.INFO):
        forced = run_training(str(out), forced=True)
    assert (forced["start_step"], forced["steps"]) == (0, 4)  # trained all 4 steps again
    (aside,) = tmp_path.glob(f"train-key{SET_ASIDE}*")
    assert (aside / "checkpoints" / "latest").read_text() == "step-00000004"  # the old run, kept
    assert (out / "checkpoints" / "latest").read_text() == "step-00000004"  # the new one
    assert "forced re-run (--rerun)" in caplog.text and aside.name in caplog.text


def test_outside_a_forced_task_nothing_moves(tmp_path):
    (tmp_path / "out").mkdir()
    assert set_aside_if_forced(tmp_path / "out") is None
    assert (tmp_path / "out").is_dir()
