"""Stage results are typed models: Prefect validates them as flow parameters, persists them as
flow return values and reads them back; the run summary leaves out the upstream copies.

Real Prefect flow runs (ephemeral API, persisted results); small results with real manifests.
"""

from __future__ import annotations

import pickle

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ParameterTypeError

from flows.evaluate import evaluate_flow, model_versions
from flows.results import (
    CorpusResult,
    DistillResult,
    PipelineResult,
    RewardResult,
    RlhfResult,
    RlhfRound,
    SftResult,
)
from tasks.io import Manifest


def _manifest(name: str) -> Manifest:
    return Manifest(
        uri=f"file:///data/{name}/{name}-0123.parquet",
        rows=3,
        contract=name,
        version="1",
        sha256="ab" * 32,
    )


def _run(stage: str) -> dict:
    return {
        "states": {f"{stage}.a": "Completed"},
        "mlflow_run_id": f"mlflow-{stage}",
        "flow_run_id": f"flow-{stage}",
    }


def _sft() -> SftResult:
    return SftResult(
        outputs={
            "sft_dialogues": _manifest("sft_dialogues"),
            "quarantine": _manifest("quarantine"),
        },
        model_dir="/m/sft",
        tokenizer_model="/t/tok.model",
        registered_version=1,
        models={"sft": "/m/sft", "sft_base": "/m/base", "pretrained": "/m/pre"},
        **_run("sft"),
    )


def _rlhf() -> RlhfResult:
    reward = RewardResult(
        outputs={"preference_pairs": _manifest("preference_pairs")},
        reward_models={"helpfulness": "/m/rm-h", "safety": "/m/rm-s"},
        tokenizer_model="/t/tok.model",
        sft=_sft(),
        **_run("reward"),
    )
    return RlhfResult(
        models={"sft": "/m/sft", "rlhf-v1": "/m/v1"},
        model_dir="/m/v1",
        rounds=[RlhfRound(round=1, how="rejection sampling", model_dir="/m/v1")],
        reward_models=reward.reward_models,
        tokenizer_model="/t/tok.model",
        outputs={"preference_pairs": reward.pairs},
        rejection_samples=[_manifest("rejection_samples")],
        reward=reward,
        **_run("rlhf"),
    )


def _distill(model_dir: str) -> DistillResult:
    rlhf = _rlhf()
    return DistillResult(
        model_dir=model_dir,
        models={**rlhf.models, "distilled": model_dir},
        tokenizer_model="/t/tok.model",
        outputs={},
        rlhf=rlhf,
        **_run("distill"),
    )


@flow(persist_result=True)
def _hand_on(distill: DistillResult) -> DistillResult:
    """Stands for a stage flow: receives an upstream result, returns a result."""
    assert isinstance(distill.rlhf.reward.sft, SftResult)  # typed all the way down
    return distill


def test_a_result_passed_as_json_is_validated_back_into_the_model():
    """A retried flow run gets its parameters back from the API as JSON: the type hint turns
    them into the model again."""
    distill = _distill("/m/distilled")
    assert _hand_on(distill) == distill
    assert _hand_on(distill.model_dump(mode="json")) == distill


def test_a_flow_return_value_is_persisted_and_read_back_equal():
    distill = _distill("/m/distilled")
    state = _hand_on(distill, return_state=True)
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(state.state_details.flow_run_id).state
    loaded = stored.result()  # from the result store, not the in-memory value
    assert loaded == distill and loaded is not distill
    assert pickle.loads(pickle.dumps(distill)) == distill


def test_a_real_stage_flow_refuses_a_wrong_upstream_result_before_doing_any_work():
    with pytest.raises(ParameterTypeError, match="distill"):
        evaluate_flow(preset="tiny", distill={"model_dir": "/m/x"})


def test_a_result_without_a_dataset_a_later_stage_reads_is_refused():
    with pytest.raises(ValueError, match=r"SftResult.outputs lacks \['sft_dialogues'\]"):
        SftResult(
            outputs={"quarantine": _manifest("quarantine")},
            model_dir="/m/sft",
            tokenizer_model="/t",
            registered_version=1,
            models={},
            **_run("sft"),
        )


def test_flat_accessors_reach_the_upstream_values():
    rlhf = _rlhf()
    assert rlhf.sft.dialogues.contract == "sft_dialogues"
    assert rlhf.sft.pretrained_dir == "/m/pre"
    distill = _distill("/m/v1")
    assert distill.sft is distill.rlhf.reward.sft and not distill.distilled


def test_the_distilled_version_is_evaluated_only_when_distillation_trained():
    order = ["pretrained", "sft", "rlhf-v1"]
    assert list(model_versions(_rlhf(), None)) == order
    assert list(model_versions(_rlhf(), _distill("/m/v1"))) == order  # kept nothing
    trained = model_versions(_rlhf(), _distill("/m/distilled"))
    assert list(trained) == [*order, "distilled"] and trained["distilled"] == "/m/distilled"


def test_the_run_summary_lists_each_stage_once_without_its_upstream_copy():
    distill = _distill("/m/distilled")
    corpus = CorpusResult(outputs={"documents": _manifest("documents")}, **_run("corpus"))
    result = PipelineResult(
        preset="tiny",
        mlflow_run_id="parent",
        corpus=corpus,
        sft=distill.sft,
        reward=distill.rlhf.reward,
        rlhf=distill.rlhf,
        distill=distill,
        report="/r/report.html",
    )
    summary = result.summary()
    assert list(summary["stages"]) == ["corpus", "sft", "reward", "rlhf", "distill"]
    assert "sft" not in summary["stages"]["reward"] and "reward" not in summary["stages"]["rlhf"]
    assert "rlhf" not in summary["stages"]["distill"]
    assert summary["stages"]["corpus"]["outputs"]["documents"]["rows"] == 3
    assert summary["mlflow_run_id"] == "parent" and summary["report"] == "/r/report.html"
    assert "tracking_uri" not in summary and "evaluate" not in summary  # None: left out
