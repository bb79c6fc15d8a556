"""DPO as a round's policy step, in the real RLHF flow on the tiny preset: round 1 is
rejection sampling, then DPO on the reward stage's preference pairs with the rejection-sampling
model as reference; the round's policy is a plain model folder that loads and differs from its
start; the MLflow round run carries the DPO metrics and says which step ran.

Named to sort after test_pipeline.py: that test must train the tiny stages itself."""

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from flows.rlhf import rlhf_flow
from tasks.config import load_config
from tasks.tracking import tracking_uri
from tasks.training.model_io import load_model

pytestmark = pytest.mark.e2e


def test_a_round_with_method_dpo_trains_the_policy_on_preference_pairs():
    overrides = [
        "rlhf.rounds=1",
        "rlhf.ppo_from=1",
        "rlhf.method=dpo",
        "rlhf.dpo.beta=0.2",
        "rlhf.dpo.training.max_steps=4",
        "rlhf.dpo.training.train.batch_size=4",
        "rlhf.dpo.training.train.seq_len=128",
        "rlhf.dpo.training.train.lr=1.0e-4",
    ]
    result = rlhf_flow(preset="tiny", overrides=overrides)
    (round1,) = result.rounds
    assert "then DPO" in round1.how
    policy = load_model(Path(result.models["rlhf-v1"]))
    assert "dpo" in str(result.models["rlhf-v1"])
    client = MlflowClient(tracking_uri(load_config("tiny").run_dir))
    stage = client.get_run(result.mlflow_run_id)
    (run,) = client.search_runs(
        [stage.info.experiment_id],
        f"tags.mlflow.parentRunId = '{stage.info.run_id}' and tags.`rlhf.round` = '1'",
    )
    assert run.data.tags["rlhf.policy_step"] == "dpo"
    metrics = run.data.metrics
    assert metrics["dpo.pairs"] > 0
    assert metrics["dpo.reward_accuracy"] >= 0.5  # trained on these pairs: mostly right
    assert metrics["dpo.logratio_chosen"] > metrics["dpo.logratio_rejected"]
    # DPO moved the weights away from the rejection-sampling model it started from
    meta = json.loads((Path(result.models["rlhf-v1"]) / "config.json").read_text())
    assert meta["dpo"]["beta"] == 0.2 and "-rs-" in meta["started_from"]
    before = load_model(Path(meta["started_from"])).state_dict()
    after = policy.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)
