"""Prefect tasks of the pretraining stage (RECIPE.md §3): token shards, then the training run."""

from __future__ import annotations

import json
from pathlib import Path

from prefect.logging import get_run_logger

from models.llama import Llama, LlamaConfig
from models.seeding import seeded
from tasks.caching import cached_task
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset
from tasks.pretrain.samples import make_sample_fn
from tasks.pretrain.shards import ShardConfig, build_token_shards, load_shards, write_shards
from tasks.results import StepOutput
from tasks.tracking import attach_run, register_model
from tasks.training.config import TrainConfig
from tasks.training.data import TokenBatches
from tasks.training.loop import LOSS_CURVE, train
from tasks.training.model_io import export_model
from tasks.training.rerun import set_aside_if_forced


@cached_task("token_shards")
def token_shards_step(
    documents: Manifest, tokenizer_model: str, cfg: ShardConfig, run_dir: str
) -> StepOutput:
    """Tokenise the kept corpus into memory-mappable train/val arrays (content-addressed)."""
    tok_sha = sha256_of(Path(tokenizer_model))
    folder = (
        Path(run_dir)
        / "artifacts"
        / "pretrain"
        / f"shards-{parts_key(documents.sha256, tok_sha, cfg.model_dump_json())}"
    )
    shards = build_token_shards(read_dataset(documents), Path(tokenizer_model), cfg)
    manifest = write_shards(
        shards, folder, {"tokenizer_sha256": tok_sha, "documents_sha256": documents.sha256}
    )
    get_run_logger().info(
        "token shards: %d train / %d val tokens in %s", shards.train.size, shards.val.size, folder
    )
    return StepOutput(
        stats={f"shards.{k}": v for k, v in shards.stats.items()},
        files={"shards_manifest.json": str(manifest)},
    )


@cached_task("train_model", ignore=("mlflow_run_id",))
def train_step(
    shards_manifest: str,
    model_cfg: dict,
    cfg: TrainConfig,
    tokenizer_model: str,
    sample_prompts: list[str],
    registered_model: str,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Train a Llama from scratch on the shards; resumes from its last checkpoint if killed.

    The output folder is keyed by the inputs, so a re-run after a crash continues where it
    stopped; per-step metrics, samples and the loss curve go to the stage's MLflow run, and the
    final weights become a new version of the registered model (a cached run reuses it)."""
    train_tokens, val_tokens, meta = load_shards(Path(shards_manifest))
    config = LlamaConfig(**{**model_cfg, "vocab_size": int(meta["vocab_size"])})
    out_dir = (
        Path(run_dir)
        / "artifacts"
        / "pretrain"
        / (
            "train-"
            + parts_key(
                sha256_of(Path(shards_manifest)),
                json.dumps(config.to_dict(), sort_keys=True),
                cfg.model_dump_json(),
            )
        )
    )
    torch_model = build_model(config, cfg.seed)
    get_run_logger().info(
        "pretraining %.2fM parameters for %d steps (%d tokens/step) in %s",
        torch_model.num_params() / 1e6,
        cfg.max_steps,
        cfg.tokens_per_step,
        out_dir,
    )
    set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
    stats = train(
        torch_model,
        TokenBatches(train_tokens, cfg.batch_size, cfg.seq_len, seed=cfg.seed),
        cfg,
        attach_run(Path(run_dir), mlflow_run_id),
        out_dir,
        val_tokens=val_tokens,
        sample_fn=make_sample_fn(Path(tokenizer_model), sample_prompts, seed=cfg.seed),
    )
    logger = attach_run(Path(run_dir), mlflow_run_id)
    model_dir = export_model(Path(stats["checkpoint"]), out_dir / "model")
    version = register_model(
        logger,
        model_dir,
        registered_model,
        f"Llama ({torch_model.num_params() / 1e6:.1f}M parameters) pretrained "
        f"for {stats['steps']} steps; val loss {stats['val_loss']:.3f}",
        tokenizer=tokenizer_model,
    )
    out = {f"train.{k}": float(v) for k, v in stats.items() if isinstance(v, (int, float))}
    out["registered_version"] = float(version)
    return StepOutput(
        stats=out,
        files={"loss_curve.png": str(out_dir / LOSS_CURVE)},
        models={"model": str(model_dir)},
    )


def build_model(config: LlamaConfig, seed: int) -> Llama:
    """A fresh Llama whose initial weights depend only on `seed` (the training config's), so
    two fresh runs with the same inputs train the same weights."""
    with seeded(seed):
        return Llama(config)
