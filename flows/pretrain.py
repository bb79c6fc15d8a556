"""Pretraining stage (RECIPE.md §3): token shards from the kept corpus, then a Llama trained
from scratch with the paper's optimizer and schedule; the final model is registered."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.results import PretrainResult
from tasks.config import flatten, load_config
from tasks.io import Manifest
from tasks.pretrain import steps
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Pretraining: the kept corpus tokenised into BOS/EOS-joined token shards (split by "
    "document, factual sources up-weighted), a Llama (RMSNorm, SwiGLU, RoPE, GQA) trained with "
    "AdamW (0.9, 0.95, eps 1e-5, wd 0.1), cosine schedule to 10 % of peak, clip 1.0. Loss, lr, "
    "grad norm, tokens/s and MFU per step; val loss and samples along the way."
)


@flow(name="pretrain")
def pretrain_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    documents: Manifest | None = None,
    tokenizer_model: str | None = None,
) -> PretrainResult:
    """Train the base model. Without inputs, the earlier stages supply them (cached)."""
    cfg = load_config(preset, overrides or [])
    if documents is None or tokenizer_model is None:
        from flows.tokenizer import tokenizer_flow

        tok = tokenizer_flow(preset, overrides, rerun, parent_run_id)
        documents, tokenizer_model = tok.documents, tok.tokenizer_model
    p = cfg.pretrain
    run = StageRunner("pretrain", expand_reruns(rerun or []))
    with stage_run(cfg, "pretrain", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params({**flatten(p, "pretrain."), "seed": cfg.seed})
        shards = run(
            steps.token_shards_step, documents, tokenizer_model, p.shards, str(cfg.run_dir)
        )
        log_step(tracker, shards, artifact_path="shards")
        trained = run(
            steps.train_step,
            shards.files["shards_manifest.json"],
            p.model_config_dict(),
            p.train,
            tokenizer_model,
            p.sample_prompts,
            p.registered_model,
            str(cfg.run_dir),
            tracker.run_id,
        )
        tracker.log_metrics(trained.stats)
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
        tracker.set_tags(
            {
                "registered_model": (
                    f"{p.registered_model} v{int(trained.stats['registered_version'])}"
                )
            }
        )
    return PretrainResult(
        model_dir=trained.models["model"],
        tokenizer_model=tokenizer_model,
        registered_version=int(trained.stats["registered_version"]),
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
