"""Corpus stage (RECIPE.md §1): ingest -> PII -> quality -> exact/near dedup -> weights,
then toxicity and demographic representation *measured* on the kept corpus (not filtered)."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows._runner import StageRunner, build_task_runner
from flows.dag import expand_reruns
from flows.results import CorpusResult
from tasks.config import flatten, load_config
from tasks.corpus import steps
from tasks.corpus.pii import PiiConfig
from tasks.corpus.quality import QualityConfig
from tasks.data.catalog import load_catalog
from tasks.io import Manifest, read_dataset
from tasks.tracking import log_step, stage_run

DESCRIPTION = (
    "Pretraining corpus: every source ingested (unreadable rows quarantined), PII handled and "
    "Gopher-style quality rules (mapped over shards), exact and MinHash near-dedup, factual "
    "sources up-weighted. "
    "Toxicity is measured on a 10% sample (mean of line scores), not used to filter."
)


@flow(name="corpus")
def corpus_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
) -> CorpusResult:
    """Build the kept corpus; the result holds every dataset the stage wrote."""
    cfg = load_config(preset, overrides or [])
    run = StageRunner("corpus", expand_reruns(rerun or []))
    data_dir, c = str(cfg.data_dir), cfg.corpus
    specs = load_catalog(cfg.data.catalog).select(cfg.data.sources) + cfg.data.user_sources
    with stage_run(cfg, "corpus", parent_run_id, flow_run.id, DESCRIPTION) as tracker:
        tracker.log_params(
            {**flatten(c, "corpus."), **flatten(cfg.data, "data."), "seed": cfg.seed}
        )
        raw = run(
            steps.ingest_sources,
            specs,
            str(cfg.data.cache_dir),
            cfg.data.max_docs_per_source,
            cfg.seed,
            data_dir,
        )
        log_step(tracker, raw, {"raw_documents": "source", "quarantine": "quarantine"})
        shards = run(steps.split_shards, raw["raw_documents"], c.parallel.shards, data_dir)
        runner = build_task_runner(
            c.parallel.runner,
            c.parallel.workers,
            c.parallel.dask_address,
            c.parallel.dask_processes,
        )
        filtered = shard_filters_flow.with_options(task_runner=runner)(
            list(shards.outputs.values()), c.pii, c.quality, data_dir, sorted(run.forced)
        )
        run.states.update(filtered["states"])
        merged = run(steps.merge_shards, filtered["kept"], filtered["excluded"], data_dir)
        exact = run(steps.exact_dedup_step, merged["kept"], c.dedup, data_dir)
        near = run(steps.near_dedup_step, exact["kept"], c.dedup, data_dir)
        for out in (*filtered["stats"], exact, near):
            log_step(tracker, out)
        excluded = [merged["excluded"], exact["excluded"], near["excluded"]]
        weighted = run(steps.weights_step, near["kept"], excluded, c.sampling, data_dir)
        log_step(tracker, weighted, {"documents": "training", "documents_excluded": "excluded"})
        toxicity = run(
            steps.toxicity_step, weighted["documents"], c.toxicity, data_dir, str(cfg.run_dir)
        )
        log_step(tracker, toxicity, artifact_path="toxicity")
        demographics = run(steps.demographics_step, weighted["documents"], c.demographics, data_dir)
        log_step(tracker, demographics)
        tracker.log_table(read_dataset(demographics["demographics"]), "demographics")
        tracker.log_table(_excluded_reasons(weighted), "excluded_reasons")
        tracker.log_metrics(_row_accounting(raw, weighted))
        tracker.set_tags({f"task.{k}": v for k, v in run.states.items()})
    outputs = {**raw.outputs, **weighted.outputs, **toxicity.outputs, **demographics.outputs}
    return CorpusResult(
        outputs=outputs,
        states=run.states,
        mlflow_run_id=tracker.run_id,
        flow_run_id=str(flow_run.id),
    )


@flow(name="corpus-shard-filters")
def shard_filters_flow(
    shards: list[Manifest],
    pii_cfg: PiiConfig,
    quality_cfg: QualityConfig,
    data_dir: str,
    forced: list[str],
) -> dict:
    """PII then quality on every shard, mapped on this flow's task runner (threads or Dask)."""
    run = StageRunner("corpus", set(forced))
    pii = run.map(steps.pii_step, shards, pii_cfg, data_dir)
    quality = run.map(steps.quality_step, [out["kept"] for out in pii], quality_cfg, data_dir)
    return {
        "kept": [out["kept"] for out in quality],
        "excluded": [out["excluded"] for out in pii + quality],
        "stats": [steps.sum_stats(pii), steps.sum_stats(quality)],
        "states": run.states,
    }


def _row_accounting(raw, weighted) -> dict[str, float]:
    """in = kept + excluded + quarantined, or the stage fails: rows are never lost silently."""
    rows_in = raw.stats["ingest.rows_in"]
    kept = weighted["documents"].rows
    excluded = weighted["documents_excluded"].rows
    quarantined = raw["quarantine"].rows
    if rows_in != kept + excluded + quarantined:
        raise RuntimeError(
            f"row accounting broken: {rows_in} in != {kept} kept + {excluded} excluded + "
            f"{quarantined} quarantined"
        )
    return {
        "rows_in": rows_in,
        "rows_kept": kept,
        "rows_excluded": excluded,
        "rows_quarantined": quarantined,
    }


def _excluded_reasons(weighted):
    import polars as pl

    df = read_dataset(weighted["documents_excluded"])
    return (
        df.group_by("stage", "reason", "source")
        .len("documents")
        .sort("documents", descending=True)
        .with_columns(pl.col("documents").cast(pl.Int64))
    )
