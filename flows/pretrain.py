"""Pretraining stage (RECIPE.md §3): token shards from the kept corpus, then a Llama trained
from scratch with the paper's optimizer and schedule; the final model is registered."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.results import PretrainResult
from tasks.config import flatten, load_config
from tasks.data.catalog import load_catalog
from tasks.data.fetch import verified_archive
from tasks.io import Manifest
from tasks.pretrain import base_model as base_steps
from tasks.pretrain import steps
from tasks.pretrain.base_model import source_sha256
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Pretraining: the kept corpus tokenised into BOS/EOS-joined token shards (split by "
    "document, factual sources up-weighted), a Llama (RMSNorm, SwiGLU, RoPE, GQA) trained with "
    "AdamW (0.9, 0.95, eps 1e-5, wd 0.1), cosine schedule to 10 % of peak, clip 1.0. Loss, lr, "
    "grad norm, tokens/s and MFU per step; val loss and samples along the way."
)

BASE_DESCRIPTION = (
    "Base model import: a pretrained Llama from outside the recipe (Hugging Face folder or GGUF) "
    "read into the recipe's model format with its own tokenizer; the tokenizer and pretraining "
    "stages are skipped."
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
    """Train the base model. Without inputs, the earlier stages supply them (cached). With
    `base_model` set in the config, import that model instead (the tokenizer stage is skipped)."""
    cfg = load_config(preset, overrides or [])
    if cfg.base_model is not None:
        return _import_base(cfg, preset, overrides, rerun, parent_run_id, documents)
    if documents is None or tokenizer_model is None:
        from flows.tokenizer import tokenizer_flow

        tok = tokenizer_flow(preset, overrides, rerun, parent_run_id)
        documents, tokenizer_model = tok.documents, tok.tokenizer_model
    p = cfg.pretrain
    run = StageRunner("pretrain", expand_reruns(rerun or [], base_model=False))
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


def _import_base(cfg, preset, overrides, rerun, parent_run_id, documents) -> PretrainResult:
    """The pretrain stage with a base model: the corpus is still measured (its documents are
    logged as the stage's input), then the base model is imported and registered."""
    if documents is None:
        from flows.corpus import corpus_flow

        documents = corpus_flow(preset, overrides, rerun, parent_run_id).documents
    base = cfg.base_model
    archive = None
    if base.archive is not None:
        archive = verified_archive(
            load_catalog(cfg.data.catalog).archive(base.archive), cfg.data.cache_dir
        )
    sha256 = source_sha256(base, archive)
    run = StageRunner("pretrain", expand_reruns(rerun or [], base_model=True))
    with stage_run(cfg, "pretrain", parent_run_id, flow_run.id, BASE_DESCRIPTION) as tracker:
        tracker.log_params(
            {**flatten(base, "base_model."), "base_model.sha256": sha256, "seed": cfg.seed}
        )
        imported = run(
            base_steps.import_base_step,
            base,
            None if archive is None else str(archive),
            sha256,
            cfg.pretrain.registered_model,
            str(cfg.run_dir),
            tracker.run_id,
        )
        tracker.log_metrics(imported.stats)
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
        version = int(imported.stats["registered_version"])
        tracker.set_tags({"registered_model": f"{cfg.pretrain.registered_model} v{version}"})
    return PretrainResult(
        model_dir=imported.models["model"],
        tokenizer_model=imported.files["tokenizer"],
        registered_version=version,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
