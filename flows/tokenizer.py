"""Tokenizer stage (RECIPE.md §2): SentencePiece BPE with the paper's settings."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner
from flows.dag import expand_reruns
from flows.results import TokenizerResult
from tasks.config import flatten, load_config
from tasks.io import Manifest, read_dataset
from tasks.tokenizer import steps
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "SentencePiece BPE (split digits, byte fallback, identity normalisation; unk 0, bos 1, "
    "eos 2) trained on a weighted sample of the kept corpus; bytes/token per source and exact "
    "round trips checked."
)


@flow(name="tokenizer")
def tokenizer_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    documents: Manifest | None = None,
) -> TokenizerResult:
    """Train and evaluate the tokenizer. Without `documents`, the corpus stage supplies them
    (from cache when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if cfg.base_model is not None:
        raise ValueError(
            f"preset {cfg.preset!r} sets base_model ({cfg.base_model.describe()}): the tokenizer "
            "stage is skipped, the base model's own tokenizer is used (run the pretrain stage "
            "to import it)"
        )
    if documents is None:
        from flows.corpus import corpus_flow

        documents = corpus_flow(preset, overrides, rerun, parent_run_id).documents
    docs = documents
    run = StageRunner("tokenizer", expand_reruns(rerun or [], base_model=False))
    with stage_run(cfg, "tokenizer", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params({**flatten(cfg.tokenizer, "tokenizer."), "seed": cfg.seed})
        tracker.log_dataset(docs, "training")
        trained = run(steps.train_step, docs, cfg.tokenizer, str(cfg.run_dir))
        log_step(tracker, trained, artifact_path="tokenizer")
        model_path = trained.files["tokenizer.model"]
        evaluated = run(steps.evaluate_step, model_path, docs, str(cfg.data_dir))
        log_step(tracker, evaluated)
        tracker.log_table(read_dataset(evaluated["tokenizer_eval"]), "bytes_per_token")
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
    return TokenizerResult(
        outputs=evaluated.outputs,
        tokenizer_model=str(Path(model_path)),
        documents=docs,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )
