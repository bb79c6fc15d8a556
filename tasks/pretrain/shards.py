"""Token shards for pretraining: the kept corpus tokenised into flat memory-mappable arrays.

Documents are split into train and validation *by document* (a seeded hash of the doc id, so a
document never straddles the split and the split is stable as the corpus grows). Each document
is encoded as BOS + tokens + EOS and the documents are concatenated, as in Llama pretraining.
In the training split a document appears floor(w) times plus once more with probability
frac(w), w being its source's sampling weight (factual sources up-sampled, §2.1); the order is
shuffled with the seed. Pure code: no Prefect or MLflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from tasks.chat.tokenizer import Tokenizer, load_tokenizer
from tasks.progress import progress

ENCODE_BATCH = 2000  # documents per sentencepiece batch call


class ShardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    val_frac: float = Field(0.02, gt=0.0, lt=1.0)  # share of documents held out for val loss
    seed: int = 0
    apply_weights: bool = True  # repeat documents by their source's sample_weight


@dataclass
class TokenShards:
    train: np.ndarray  # flat token ids, uint16 (vocab < 65536) or uint32
    val: np.ndarray
    stats: dict[str, float]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def is_validation(doc_ids: pl.Series, val_frac: float, seed: int) -> np.ndarray:
    """Stable per-document split: the doc id's seeded 64-bit hash below val_frac of the range."""
    cut = int(val_frac * 2**64)
    return np.fromiter(
        (xxhash.xxh64_intdigest(d.encode(), seed=seed) < cut for d in doc_ids),
        dtype=bool,
        count=len(doc_ids),
    )


def encode_documents(texts: list[str], processor: Tokenizer) -> list[list[int]]:
    out: list[list[int]] = []
    batches = range(0, len(texts), ENCODE_BATCH)
    for start in progress(batches, "tokenise", total=len(batches)):
        bos, eos = processor.bos_id(), processor.eos_id()
        batch = processor.encode_batch(texts[start : start + ENCODE_BATCH])
        out.extend([bos, *ids, eos] for ids in batch)
    return out


def repeats(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How often each document is drawn: floor(w) plus one with probability frac(w)."""
    base = np.floor(weights).astype(np.int64)
    return base + (rng.random(len(weights)) < (weights - base))


def build_token_shards(df: pl.DataFrame, model_path: Path, cfg: ShardConfig) -> TokenShards:
    """Tokenise `documents` (doc_id, source, text, sample_weight) into train/val token arrays."""
    processor = load_tokenizer(model_path)
    dtype = token_dtype(processor.vocab_size())
    ids = encode_documents(df["text"].to_list(), processor)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    val = is_validation(df["doc_id"], cfg.val_frac, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    weights = df["sample_weight"].to_numpy() if cfg.apply_weights else np.ones(df.height)
    reps = np.where(val, 0, repeats(weights, rng))
    train_order = rng.permutation(np.repeat(np.arange(df.height), reps))
    val_order = np.flatnonzero(val)
    train = _concat(ids, train_order, lengths, dtype)
    val_tokens = _concat(ids, val_order, lengths, dtype)
    stats = {
        "docs": float(df.height),
        "docs_val": float(val.sum()),
        "train_tokens": float(train.size),
        "val_tokens": float(val_tokens.size),
        "vocab_size": float(processor.vocab_size()),
        "tokens_unweighted": float(lengths[~val].sum()),
    }
    sources = df["source"].to_numpy()
    for source in np.unique(sources):
        mine = (sources == source) & ~val
        stats[f"train_tokens_{source}"] = float((lengths[mine] * reps[mine]).sum())
    return TokenShards(train, val_tokens, stats)


def _concat(ids: list[list[int]], order: np.ndarray, lengths: np.ndarray, dtype) -> np.ndarray:
    out = np.empty(int(lengths[order].sum()), dtype=dtype)
    pos = 0
    for i in order:
        out[pos : pos + lengths[i]] = ids[i]
        pos += lengths[i]
    return out


def write_shards(shards: TokenShards, folder: Path, extra: dict) -> Path:
    """train.bin, val.bin (raw arrays, np.memmap-able) and manifest.json, written atomically:
    into a temp folder, fsynced, then renamed into place."""
    import os
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    for name, array in (("train.bin", shards.train), ("val.bin", shards.val)):
        with open(tmp / name, "wb") as fh:
            fh.write(array.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
    manifest = {
        "dtype": shards.train.dtype.name,
        "train": "train.bin",
        "val": "val.bin",
        **{k: v for k, v in shards.stats.items()},
        **extra,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if folder.exists():  # same content-addressed folder already written: keep it
        import shutil

        shutil.rmtree(tmp)
    else:
        os.replace(tmp, folder)
    return folder / "manifest.json"


def load_shards(manifest_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Memory-map the train and val arrays named by a manifest."""
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"token shard manifest {manifest_path} is missing; re-run the "
            "pretrain stage with --rerun pretrain.token_shards"
        )
    manifest = json.loads(manifest_path.read_text())
    dtype = np.dtype(manifest["dtype"])
    folder = manifest_path.parent
    train = np.memmap(folder / manifest["train"], dtype=dtype, mode="r")
    val = np.memmap(folder / manifest["val"], dtype=dtype, mode="r")
    return train, val, manifest
