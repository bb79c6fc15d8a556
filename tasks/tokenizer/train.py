"""SentencePiece BPE tokenizer, Llama 2 settings (paper §2.2): pure code, no Prefect or MLflow.

How documents are fed: sentencepiece's trainer treats every input string as one sentence, so each
document is split on "\\n" and its non-blank lines are fed one by one. The trainer therefore never
sees a newline; at encode time "\\n" (and any other character left out of the vocabulary) falls
back to byte pieces, "<0x0A>" for a newline, exactly as in the Llama 2 tokenizer. With identity
normalisation, no whitespace folding and byte fallback, decode(encode(text)) == text for any text
(except one holding U+2581 "▁" itself, sentencepiece's whitespace marker).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import sentencepiece as spm
from pydantic import BaseModel, ConfigDict, Field

DIGITS_PROBE = "12345"


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(32000, ge=300)  # §2.2: 32k; presets shrink it (byte pieces take 259)
    sample_bytes: int = Field(50_000_000, gt=0)  # at most this much UTF-8 text is fed to training
    model_type: Literal["bpe", "unigram"] = "bpe"  # §2.2: BPE
    character_coverage: float = Field(0.99995, gt=0.0, le=1.0)
    split_digits: bool = True  # "12345" -> 1 2 3 4 5
    byte_fallback: bool = True  # unknown characters become UTF-8 byte pieces, never <unk>
    allow_whitespace_only_pieces: bool = True
    normalization_rule_name: Literal["identity", "nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf"] = (
        "identity"  # §2.2: text is tokenized as is
    )
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = False
    max_sentencepiece_length: int = Field(16, ge=1)
    max_sentence_length: int = Field(65536, gt=0)  # bytes; longer lines are skipped and counted
    seed: int = 0
    num_threads: int = Field(2, ge=1)
    # Special ids, fixed by the paper: changing them would break every downstream token file.
    unk_id: Literal[0] = 0
    bos_id: Literal[1] = 1
    eos_id: Literal[2] = 2
    pad_id: Literal[-1] = -1  # no pad piece


def sample_training_text(df: pl.DataFrame, cfg: TokenizerConfig) -> list[str]:
    """A seeded random sample of documents, up to `cfg.sample_bytes` of UTF-8 text.

    With a `sample_weight` column the sample follows the weighted mixture: a document of weight
    w enters floor(w) times plus once more with probability frac(w) (an up-sampled source counts
    more, weight 0 drops it), then all entries are shuffled and taken until the budget is full.
    """
    if "text" not in df.columns:
        raise ValueError(
            f"sample_training_text: documents frame has no 'text' column (has {df.columns})"
        )
    rng = np.random.default_rng(cfg.seed)
    texts = df["text"].fill_null("")
    n_bytes = texts.str.len_bytes().to_numpy().astype(np.int64)
    copies = _copies_per_document(df, rng)
    entries = rng.permutation(np.repeat(np.arange(df.height), copies))
    within = np.cumsum(n_bytes[entries]) <= cfg.sample_bytes
    picked = entries[within] if within.any() else entries[:1]  # one oversized document: cut below
    sample = [texts[int(i)] for i in picked]
    if sample and not within.any():
        sample[0] = sample[0].encode("utf-8")[: cfg.sample_bytes].decode("utf-8", errors="ignore")
    return sample


def _copies_per_document(df: pl.DataFrame, rng: np.random.Generator) -> np.ndarray:
    if "sample_weight" not in df.columns:
        return np.ones(df.height, dtype=np.int64)
    weights = df["sample_weight"]
    if weights.null_count() or (weights < 0).any():
        raise ValueError("sample_weight must be >= 0 and non-null on every document")
    w = weights.cast(pl.Float64).to_numpy()
    whole = np.floor(w)
    return (whole + (rng.random(len(w)) < w - whole)).astype(np.int64)


class _LineFeeder:
    """Yields the non-blank lines of each document and counts what it fed and skipped."""

    def __init__(self, texts: list[str], max_line_bytes: int) -> None:
        self.texts, self.max_line_bytes = texts, max_line_bytes
        self.lines = self.bytes = self.skipped_lines = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            for line in text.split("\n"):
                if not line.strip():
                    continue
                size = len(line.encode("utf-8"))
                if size > self.max_line_bytes:  # the trainer would drop it silently
                    self.skipped_lines += 1
                    continue
                self.lines += 1
                self.bytes += size
                yield line


def trainer_options(cfg: TokenizerConfig) -> dict[str, object]:
    """The sentencepiece trainer flags for `cfg` (all stored in the model's trainer_spec)."""
    return dict(
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        character_coverage=cfg.character_coverage,
        split_digits=cfg.split_digits,
        byte_fallback=cfg.byte_fallback,
        allow_whitespace_only_pieces=cfg.allow_whitespace_only_pieces,
        normalization_rule_name=cfg.normalization_rule_name,
        add_dummy_prefix=cfg.add_dummy_prefix,
        remove_extra_whitespaces=cfg.remove_extra_whitespaces,
        max_sentencepiece_length=cfg.max_sentencepiece_length,
        max_sentence_length=cfg.max_sentence_length,
        unk_id=cfg.unk_id,
        bos_id=cfg.bos_id,
        eos_id=cfg.eos_id,
        pad_id=cfg.pad_id,
        num_threads=cfg.num_threads,
        input_sentence_size=0,  # use every fed line: the sample is already drawn
        minloglevel=1,  # warnings only
    )


def train_tokenizer(
    texts: list[str], cfg: TokenizerConfig, out_path: Path
) -> tuple[Path, dict[str, float]]:
    """Train in memory and write the .model file atomically. Returns (path, stats)."""
    feeder = _LineFeeder(texts, cfg.max_sentence_length)
    if not any(line.strip() for text in texts for line in text.split("\n")):
        raise ValueError("train_tokenizer: no non-blank line of text to train on")
    spm.set_random_generator_seed(cfg.seed)
    model = io.BytesIO()
    start = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(feeder), model_writer=model, **trainer_options(cfg)
        )
    except RuntimeError as err:
        raise ValueError(
            f"sentencepiece training failed (vocab_size={cfg.vocab_size}, {feeder.bytes} bytes in "
            f"{feeder.lines} lines): {err}. Lower tokenizer.vocab_size or raise sample_bytes."
        ) from err
    seconds = time.perf_counter() - start
    out_path = _write_atomic(Path(out_path), model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    stats = {
        "vocab_size": float(processor.vocab_size()),
        "training_docs": float(len(texts)),
        "training_lines": float(feeder.lines),
        "training_bytes": float(feeder.bytes),
        "lines_skipped_too_long": float(feeder.skipped_lines),
        "seconds": seconds,
        "model_bytes": float(len(model.getvalue())),
    }
    return out_path, stats


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def evaluate_tokenizer(
    model_path: Path, df: pl.DataFrame, max_docs_per_source: int = 200
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Bytes per token per source, exact round trips, split digits.

    Takes the first `max_docs_per_source` documents of each source. Returns a table (source,
    docs, bytes, tokens, bytes_per_token, roundtrip_failures) and overall stats.
    """
    processor = spm.SentencePieceProcessor(model_file=str(model_path))  # its own model
    docs = df.group_by("source", maintain_order=True).head(max_docs_per_source)
    texts = docs["text"].fill_null("").to_list()
    ids = processor.encode(texts) if texts else []
    decoded = processor.decode(ids) if texts else []
    per_doc = pl.DataFrame(
        {
            "source": docs["source"],
            "bytes": docs["text"].fill_null("").str.len_bytes().cast(pl.Int64),
            "tokens": pl.Series([len(x) for x in ids], dtype=pl.Int64),
            "roundtrip_ok": pl.Series([d == t for d, t in zip(decoded, texts)], dtype=pl.Boolean),
        }
    )
    table = (
        per_doc.group_by("source", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("docs"),
            pl.col("bytes").sum(),
            pl.col("tokens").sum(),
            (~pl.col("roundtrip_ok")).sum().cast(pl.Int64).alias("roundtrip_failures"),
        )
        .with_columns((pl.col("bytes") / pl.col("tokens")).alias("bytes_per_token"))
        .select("source", "docs", "bytes", "tokens", "bytes_per_token", "roundtrip_failures")
    )
    total_bytes, total_tokens = int(per_doc["bytes"].sum()), int(per_doc["tokens"].sum())
    stats = {
        "docs_evaluated": float(per_doc.height),
        "bytes_per_token": total_bytes / total_tokens if total_tokens else 0.0,
        "roundtrip_failures": float((~per_doc["roundtrip_ok"]).sum()),
        "unk_tokens": float(sum(x.count(processor.unk_id()) for x in ids)),
        "digits_split": float(digits_are_split(processor)),
        "vocab_size": float(processor.vocab_size()),
    }
    return table, stats


def digits_are_split(processor: spm.SentencePieceProcessor) -> bool:
    """ "12345" encodes into five single-digit pieces (plus the dummy-prefix "▁")."""
    pieces = [p.lstrip("▁") for p in processor.encode(DIGITS_PROBE, out_type=str)]
    return [p for p in pieces if p] == list(DIGITS_PROBE)
