"""Safety context distillation stage (RECIPE.md §9): the last RLHF policy answers adversarial
train prompts with and without a safety preprompt; answers the Safety RM scores higher with the
preprompt become training data for the prompt without it; the distilled model is registered."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.results import DistillResult, RlhfResult
from tasks.config import flatten, load_config
from tasks.distill import steps
from tasks.distill.select import distill_decision
from tasks.register import register_step
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Safety context distillation: adversarial train prompts answered with a safety preprompt "
    "(generic, or a per-risk-category answer template) and without; kept only where the Safety "
    "RM scores the preprompted answer higher; the policy fine-tuned on the prompt without the "
    "preprompt."
)


@flow(name="distill")
def distill_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    rlhf: RlhfResult | None = None,
) -> DistillResult:
    """Distil the safety preprompt into the newest RLHF policy. Without `rlhf` (the RLHF stage's
    result), the earlier stages supply it (cached when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if rlhf is None:
        from flows.rlhf import rlhf_flow

        rlhf = rlhf_flow(preset, overrides, rerun, parent_run_id)
    d, seed, run_dir, data_dir = cfg.distill, cfg.seed, str(cfg.run_dir), str(cfg.data_dir)
    dialogues, tokenizer, policy = rlhf.sft.dialogues, rlhf.tokenizer_model, rlhf.model_dir
    run = StageRunner("distill", expand_reruns(rerun or []))
    with stage_run(cfg, "distill", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params({**flatten(d, "distill."), "seed": seed, "policy": policy})
        data = run(
            steps.distill_data_step,
            dialogues,
            policy,
            rlhf.reward_models["safety"],
            tokenizer,
            d,
            cfg.reward.seq_len("safety"),
            seed,
            data_dir,
            run_dir,
        )
        log_step(tracker, data, datasets={steps.SAMPLES: "training"}, artifact_path="distillation")
        kept, rows = int(data.stats["distill.kept"]), int(data.stats["distill.rows"])
        train, how = distill_decision(kept, rows, d.min_kept)
        if train:
            tuned = run(
                steps.distill_finetune_step,
                data.outputs[steps.SAMPLES],
                dialogues,
                policy,
                tokenizer,
                d,
                cfg.sft.format,
                seed,
                run_dir,
                tracker.run_id,
            )
            log_step(tracker, tuned)
            model_dir = tuned.models["model"]
        else:
            get_run_logger().warning(how)
            model_dir = policy
        tracker.set_tags({"distill.result": how})
        registered = run(
            register_step, model_dir, tokenizer, d.registered_model, how, run_dir, tracker.run_id
        )
        tracker.log_metrics(registered.stats)
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
    return DistillResult(
        model_dir=model_dir,
        models={**rlhf.models, "distilled": model_dir},
        tokenizer_model=tokenizer,
        rlhf=rlhf,
        outputs=data.outputs,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
