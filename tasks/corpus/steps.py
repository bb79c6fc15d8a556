"""Prefect tasks of the corpus stage: read + validate, call the pure filters, validate + write.

Each task takes manifests and configs (content-addressed, hashable) and returns a
`StepOutput`; it logs nothing to MLflow itself (the flow does, also when the task is cached).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import polars as pl
from prefect.logging import get_run_logger

from data_contracts import get_contract
from tasks.caching import cached_task
from tasks.corpus import dedup, demographics, pii, quality, sampling
from tasks.corpus.base import FilterResult
from tasks.data.catalog import SourceSpec
from tasks.data.ingest import ingest
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.judges import toxicity
from tasks.results import StepOutput, write_artifact

STAGE = "corpus"


@cached_task("ingest", retries=1)
def ingest_sources(
    specs: list[SourceSpec],
    cache_dir: str,
    max_docs_per_source: int | None,
    seed: int,
    data_dir: str,
) -> StepOutput:
    """Read every source into raw_documents; unreadable or contract-breaking rows -> quarantine."""
    log = get_run_logger()
    raw, quarantined, stats = ingest(specs, Path(cache_dir), max_docs_per_source, seed)
    valid, invalid = _contract_split(raw)
    quarantined = pl.concat([quarantined, invalid], how="vertical_relaxed")
    stats = {f"ingest.{k}": float(v) for k, v in stats.items()}
    stats["ingest.rows_quarantined_contract"] = float(invalid.height)
    stats["ingest.rows_kept"] = float(valid.height)
    stats["ingest.rows_quarantined"] = float(quarantined.height)
    log.info(
        "ingested %d documents from %d sources; %d rows quarantined",
        valid.height,
        len(specs),
        quarantined.height,
    )
    return StepOutput(
        outputs={
            "raw_documents": write_dataset(valid, "raw_documents", Path(data_dir)),
            "quarantine": write_dataset(quarantined, "quarantine", Path(data_dir)),
        },
        stats=stats,
    )


def _contract_split(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    valid, invalid = get_contract("raw_documents").split_valid(raw, where="at ingestion")
    as_quarantine = invalid.select(
        "source",
        "location",
        pl.lit("ingest").alias("stage"),
        ("contract: " + pl.col("contract_error")).alias("error"),
        pl.col("text").fill_null("").str.slice(0, 2000).alias("payload"),
    )
    return valid, as_quarantine


@cached_task("split_shards")
def split_shards(documents: Manifest, shards: int, data_dir: str) -> StepOutput:
    """Cut the corpus into `shards` contiguous row ranges (so merging restores the order)."""
    df = read_dataset(documents)
    if shards == 1:
        return StepOutput(outputs={"shard_0": documents})
    size = -(-df.height // shards)  # ceil
    return StepOutput(
        outputs={
            f"shard_{i}": write_dataset(df.slice(i * size, size), "raw_documents", Path(data_dir))
            for i in range(shards)
        }
    )


@cached_task("merge_shards")
def merge_shards(kept: list[Manifest], excluded: list[Manifest], data_dir: str) -> StepOutput:
    """Concatenate the shards' kept documents (in shard order) and all their exclusions."""
    if len(kept) == 1 and len(excluded) == 1:
        return StepOutput(outputs={"kept": kept[0], "excluded": excluded[0]})
    return StepOutput(
        outputs={
            "kept": write_dataset(
                pl.concat([read_dataset(m) for m in kept]), "raw_documents", Path(data_dir)
            ),
            "excluded": write_dataset(
                pl.concat([read_dataset(m) for m in excluded]), "documents_excluded", Path(data_dir)
            ),
        }
    )


def sum_stats(outputs: list[StepOutput]) -> StepOutput:
    """Per-shard counts added up (every per-shard stat of PII and quality is a count)."""
    total: dict[str, float] = {}
    for out in outputs:
        for key, value in out.stats.items():
            total[key] = total.get(key, 0.0) + value
    return StepOutput(stats=total)


def _run_filter(
    manifest: Manifest, fn: Callable[..., FilterResult], cfg, name: str, data_dir: str
) -> StepOutput:
    df = read_dataset(manifest)
    result = fn(df, cfg).check(df.height, name)
    get_run_logger().info(
        "%s: %d in, %d kept, %d excluded",
        name,
        df.height,
        result.kept.height,
        result.excluded.height,
    )
    excluded = result.excluded.with_columns(pl.lit(name).alias("stage"))
    return StepOutput(
        outputs={
            "kept": write_dataset(result.kept, "raw_documents", Path(data_dir)),
            "excluded": write_dataset(excluded, "documents_excluded", Path(data_dir)),
        },
        stats={f"{name}.{k}": v for k, v in result.stats.items()},
    )


@cached_task("pii")
def pii_step(documents: Manifest, cfg: pii.PiiConfig, data_dir: str) -> StepOutput:
    """Drop block-listed sources/domains and PII-dense documents; redact the rest."""
    return _run_filter(documents, pii.pii_filter, cfg, "pii", data_dir)


