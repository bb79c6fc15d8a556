"""The one registration task every stage that trains a model uses: log the model folder's Hugging
Face export (with the stage's tokenizer and the Llama 2 chat template) to the stage's MLflow run
and register it as a new version (a cached run reuses its version)."""

from __future__ import annotations

from pathlib import Path

from tasks.caching import cached_task
from tasks.results import StepOutput
from tasks.tracking import attach_run, register_model


@cached_task("register", ignore=("mlflow_run_id",))
def register_step(
    model_dir: str,
    tokenizer: str,
    registered_model: str,
    description: str,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Register the model in `model_dir`, exported with `tokenizer`, as a version of
    `registered_model`."""
    version = register_model(
        attach_run(Path(run_dir), mlflow_run_id),
        Path(model_dir),
        registered_model,
        description,
        tokenizer=tokenizer,
    )
    return StepOutput(stats={"registered_version": float(version)})
