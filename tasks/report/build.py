"""The run report: one self-contained HTML page of a whole pipeline run, read back from MLflow.

For each stage run under the pipeline's parent run (in pipeline order), the report shows the
stage's description, its headline metrics, every table it logged (`tables/*.csv`: corpus
exclusion reasons, multi-turn recall, Table 8, the per-round RLHF table, the evaluation
table, ...) and its plots (toxicity histogram, pretraining loss curve, Fig. 7 per RLHF round,
distillation gains, the evaluation plot). Everything comes from the tracking store, so the
report can be rebuilt for any finished run: `python -m tasks.report.build RUN_ID`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl

from tasks.headlines import HEADLINES
from tasks.report.html import Report

STAGE_ORDER = ("corpus", "tokenizer", "pretrain", "sft", "reward", "rlhf", "distill", "evaluate")
MAX_IMAGES = 8
MAX_ROWS = 30  # longer tables (demographics) are cut, with a pointer to the full CSV


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    """Every artifact file path of a run, depth-first."""
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def _download(client, run_id: str, path: str, into: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(into)))


def _stage_block(report: Report, client, run, into: Path, rounds: list) -> None:
    stage = run.info.run_name
    report.section(stage, run.data.tags.get("mlflow.note.content"))
    metrics = run.data.metrics
    headline = {k: metrics[k] for k in HEADLINES.get(stage, ()) if k in metrics}
    if headline:
        report.key_values(headline, caption="headline metrics")
    files = _artifacts(client, run.info.run_id)
    for path in sorted(p for p in files if p.startswith("tables/") and p.endswith(".csv")):
        table = pl.read_csv(_download(client, run.info.run_id, path, into))
        caption = Path(path).stem.replace("_", " ")
        if table.height > MAX_ROWS:
            caption += f" (first {MAX_ROWS} of {table.height} rows; all in MLflow: {path})"
        report.table(table.head(MAX_ROWS), caption=caption)
    images = [p for p in files if p.endswith(".png")][:MAX_IMAGES]
    for path in images:
        report.image(_download(client, run.info.run_id, path, into).read_bytes(), caption=path)
    for child in rounds:  # RLHF rounds: their numbers and Fig. 7
        m = child.data.metrics
        report.paragraph(f"{child.info.run_name}: {child.data.tags.get('mlflow.note.content', '')}")
        report.key_values(
            {
                k: m[k]
                for k in sorted(m)
                if k.startswith(
                    (
                        "rs.",
                        "ppo.stopped",
                        "ppo.iterations_run",
                        "ppo.eval_reward",
                        "registered_version",
                    )
                )
            },
            caption=f"{child.info.run_name}: rejection sampling and PPO",
        )
        for path in [p for p in _artifacts(client, child.info.run_id) if p.endswith(".png")][:2]:
            report.image(
                _download(client, child.info.run_id, path, into).read_bytes(),
                caption=f"{child.info.run_name}: {path}",
            )


def build_report(client, parent_run_id: str, out: Path) -> Path:
    """Write the HTML report of the pipeline run `parent_run_id` to `out` (atomically)."""
    parent = client.get_run(parent_run_id)
    experiment = parent.info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    # a retried pipeline holds a stage's runs of every attempt: show the latest finished one
    ranked = sorted(children, key=lambda r: (r.info.status == "FINISHED", r.info.start_time))
    by_stage = {r.info.run_name: r for r in ranked}
    commit = parent.data.tags.get("mlflow.source.git.commit", "")
    report = Report(
        f"Llama 2 recipe: {parent.info.run_name}",
        f"preset {parent.data.tags.get('preset', '?')}, commit {commit[:12] or 'unknown'}, "
        f"MLflow run {parent_run_id}",
    )
    report.paragraph(
        "Numbers measured by this run; the rule annotator is a stand-in for human "
        "annotators. Every number below is also in the MLflow run of its stage."
    )
    with tempfile.TemporaryDirectory() as tmp:
        for stage in [s for s in STAGE_ORDER if s in by_stage]:
            run = by_stage[stage]
            rounds = []
            if stage == "rlhf":
                rounds = sorted(
                    client.search_runs(
                        [experiment], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
                    ),
                    key=lambda r: r.info.run_name,
                )
            _stage_block(report, client, run, Path(tmp), rounds)
    return report.write(out)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from mlflow import MlflowClient

    from tasks.runtime import default_run_dir
    from tasks.tracking import tracking_uri

    parser = argparse.ArgumentParser(description="Rebuild the HTML report of a pipeline run.")
    parser.add_argument("run_id", help="the pipeline's (parent) MLflow run id")
    parser.add_argument("--out", type=Path, help="default: <run dir>/reports/report-<run id>.html")
    args = parser.parse_args(argv)
    run_dir = default_run_dir()
    out = args.out or run_dir / "reports" / f"report-{args.run_id[:8]}.html"
    print(build_report(MlflowClient(tracking_uri(run_dir)), args.run_id, out))


if __name__ == "__main__":
    main()
