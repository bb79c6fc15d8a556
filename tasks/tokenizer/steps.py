"""Prefect tasks of the tokenizer stage (RECIPE.md §2): train SentencePiece BPE, evaluate it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.results import StepOutput
from tasks.tokenizer import train as tok

EVAL_DOCS_PER_SOURCE = 200  # enough for a stable bytes/token per source, cheap to encode


@cached_task("train_tokenizer")
def train_step(documents: Manifest, cfg: tok.TokenizerConfig, run_dir: str) -> StepOutput:
    """Train on a weighted sample of the kept corpus; the model file is content-addressed."""
    texts = tok.sample_training_text(read_dataset(documents), cfg)
    key = hashlib.sha256((documents.sha256 + cfg.model_dump_json()).encode()).hexdigest()[:16]
    out = Path(run_dir) / "artifacts" / "tokenizer" / key / "tokenizer.model"
    model_path, stats = tok.train_tokenizer(texts, cfg, out)
    get_run_logger().info(
        "tokenizer: vocab %d trained on %.1f MB in %.1f s",
        cfg.vocab_size,
        stats.get("training_bytes", 0) / 1e6,
        stats.get("seconds", 0.0),
    )
    return StepOutput(
        stats={f"train.{k}": float(v) for k, v in stats.items()},
        files={"tokenizer.model": str(model_path)},
    )


@cached_task("evaluate_tokenizer")
def evaluate_step(model_path: str, documents: Manifest, data_dir: str) -> StepOutput:
    """Bytes per token per source and exact round-trip checks."""
    table, stats = tok.evaluate_tokenizer(
        Path(model_path), read_dataset(documents), EVAL_DOCS_PER_SOURCE
    )
    get_run_logger().info(
        "tokenizer: %.2f bytes/token overall, %d round-trip failures",
        stats.get("bytes_per_token", 0.0),
        int(stats.get("roundtrip_failures", 0)),
    )
    return StepOutput(
        outputs={"tokenizer_eval": write_dataset(table, "tokenizer_eval", Path(data_dir))},
        stats={f"eval.{k}": float(v) for k, v in stats.items()},
    )
