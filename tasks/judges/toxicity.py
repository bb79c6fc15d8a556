"""Toxicity measurement of the pretraining corpus (Llama 2 §4.1): pure code, no Prefect or MLflow.

The paper *measures* toxicity, it does not filter on it: a classifier scores each line of a
document, the document's score is the mean of its line scores, on a 10 % random sample of
documents; the headline number is the share of documents scoring >= 0.5 (about 0.2 % for Llama 2).

Two `ToxicityScorer` backends (neither is the paper's HateBERT fine-tuned on ToxiGen; both miss
implicit hate without profanity, e.g. "immigrants are vermin"):
- `ProfanityCheckScorer`, the embedded default: alt-profanity-check, a calibrated linear SVM over
  TF-IDF trained on Jigsaw toxic comments and Davidson et al. tweets, weights inside the package.
- `DetoxifyScorer`: the real `detoxify.Detoxify` class on a local checkpoint, offline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl
import xxhash
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.judges.detoxify_backend import (  # noqa: F401  (re-exported)
    DETOXIFY_CLASSES,
    DetoxifyScorer,
    DetoxifyVariant,
    resolve_detoxify_checkpoint,
    write_tiny_detoxify_checkpoint,
)
from tasks.progress import progress
from tasks.records import DOC_ID, SOURCE, TEXT

TOP_EXAMPLE_CHARS = 500


@runtime_checkable
class ToxicityScorer(Protocol):
    name: str

    def score_lines(self, lines: list[str]) -> np.ndarray:
        """float32 array, one probability of "toxic" in [0, 1] per line."""
        ...


class ProfanityCheckScorer:
    """alt-profanity-check's `predict_prob`, minus its per-row `np.apply_along_axis` loop.

    Same vectorizer and calibrated model objects, same column (class 1): identical numbers.
    """

    name = "profanity_check"

    def __init__(self) -> None:
        from profanity_check import (
            profanity_check as pc,  # loads the joblib weights once
        )

        self._vectorizer, self._model = pc.vectorizer, pc.model

    def score_lines(self, lines: list[str]) -> np.ndarray:
        if not lines:
            return np.zeros(0, dtype=np.float32)
        proba = self._model.predict_proba(self._vectorizer.transform(lines))
        return proba[:, 1].astype(np.float32)


class ToxicityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["profanity_check", "detoxify"] = "profanity_check"
    detoxify_checkpoint: Path | None = None  # a checkpoint file, or Detoxify's torch hub cache
    detoxify_config_dir: Path | None = None  # base model's config.json + tokenizer files
    detoxify_variant: DetoxifyVariant = "original"  # which file to take from a cache folder
    detoxify_label: str = "toxicity"
    detoxify_device: str = "cpu"
    detoxify_batch_size: int = Field(64, gt=0)  # lines per forward pass
    sample_frac: float = Field(0.10, gt=0.0, le=1.0)  # §4.1: a 10 % random sample of documents
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # §4.1: share of documents scoring >= 0.5
    batch_size: int = Field(8192, gt=0)  # lines per score_lines call, across documents
    top_k: int = Field(20, ge=0)  # highest-scoring documents to report
    seed: int = 0
    min_line_chars: int = Field(1, ge=1)  # shorter (stripped) lines are not scored

    @model_validator(mode="after")
    def _detoxify_needs_checkpoint(self) -> "ToxicityConfig":
        if self.backend == "detoxify" and self.detoxify_checkpoint is None:
            raise ValueError(
                "backend 'detoxify' needs detoxify_checkpoint: a Detoxify checkpoint file or its "
                "torch hub cache folder (nothing is downloaded at run time)"
            )
        return self


def make_scorer(cfg: ToxicityConfig) -> ToxicityScorer:
    if cfg.backend == "profanity_check":
        return ProfanityCheckScorer()
    assert cfg.detoxify_checkpoint is not None  # checked by ToxicityConfig
    return DetoxifyScorer(
        cfg.detoxify_checkpoint,
        cfg.detoxify_config_dir,
        device=cfg.detoxify_device,
        label=cfg.detoxify_label,
        variant=cfg.detoxify_variant,
        batch_size=cfg.detoxify_batch_size,
    )


# ---------------------------------------------------------------- line and document scores


def split_lines(texts: Sequence[str], min_line_chars: int = 1) -> tuple[list[str], np.ndarray]:
    """All scorable lines of all documents, flattened, and the number of lines per document.

    A line is stripped; lines shorter than `min_line_chars` (empty, whitespace) are skipped.
    """
    lines: list[str] = []
    n_lines = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        stripped = (line.strip() for line in (text or "").splitlines())
        kept = [s for s in stripped if len(s) >= min_line_chars]
        n_lines[i] = len(kept)
        lines.extend(kept)
    return lines, n_lines


def score_lines_batched(lines: list[str], scorer: ToxicityScorer, batch_size: int) -> np.ndarray:
    out = np.empty(len(lines), dtype=np.float32)
    starts = range(0, len(lines), batch_size)
    for start in progress(starts, f"toxicity ({scorer.name})", total=len(starts)):
        batch = lines[start : start + batch_size]
        scores = np.asarray(scorer.score_lines(batch), dtype=np.float32)
        if scores.shape != (len(batch),):
            raise ValueError(
                f"scorer {scorer.name} returned shape {scores.shape} for {len(batch)} lines"
            )
        out[start : start + len(batch)] = scores
    return out


def mean_per_document(line_scores: np.ndarray, n_lines: np.ndarray) -> np.ndarray:
    """Mean of each document's consecutive run of line scores; 0.0 for a document without lines."""
    doc_scores = np.zeros(len(n_lines), dtype=np.float64)
    has_lines = n_lines > 0
    if has_lines.any():
        starts = (np.cumsum(n_lines) - n_lines)[has_lines]
        # reduceat over non-empty runs only: a zero-length run would return a neighbour's score.
        sums = np.add.reduceat(line_scores.astype(np.float64), starts)
        doc_scores[has_lines] = sums / n_lines[has_lines]
    return doc_scores


