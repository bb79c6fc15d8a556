"""The whole recipe as one flow: each stage a subflow, one parent MLflow run over all of them;
after the report, the promotion gate on the final model version (flows/promote.py)."""

from __future__ import annotations

import uuid

import polars as pl
from prefect import flow
from prefect.exceptions import Pause
from prefect.runtime import flow_run

from flows.corpus import corpus_flow
from flows.dag import expand_reruns
from flows.distill import distill_flow
from flows.evaluate import evaluate_flow
from flows.pretrain import pretrain_flow
from flows.promote import promotion_gate
from flows.results import PipelineResult
from flows.reward import reward_flow
from flows.rlhf import rlhf_flow
from flows.sft import sft_flow
from flows.tokenizer import tokenizer_flow
from tasks import prefect_artifacts
from tasks.config import load_config
from tasks.mlflow_runs import CONFIG_TAG, config_sha256
from tasks.report.build import build_report
from tasks.report.cards import write_model_cards
from tasks.tracking import git_commit, open_run, tracking_uri

DESCRIPTION = (
    "Llama 2 recipe pipeline run: corpus -> tokenizer -> pretrain -> sft -> reward -> rlhf -> "
    "distill -> evaluate -> promotion gate."
)


@flow(name="pipeline")
def pipeline_flow(
    preset: str = "demo", overrides: list[str] | None = None, rerun: list[str] | None = None
) -> PipelineResult:
    """Run every stage in order; `rerun` forces named stages/tasks and what depends on them."""
    cfg = load_config(preset, overrides or [])
    expand_reruns(
        rerun or [], base_model=cfg.base_model is not None
    )  # fail fast on an unknown name, before any work
    short = str(flow_run.id or uuid.uuid4())[:8]
    # a Prefect retry keeps the flow-run id: it continues this run's MLflow parent run
    parent = open_run(
        cfg.run_dir,
        cfg.preset,
        f"pipeline {cfg.preset} {short}",
        {
            "stage": "pipeline",
            **prefect_artifacts.flow_run_tags(flow_run.id),
            CONFIG_TAG: config_sha256(cfg),
        },
        description=DESCRIPTION,
        continue_flow_run=True,
    )
    try:
        result = _stages(cfg, preset, overrides, rerun, parent.run_id)
        if result.evaluate is not None:
            table = pl.read_csv(result.evaluate.table).to_dicts()
            stage_runs = {k: v.mlflow_run_id for k, v in result.stages().items()}
            cards = write_model_cards(parent.client, stage_runs, table, cfg.preset, git_commit())
            result = result.model_copy(update={"model_cards": cards})
        report = build_report(
            parent.client,
            parent.run_id,
            cfg.run_dir / "reports" / f"report-{parent.run_id[:8]}.html",
        )
        parent.log_artifact(report, "report")
        if result.evaluate is not None:
            outcome = promotion_gate(cfg, result.evaluate, str(report))
            if outcome is not None:
                parent.set_tags(
                    {
                        "promotion.model_version": f"{outcome.registered_model}/"
                        f"{outcome.model_version} ({outcome.version})",
                        "promotion.decision": outcome.decision,
                    }
                )
    except Pause:  # suspended for a person's decision: the resumed flow run continues this run
        parent.set_tags({"promotion.decision": "waiting for a person (flow run suspended)"})
        parent.close("FINISHED")
        raise
    except BaseException:
        parent.close("FAILED")
        raise
    parent.close("FINISHED")
    prefect_artifacts.publish_stage(parent, "pipeline", DESCRIPTION, "FINISHED")
    return result.model_copy(
        update={
            "mlflow_run_id": parent.run_id,
            "report": str(report),
            "tracking_uri": tracking_uri(cfg.run_dir),
        }
    )


def _stages(
    cfg, preset: str, overrides: list[str] | None, rerun: list[str] | None, parent_run_id: str
) -> PipelineResult:
    """Each stage's flow in order, each given the results it reads."""
    corpus = corpus_flow(preset, overrides, rerun, parent_run_id)
    tokenizer = None  # with a base model, its own tokenizer comes with it (pretrain imports both)
    if cfg.base_model is None:
        tokenizer = tokenizer_flow(
            preset, overrides, rerun, parent_run_id, documents=corpus.documents
        )
    pretrain = pretrain_flow(
        preset,
        overrides,
        rerun,
        parent_run_id,
        documents=corpus.documents if tokenizer is None else tokenizer.documents,
        tokenizer_model=None if tokenizer is None else tokenizer.tokenizer_model,
    )
    sft = sft_flow(
        preset,
        overrides,
        rerun,
        parent_run_id,
        tokenizer_model=pretrain.tokenizer_model,
        pretrained_dir=pretrain.model_dir,
    )
    reward = reward_flow(preset, overrides, rerun, parent_run_id, sft=sft)
    rlhf = rlhf_flow(preset, overrides, rerun, parent_run_id, reward=reward)
    distill = evaluation = None
    if cfg.distill.enabled:
        distill = distill_flow(preset, overrides, rerun, parent_run_id, rlhf=rlhf)
    if cfg.evaluate.enabled:  # without distillation, evaluation reads the RLHF result itself
        evaluation = evaluate_flow(
            preset, overrides, rerun, parent_run_id, distill=distill, rlhf=None if distill else rlhf
        )
    return PipelineResult(
        preset=cfg.preset,
        corpus=corpus,
        tokenizer=tokenizer,
        pretrain=pretrain,
        sft=sft,
        reward=reward,
        rlhf=rlhf,
        distill=distill,
        evaluate=evaluation,
    )
