"""Import a base model from outside (tasks/pretrain/base_config.py) as the recipe's pretrained
model: our `Llama` in a model folder plus the tokenizer every later stage uses.

The import is content-addressed: the output folder is named by the source's sha256 and the
import settings, so a second run reuses it (and the task's cache skips it entirely).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from prefect.logging import get_run_logger

from models.hf import from_hf
from tasks.caching import cached_task
from tasks.hashing import parts_key, sha256_of
from tasks.pretrain.base_config import BaseModelConfig, check_base_model
from tasks.results import StepOutput
from tasks.tracking import attach_run, register_model
from tasks.training.model_io import save_model_folder

TOKENIZER_DIR, MODEL_DIR = "tokenizer", "model"


def source_sha256(base: BaseModelConfig, archive_file: Path | None) -> str:
    """The digest that names the base model: the GGUF file's, the archive's (pinned by the
    catalog), or one over a Hugging Face folder's config, weights and tokenizer files."""
    if archive_file is not None:
        return sha256_of(archive_file)
    path = Path(base.path)
    if path.is_file():
        return sha256_of(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return parts_key(*(f"{p.name}:{sha256_of(p)}" for p in files))


def _extract(archive_file: Path, member: str, dest: Path) -> Path:
    """`member` of the zip archive at `dest` (written once, atomically)."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".extract-")
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(archive_file) as zf, zf.open(member) as f:
            shutil.copyfileobj(f, out, 1 << 20)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _load_hf_model(folder: Path, gguf_file: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_file, dtype=torch.float32, local_files_only=True
    )
    tokenizer = None
    if gguf_file is not None or not (folder / "tokenizer.model").is_file():
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder), gguf_file=gguf_file, local_files_only=True
        )
    return hf, tokenizer


def _save_tokenizer(source: Path, tokenizer, dest: Path) -> None:
    """The base model's tokenizer as a folder `load_tokenizer` reads: Llama 2's SentencePiece
    `tokenizer.model` when the source has one (Meta's exact encoding), else the Hugging Face
    tokenizer's files."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if tokenizer is None:
        shutil.copyfile(source / "tokenizer.model", tmp / "tokenizer.model")
    else:
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


@cached_task("import_base", ignore=("mlflow_run_id",))
def import_base_step(
    base: BaseModelConfig,
    archive_file: str | None,
    sha256: str,
    registered_model: str,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Read the base model (Hugging Face folder or GGUF) into our model folder format, save its
    tokenizer beside it, and register it as the run's first model version."""
    logger = get_run_logger()
    archive = Path(archive_file) if archive_file else None
    problems = check_base_model(base, archive)
    if problems:
        raise ValueError("; ".join(problems))
    out = Path(run_dir) / "artifacts" / "base" / parts_key(sha256, base.model_dump_json())
    start = time.perf_counter()
    if archive is not None:
        source = _extract(archive, base.member, out / "source" / Path(base.member).name)
    else:
        source = Path(base.path)
    folder, gguf = (source.parent, source.name) if base.format == "gguf" else (source, None)
    logger.info("importing base model %s (%s)", base.describe(), base.format)
    hf, hf_tokenizer = _load_hf_model(folder, gguf)
    model = from_hf(hf)
    del hf
    if base.max_seq_len is not None:
        model = _with_max_seq_len(model, base.max_seq_len)
    params = model.num_params()
    model_dir = save_model_folder(
        model,
        out / MODEL_DIR,
        {"base_model": {**base.model_dump(mode="json"), "sha256": sha256}},
    )
    tokenizer_dir = out / TOKENIZER_DIR
    _save_tokenizer(folder, hf_tokenizer, tokenizer_dir)
    seconds = time.perf_counter() - start
    logger.info("imported %.1fM parameters in %.0f s into %s", params / 1e6, seconds, out)
    version = register_model(
        attach_run(Path(run_dir), mlflow_run_id),
        model_dir,
        registered_model,
        f"Base model imported from {base.describe()} ({base.format}, sha256 {sha256[:16]}, "
        f"{params / 1e6:.1f}M parameters)",
        tokenizer=tokenizer_dir,
    )
    (out / "import.json").write_text(json.dumps({"sha256": sha256, "params": params}))
    return StepOutput(
        stats={
            "base.params": float(params),
            "base.import_seconds": seconds,
            "base.vocab_size": float(model.config.vocab_size),
            "base.max_seq_len": float(model.config.max_seq_len),
            "registered_version": float(version),
        },
        files={"tokenizer": str(tokenizer_dir)},
        models={"model": str(model_dir)},
    )


def _with_max_seq_len(model, max_seq_len: int):
    """The same weights under a config with a shorter (or longer) context window."""
    from models.llama import Llama

    cfg = model.config
    if max_seq_len == cfg.max_seq_len:
        return model
    smaller = Llama(type(cfg)(**{**cfg.to_dict(), "max_seq_len": max_seq_len}))
    smaller.load_state_dict(model.state_dict())
    return smaller