def score_documents(
    texts: Sequence[str], scorer: ToxicityScorer, batch_size: int = 8192, min_line_chars: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(document scores float64, scorable lines per document): lines scored in big batches."""
    lines, n_lines = split_lines(texts, min_line_chars)
    return mean_per_document(score_lines_batched(lines, scorer, batch_size), n_lines), n_lines


def document_scores(
    texts: Sequence[str], scorer: ToxicityScorer, batch_size: int = 8192, min_line_chars: int = 1
) -> np.ndarray:
    """Paper §4.1: a document's score is the mean of its line scores (0.0 without any)."""
    return score_documents(texts, scorer, batch_size, min_line_chars)[0]


# ---------------------------------------------------------------- corpus measurement


def sample_documents(df: pl.DataFrame, frac: float, seed: int) -> pl.DataFrame:
    """round(frac * n) documents (at least 1), in input order: those with the smallest
    xxh64(seed:doc_id). A document's draw depends only on its id, not on row order or on the
    other documents, so a grown corpus keeps most of the previous sample."""
    if df.is_empty():
        return df
    n = max(1, round(frac * df.height))
    ids = df[DOC_ID].cast(pl.String).to_list()
    keys = [xxhash.xxh64_intdigest(f"{seed}:{doc_id}".encode()) for doc_id in ids]
    picked = (
        df.with_row_index("_row")
        .with_columns(pl.Series("_key", keys, dtype=pl.UInt64))
        .bottom_k(n, by=["_key", "_row"])
        .sort("_row")
    )
    return picked.drop("_row", "_key")


def measure_toxicity(
    df: pl.DataFrame, cfg: ToxicityConfig, scorer: ToxicityScorer
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Score a seeded `cfg.sample_frac` sample of `df` (doc_id, source, text).

    Returns the scores frame (doc_id, source, n_lines, score, toxic) and flat stats.
    """
    missing = [c for c in (DOC_ID, SOURCE, TEXT) if c not in df.columns]
    if missing:
        raise ValueError(
            f"measure_toxicity: documents frame lacks columns {missing} (has {df.columns})"
        )
    sample = sample_documents(df, cfg.sample_frac, cfg.seed)
    doc_scores, n_lines = score_documents(
        sample[TEXT].fill_null("").to_list(), scorer, cfg.batch_size, cfg.min_line_chars
    )
    scores = sample.select(DOC_ID, SOURCE).with_columns(
        pl.Series("n_lines", n_lines, dtype=pl.Int64),
        pl.Series("score", doc_scores, dtype=pl.Float64),
    )
    scores = scores.with_columns((pl.col("score") >= cfg.threshold).alias("toxic"))
    return scores, _toxicity_stats(scores, df.height, cfg.threshold)


def _toxicity_stats(scores: pl.DataFrame, docs_total: int, threshold: float) -> dict[str, float]:
    values = scores["score"].to_numpy()
    n = len(values)
    stats: dict[str, float] = {
        "docs_total": float(docs_total),
        "sampled_docs": float(n),
        "docs_toxic": float(scores["toxic"].sum()),
        "docs_without_lines": float((scores["n_lines"] == 0).sum()),
        "lines_scored": float(scores["n_lines"].sum()),
        "share_toxic": float((values >= threshold).mean()) if n else 0.0,
        "score_mean": float(values.mean()) if n else 0.0,
    }
    for q in (50, 90, 99):
        stats[f"score_p{q}"] = float(np.percentile(values, q)) if n else 0.0
    per_source = scores.group_by(SOURCE).agg(pl.len(), pl.col("toxic").mean())
    for source, count, share in per_source.sort(SOURCE).iter_rows():
        key = metric_safe(str(source))
        stats[f"sampled_docs_{key}"] = float(count)
        stats[f"share_toxic_{key}"] = float(share)
    return stats


def metric_safe(name: str) -> str:
    """A source name usable inside an MLflow metric key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def top_examples(scores_df: pl.DataFrame, df: pl.DataFrame, k: int) -> pl.DataFrame:
    """The k highest-scoring documents (doc_id, source, score, text cut to 500 characters)."""
    top = scores_df.sort(["score", DOC_ID], descending=[True, False]).head(k)
    texts = df.select(DOC_ID, pl.col(TEXT).str.slice(0, TOP_EXAMPLE_CHARS))
    texts = texts.unique(DOC_ID, keep="first")
    joined = top.select(DOC_ID, SOURCE, "score").join(texts, on=DOC_ID, how="left")
    return joined.sort(["score", DOC_ID], descending=[True, False])


def histogram_png(
    scores: Sequence[float] | np.ndarray | pl.Series, path: Path, threshold: float
) -> Path:
    """Histogram of document scores, threshold marked, log-scale counts; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(scores, dtype=np.float64)
    share = float((values >= threshold).mean()) if values.size else 0.0
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.hist(values, bins=50, range=(0.0, 1.0), color="#4c72b0")
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g}")
    if values.size:
        ax.set_yscale("log")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("document score (mean of line scores)")
    ax.set_ylabel("documents (log scale)")
    ax.set_title(f"{values.size} sampled documents, {share:.2%} >= {threshold:g}")
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
