"""SLOW (about 1-2 minutes): a PPO round step on two gloo ranks under torchrun computes what
one rank computes with the same global batch: the same per-iteration reward, KL, entropy and
loss metrics and the same final weights. Rollouts are split across the ranks by chunk and
gathered; each minibatch's rows are split and the gradients summed (tasks/rlhf/ppo_ranks.py).
The torch engine (DDP) and DeepSpeed ZeRO-2 both. Real tiny models and reward models, real
MLflow runs read back through the client."""

import uuid
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tasks.distributed.launch import LaunchConfig, run_ranks
from tasks.rlhf.ppo import PPOConfig
from tasks.rlhf.ppo_steps import ppo_round
from tasks.tracking import tracking_uri
from tasks.training.model_io import load_model
from tests.unit.reward.test_data import sp  # noqa: F401 - the small tokenizer fixture
from tests.unit.rlhf.test_ppo_rerun import ppo_inputs, prompt

pytestmark = pytest.mark.slow

METRICS = (
    "ppo/r_c",
    "ppo/r_h",
    "ppo/score",
    "ppo/kl",
    "ppo/entropy",
    "ppo/response_length",
    "ppo/policy_loss",
    "ppo/value_loss",
    "ppo/clipfrac",
    "ppo/approx_kl",
    "ppo/grad_norm",
)


def _round(tmp_path, sp, name: str, launch: dict, engine: dict) -> tuple[dict, dict, str]:  # noqa: F811
    run_dir = tmp_path / name
    run_dir.mkdir()
    inputs = ppo_inputs(run_dir, sp)
    client = MlflowClient(tracking_uri(run_dir))
    run = client.create_run(client.create_experiment(f"{name}-{uuid.uuid4().hex}"))
    ppo = PPOConfig(
        iterations=3,
        batch_size=6,  # 3 chunks of 2: rank 0 samples chunks 0 and 2, rank 1 chunk 1
        minibatch_size=2,
        ppo_epochs=2,
        max_new_tokens=5,
        lr=3e-3,
        temperature=1.0,
        eval_every=3,  # evaluated at iterations 0 and 3
        guard_tolerance=1.0,  # random reward models: the guard would stop it at random
        threads=1,
        seed=5,
        launch=launch,
        **engine,
    )
    args = dict(
        inputs,
        prompts=[prompt(i, i % 2 == 1) for i in range(8)],
        ppo=ppo,
        run_dir=str(run_dir),
        mlflow_run_id=run.info.run_id,
        out_dir=str(run_dir / "ppo"),
    )
    if launch:
        for key in ("annotator_cfg", "ppo", "toxicity"):
            args[key] = args[key].model_dump(mode="json")
        stats, folder, _ = run_ranks(
            "tasks.rlhf.ppo_steps:ppo_round", args, ppo.launch, run_dir / "launch"
        )
    else:
        stats, folder, _ = ppo_round(**args)
    history = {
        key: [m.value for m in client.get_metric_history(run.info.run_id, key)] for key in METRICS
    }
    return stats, history, folder


@pytest.mark.parametrize(
    "engine", [{}, {"engine": "deepspeed", "zero_stage": 2}], ids=["torch-ddp", "deepspeed-zero2"]
)
def test_ppo_on_two_ranks_matches_one_rank_with_the_same_global_batch(tmp_path, sp, engine):  # noqa: F811
    one_stats, one, one_dir = _round(tmp_path, sp, "one", {}, {})
    two_stats, two, two_dir = _round(
        tmp_path, sp, "two", {"launcher": "torchrun", "nproc": 2}, engine
    )
    for key in METRICS:
        assert len(one[key]) == 3, key  # every iteration logged once, by rank 0 only
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
    # the policy moved (the comparison is not of two untrained models)
    assert max(one["ppo/kl"]) > 0 and one["ppo/grad_norm"][0] > 0
    for key in ("ppo.iterations_run", "ppo.eval_reward_start", "ppo.eval_reward_end"):
        assert two_stats[key] == pytest.approx(one_stats[key], rel=1e-4), key
    assert one_stats["ppo.iterations_run"] == 3
    # the kept weights: those of the best evaluation, the same iteration on both
    assert two_stats["ppo.best_iteration"] == one_stats["ppo.best_iteration"]
    a = load_model(Path(one_dir)).state_dict()
    b = load_model(Path(two_dir)).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_the_ppo_task_launches_its_ranks_when_the_config_says_so(tmp_path, sp, caplog):  # noqa: F811
    """`ppo_step` itself (a real Prefect task run in a flow) starts the ranks, streams their
    output into its log and returns the manifest of the one-process path."""
    import logging

    from prefect import flow

    from tasks.rlhf.ppo_steps import ppo_step

    inputs = ppo_inputs(tmp_path, sp)
    inputs["ppo"] = inputs["ppo"].model_copy(
        update={"launch": LaunchConfig(launcher="torchrun", nproc=2), "guard_tolerance": 1.0}
    )

    @flow
    def one_round():
        return ppo_step(**inputs)

    with caplog.at_level(logging.INFO):
        out = one_round()
    assert out.stats["ppo.iterations_run"] == 1.0 and out.notes["stopped"] == "completed"
    assert load_model(Path(out.models["model"])).config.vocab_size == sp.vocab_size()
    assert "launching tasks.rlhf.ppo_steps:ppo_round on 2 rank(s)" in caplog.text
    assert "ppo it 1/1" in caplog.text  # rank 0's trainer line, streamed from its process
