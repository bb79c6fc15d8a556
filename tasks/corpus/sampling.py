"""Per-document sampling weights: up-sample the most factual sources (paper §2.1).

Llama 2 "up-sampl[ed] the most factual sources in an effort to increase knowledge and dampen
hallucinations" (Touvron et al. 2023, §2.1) without giving factors. The default doubles factual
documents, the rate at which LLaMA 1 over-sampled its curated sources: Wikipedia and Books were
seen ~2.2-2.5 epochs against ~1.1 for CommonCrawl (Touvron et al. 2023a, Table 1).
No Prefect or MLflow imports.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.corpus.base import SOURCE, TEXT

WEIGHT = "sample_weight"


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factual_weight: float = Field(2.0, gt=0)  # weight of documents with factual=True (others 1.0)
    weights: dict[str, float] = Field(default_factory=dict)  # per-source override of either

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = {s: w for s, w in weights.items() if not w > 0}
        if bad:
            raise ValueError(f"sampling weights must be > 0 (drop a source with a filter): {bad}")
        return weights


def apply_sampling_weights(
    df: pl.DataFrame, cfg: SamplingConfig
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Add `sample_weight` (float): the source's override if any, else factual_weight or 1.0.

    Stats: each source's share of text bytes before (`mix_before_<source>`) and after
    (`mix_after_<source>`) weighting, so the logged mix shows the up-sampling.
    """
    sources = set(df[SOURCE].unique().to_list())
    unknown = sorted(set(cfg.weights) - sources)
    if unknown:
        raise ValueError(
            f"sampling weights name source(s) {unknown} that are not in the corpus; "
            f"sources present: {sorted(sources)}. Fix the names under sampling.weights."
        )
    default = pl.when(pl.col("factual")).then(pl.lit(cfg.factual_weight)).otherwise(pl.lit(1.0))
    weight = default
    if cfg.weights:
        override = pl.col(SOURCE).replace_strict(cfg.weights, default=None, return_dtype=pl.Float64)
        weight = override.fill_null(default)
    out = df.with_columns(weight.cast(pl.Float64).alias(WEIGHT))

    mix = (
        out.group_by(SOURCE)
        .agg(
            pl.col(TEXT).str.len_bytes().sum().cast(pl.Float64).alias("before"),
            (pl.col(TEXT).str.len_bytes() * pl.col(WEIGHT)).sum().alias("after"),
        )
        .with_columns(pl.col("before", "after") / pl.col("before", "after").sum())
        .sort(SOURCE)
    )
    stats: dict[str, float] = {}
    for source, before, after in mix.iter_rows():
        stats[f"mix_before_{source}"] = before if before == before else 0.0  # NaN when no bytes
        stats[f"mix_after_{source}"] = after if after == after else 0.0
    return out, stats
