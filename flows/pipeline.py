"""The whole recipe as one flow: each stage a subflow, one parent MLflow run over all of them."""

from __future__ import annotations

import uuid

import polars as pl

from prefect import flow
from prefect.runtime import flow_run

from flows.corpus import corpus_flow
from flows.distill import distill_flow
from flows.evaluate import evaluate_flow
from flows.dag import expand_reruns
from flows.pretrain import pretrain_flow
from flows.reward import reward_flow
from flows.rlhf import rlhf_flow
from flows.sft import sft_flow
from flows.tokenizer import tokenizer_flow
from tasks.config import load_config
from tasks.mlflow_runs import CONFIG_TAG, config_sha256
from tasks.report.build import build_report
from tasks.report.cards import write_model_cards
from tasks.tracking import git_commit, open_run, tracking_uri

DESCRIPTION = ("Llama 2 recipe pipeline run: corpus -> tokenizer -> pretrain -> sft -> reward -> rlhf -> distill -> evaluate "
               "(later stages join as they land).")


@flow(name="pipeline")
def pipeline_flow(preset: str = "demo", overrides: list[str] | None = None,
                  rerun: list[str] | None = None) -> dict:
    """Run every stage in order; `rerun` forces named stages/tasks and what depends on them."""
    cfg = load_config(preset, overrides or [])
    expand_reruns(rerun or [])  # fail fast on an unknown name, before any work
    short = str(flow_run.id or uuid.uuid4())[:8]
    # a Prefect retry keeps the flow-run id: it continues this run's MLflow parent run
    parent = open_run(cfg.run_dir, cfg.preset, f"pipeline {cfg.preset} {short}",
                      {"stage": "pipeline", "prefect.flow_run_id": str(flow_run.id or ""),
                       CONFIG_TAG: config_sha256(cfg)},
                      description=DESCRIPTION, continue_flow_run=True)
    summary: dict = {"preset": cfg.preset, "mlflow_run_id": parent.run_id,
                     "tracking_uri": tracking_uri(cfg.run_dir), "stages": {}}
    try:
        corpus = corpus_flow(preset, overrides, rerun, parent.run_id)
        summary["stages"]["corpus"] = corpus
        tokenizer = tokenizer_flow(preset, overrides, rerun, parent.run_id,
                                   documents=corpus["outputs"]["documents"])
        summary["stages"]["tokenizer"] = tokenizer
        pretrain = pretrain_flow(
            preset, overrides, rerun, parent.run_id, documents=tokenizer["documents"],
            tokenizer_model=tokenizer["tokenizer_model"])
        summary["stages"]["pretrain"] = pretrain
        sft = sft_flow(preset, overrides, rerun, parent.run_id,
                       tokenizer_model=tokenizer["tokenizer_model"],
                       pretrained_dir=pretrain["model_dir"])
        summary["stages"]["sft"] = sft
        reward = reward_flow(preset, overrides, rerun, parent.run_id, sft=sft)
        summary["stages"]["reward"] = {k: v for k, v in reward.items() if k != "sft"}
        rlhf = rlhf_flow(preset, overrides, rerun, parent.run_id, reward=reward)
        summary["stages"]["rlhf"] = {k: v for k, v in rlhf.items() if k != "reward"}
        distill = {"rlhf": rlhf, "model_dir": rlhf["model_dir"]}  # what evaluation sees without it
        if cfg.distill.enabled:
            distill = distill_flow(preset, overrides, rerun, parent.run_id, rlhf=rlhf)
            summary["stages"]["distill"] = {k: v for k, v in distill.items() if k != "rlhf"}
        if cfg.evaluate.enabled:
            evaluation = evaluate_flow(preset, overrides, rerun, parent.run_id, distill=distill)
            summary["stages"]["evaluate"] = evaluation
            table = pl.read_csv(evaluation["artifacts"]["evaluation.csv"]).to_dicts()
            stage_runs = {k: v["mlflow_run_id"] for k, v in summary["stages"].items()}
            summary["model_cards"] = write_model_cards(parent.client, stage_runs, table, cfg.preset,
                                                       git_commit())
        report = build_report(parent.client, parent.run_id,
                              cfg.run_dir / "reports" / f"report-{parent.run_id[:8]}.html")
        parent.log_artifact(report, "report")
        summary["report"] = str(report)
    except BaseException:
        parent.close("FAILED")
        raise
    parent.close("FINISHED")
    return summary