@cached_task("quality")
def quality_step(documents: Manifest, cfg: quality.QualityConfig, data_dir: str) -> StepOutput:
    """Gopher-style quality rules, each with its own reason code."""
    return _run_filter(documents, quality.quality_filter, cfg, "quality", data_dir)


@cached_task("exact_dedup")
def exact_dedup_step(documents: Manifest, cfg: dedup.DedupConfig, data_dir: str) -> StepOutput:
    """Drop documents whose normalised text was already seen."""
    if not cfg.exact:
        return _passthrough(documents, "exact_dedup", data_dir)
    return _run_filter(documents, dedup.exact_dedup, cfg, "exact_dedup", data_dir)


@cached_task("near_dedup")
def near_dedup_step(documents: Manifest, cfg: dedup.DedupConfig, data_dir: str) -> StepOutput:
    """MinHash + LSH near-duplicate removal; the earliest document of a cluster is kept."""
    if not cfg.near:
        return _passthrough(documents, "near_dedup", data_dir)
    return _run_filter(documents, dedup.near_dedup, cfg, "near_dedup", data_dir)


def _passthrough(documents: Manifest, name: str, data_dir: str) -> StepOutput:
    df = read_dataset(documents)
    empty = df.clear().with_columns(
        pl.lit("", pl.Utf8).alias("stage"),
        pl.lit("", pl.Utf8).alias("reason"),
        pl.lit("", pl.Utf8).alias("detail"),
    )
    return StepOutput(
        outputs={
            "kept": documents,
            "excluded": write_dataset(empty, "documents_excluded", Path(data_dir)),
        },
        stats={f"{name}.kept": float(df.height), f"{name}.excluded": 0.0, f"{name}.disabled": 1.0},
    )


@cached_task("weights")
def weights_step(
    documents: Manifest, excluded: list[Manifest], cfg: sampling.SamplingConfig, data_dir: str
) -> StepOutput:
    """Attach per-source sampling weights (factual sources up-sampled) and merge the exclusions."""
    df, stats = sampling.apply_sampling_weights(read_dataset(documents), cfg)
    dropped = pl.concat([read_dataset(m) for m in excluded], how="vertical")
    reasons = dropped.group_by("reason").len().sort("reason")
    stats = dict(stats)
    stats.update({f"excluded.{r}": float(n) for r, n in reasons.iter_rows()})
    return StepOutput(
        outputs={
            "documents": write_dataset(df, "documents", Path(data_dir)),
            "documents_excluded": write_dataset(dropped, "documents_excluded", Path(data_dir)),
        },
        stats=stats,
    )


@cached_task("toxicity")
def toxicity_step(
    documents: Manifest, cfg: toxicity.ToxicityConfig, data_dir: str, run_dir: str
) -> StepOutput:
    """Measure (never filter) toxicity on a seeded sample: mean of line scores per document."""
    df = read_dataset(documents)
    scorer = toxicity.make_scorer(cfg)
    scores, stats = toxicity.measure_toxicity(df, cfg, scorer)
    get_run_logger().info(
        "toxicity (%s): %d documents scored, share >= %.2f: %.4f",
        scorer.name,
        scores.height,
        cfg.threshold,
        stats.get("share_toxic", 0.0),
    )
    top = toxicity.top_examples(scores, df, cfg.top_k)
    # A private scratch folder: two runs (or two tasks) at once never share the PNG's path, and
    # write_artifact stores it atomically under its content hash.
    with tempfile.TemporaryDirectory(prefix="recipe-hist-") as scratch:
        png = toxicity.histogram_png(
            scores["score"].to_numpy(), Path(scratch) / "hist.png", cfg.threshold
        )
        hist = write_artifact(png.read_bytes(), Path(run_dir), "corpus", "toxicity_histogram.png")
    top_csv = write_artifact(_csv_bytes(top), Path(run_dir), "corpus", "toxicity_top_examples.csv")
    return StepOutput(
        outputs={"toxicity_scores": write_dataset(scores, "toxicity_scores", Path(data_dir))},
        stats={f"toxicity.{k}": v for k, v in stats.items()},
        files={"toxicity_histogram.png": str(hist), "toxicity_top_examples.csv": str(top_csv)},
    )


@cached_task("demographics")
def demographics_step(
    documents: Manifest, cfg: demographics.DemographicsConfig, data_dir: str
) -> StepOutput:
    """Pronoun and identity-term representation of the kept corpus (paper §4.1)."""
    table, stats = demographics.demographic_representation(read_dataset(documents), cfg)
    return StepOutput(
        outputs={"demographics": write_dataset(table, "demographics", Path(data_dir))},
        stats={f"demographics.{k}": v for k, v in stats.items()},
    )


def _csv_bytes(df: pl.DataFrame) -> bytes:
    return df.write_csv().encode()
