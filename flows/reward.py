"""Reward stage (RECIPE.md §5, §6): preference pairs collected from the SFT-era models with the
rule annotator (a stand-in for people), the Helpfulness and Safety reward models trained on the
paper's data mixes, their accuracy by rating level (Table 8), the Safety RM's unsafe-response
recall, calibration against the annotator, and (where configured) the margin ablation."""

from __future__ import annotations

import polars as pl
from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.people import collect_with_people
from flows.results import RewardResult, SftResult
from tasks.config import flatten, load_config
from tasks.hashing import sha256_of
from tasks.reward import steps
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Reward models: prompts from the SFT train dialogues (helpfulness and safety), two responses "
    "from two model variants at two temperatures, judged by the rule annotator (a stand-in for "
    "human annotators; 4 rating levels, safety bins, the chosen-unsafe/rejected-safe exclusion); "
    "Helpfulness and Safety RMs from the SFT weights with a scalar head, margin loss; Table 8."
)


@flow(name="reward")
def reward_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    sft: SftResult | None = None,
) -> RewardResult:
    """Collect preferences and train both reward models. Without `sft` (the SFT stage's
    result), the earlier stages supply it (cached when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if sft is None:
        from flows.sft import sft_flow

        sft = sft_flow(preset, overrides, rerun, parent_run_id)
    r, seed, run_dir, data_dir = cfg.reward, cfg.seed, str(cfg.run_dir), str(cfg.data_dir)
    dialogues, tokenizer, sft_dir = sft.dialogues, sft.tokenizer_model, sft.model_dir
    run = StageRunner("reward", expand_reruns(rerun or []))
    with stage_run(cfg, "reward", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params({**flatten(r, "reward."), "seed": seed})
        label_sha = {f.name: sha256_of(f.path) for f in r.collection.label_files}
        if r.collection.annotator == "rule":
            collected = run(
                steps.collect_step,
                dialogues,
                sft.models,
                tokenizer,
                r,
                cfg.corpus.toxicity,
                seed,
                data_dir,
                label_sha,
            )
        else:  # people label all (or, mixed, a share of) the pairs: the flow waits for them
            queued, collected = collect_with_people(
                run,
                "reward",
                dialogues,
                sft.models,
                tokenizer,
                r,
                r.collection,
                cfg.corpus.toxicity,
                seed,
                0,
                run_dir,
                data_dir,
                label_sha,
            )
            tracker.log_metrics(queued.stats)
        log_step(tracker, collected, datasets={steps.PAIRS: "training"})
        pairs = collected[steps.PAIRS]
        trained = {}
        for rm, step in (
            ("helpfulness", steps.train_helpfulness_step),
            ("safety", steps.train_safety_step),
        ):
            out = run(step, pairs, r, sft_dir, tokenizer, seed, run_dir, tracker.run_id)
            tracker.log_metrics(out.stats)
            trained[rm] = out.models["model"]
        evaluated = run(steps.evaluate_step, pairs, trained, tokenizer, r, run_dir)
        log_step(tracker, evaluated, artifact_path="evaluation")
        table = pl.read_csv(evaluated.files["table8.csv"])
        tracker.log_table(table, "table8_accuracy_by_level")
        if r.margin_ablation:
            ablation = run(
                steps.margin_ablation_step,
                pairs,
                r,
                sft_dir,
                tokenizer,
                seed,
                run_dir,
                tracker.run_id,
            )
            log_step(tracker, ablation, artifact_path="evaluation")
            tracker.log_table(pl.read_csv(ablation.files["margin_ablation.csv"]), "margin_ablation")
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
    return RewardResult(
        outputs=collected.outputs,
        reward_models=trained,
        tokenizer_model=tokenizer,
        sft=sft,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
