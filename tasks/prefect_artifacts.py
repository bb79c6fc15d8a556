"""What the Prefect UI shows of a stage: table, Markdown and link artifacts with stable keys,
and the link from an MLflow run back to its Prefect flow run.

Keys are `<stage>-<name>` (Prefect allows [a-z0-9-] only), the same in every run, so the
Artifacts page keeps each key's history across runs:
- `<stage>-<table>`: every table a stage logs with `tracker.log_table` (tasks/tracking.py),
  e.g. `evaluate-evaluation`, `reward-table8-accuracy-by-level`;
- `<stage>-summary`: the stage's description and headline metrics (Markdown);
- `<stage>-mlflow-run`: a link to the stage's MLflow run (the MLflow UI's page when the
  tracking URI is an http(s) server, else the run's artifact folder with a note).

Artifacts need a flow-run (or task-run) context: outside one, every publish function does
nothing. Publishing never fails a stage: an error is logged as a warning and swallowed.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from typing import Any, Callable

import polars as pl

from tasks.headlines import HEADLINES
from tasks.mlflow_runs import FLOW_RUN_TAG

FLOW_RUN_URL_TAG = "prefect.flow_run_url"  # on an MLflow run: its Prefect flow run's UI page
logger = logging.getLogger(__name__)

MAX_TABLE_ROWS = 500  # a longer table is cut (the full CSV is in the MLflow run)
FALLBACK_METRICS = 12  # stages without a headline list show this many of their metrics
# headline metrics per stage (fnmatch patterns, in display order); missing ones are skipped: the
# run report's list, plus each RLHF round's run and the evaluation's per-version rates
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    **HEADLINES,
    "rlhf-v*": (
        "rs.prompts",
        "rs.fig7.max_at_1",
        "ppo.iterations_run",
        "dpo.reward_margin",
        "registered_version",
    ),
    "evaluate": (
        "*.violation_annotator_pct",
        "*.false_refusal_helpfulness_pct",
        "*.win_vs_sft_annotator_pct",
    ),
}


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from name parts: lowercase, runs of other characters -> '-'."""
    key = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)
    return re.sub(r"-+", "-", key).strip("-")


def in_run_context() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _publish(what: str, create: Callable[[], Any]) -> bool:
    """Run `create` inside a Prefect run context; True if it published. Never raises."""
    if not in_run_context():
        return False
    try:
        create()
    except Exception as exc:  # the UI's view of a stage must never fail the stage
        logger.warning("could not publish the Prefect artifact %s: %s", what, exc)
        return False
    return True


def _cell(value):
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    return value


def table_key(stage: str, name: str) -> str:
    """`<stage>-<name>`; a name that starts with the stage does not say it twice
    (`rlhf` + `rlhf_rounds` -> `rlhf-rounds`)."""
    prefix = stage.replace("-", "_") + "_"
    if name.startswith(prefix) and len(name) > len(prefix):
        name = name[len(prefix) :]
    return artifact_key(stage, name)


def publish_table(stage: str, name: str, df: pl.DataFrame, description: str = "") -> str | None:
    """A table artifact `<stage>-<name>` (floats to 6 significant digits); returns its key,
    None where nothing was published."""
    from prefect.artifacts import create_table_artifact

    key = table_key(stage, name)
    rows = [{k: _cell(v) for k, v in r.items()} for r in df.head(MAX_TABLE_ROWS).to_dicts()]
    note = description or f"{stage}: {name}"
    if df.height > MAX_TABLE_ROWS:
        note += f" (first {MAX_TABLE_ROWS} of {df.height} rows; the full CSV is in MLflow)"
    published = _publish(key, lambda: create_table_artifact(rows, key=key, description=note))
    return key if published else None


def publish_markdown(key: str, markdown: str, description: str = "") -> bool:
    from prefect.artifacts import create_markdown_artifact

    return _publish(
        key, lambda: create_markdown_artifact(markdown, key=key, description=description)
    )


def headline_metrics(stage: str, metrics: dict[str, float]) -> dict[str, float]:
    """The stage's headline metrics in display order; without a list for the stage, the first
    FALLBACK_METRICS metrics (by name) that are not per-step training curves."""
    patterns = next((v for k, v in HEADLINE_METRICS.items() if fnmatch.fnmatchcase(stage, k)), None)
    if patterns is None:
        names = sorted(k for k in metrics if "/" not in k)[:FALLBACK_METRICS]
        return {k: metrics[k] for k in names}
    out: dict[str, float] = {}
    for pattern in patterns:
        for name in sorted(fnmatch.filter(metrics, pattern)):
            out.setdefault(name, metrics[name])
    return out


def summary_markdown(
    stage: str,
    description: str,
    metrics: dict[str, float],
    status: str,
    mlflow_link: str,
    tables: list[str] = (),
) -> str:
    lines = [
        f"# {stage}",
        "",
        description,
        "",
        f"**Status:** {status} · **MLflow run:** {mlflow_link}",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in metrics.items()]
        lines.append("")
    if tables:
        lines.append("Tables (artifacts): " + ", ".join(f"`{t}`" for t in tables))
    return "\n".join(lines)


def mlflow_run_link(
    tracking_uri: str, experiment_id: str, run_id: str, artifact_uri: str
) -> tuple[str, str]:
    """(link, note) to an MLflow run: the MLflow UI's run page on an http(s) tracking server,
    else the run's artifact folder (a local store has no page to link to)."""
    if tracking_uri.startswith(("http://", "https://")):
        link = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return link, "MLflow UI page of the run"
    return artifact_uri, (
        f"MLflow run {run_id} in the local store {tracking_uri} (no MLflow server): the link "
        "is the run's artifact folder; `make ui` serves the store at http://127.0.0.1:5000"
    )


def publish_mlflow_link(stage: str, link: str, note: str) -> bool:
    from prefect.artifacts import create_link_artifact

    key = artifact_key(stage, "mlflow-run")
    return _publish(
        key,
        lambda: create_link_artifact(
            link, link_text=f"MLflow run of {stage}", key=key, description=note
        ),
    )


def prefect_ui_url() -> str | None:
    """The Prefect UI's base URL from Prefect's settings (ui_url, else the API URL without
    /api); None without a server (the ephemeral API dies with the process)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.ui_url:
        return str(settings.ui_url).rstrip("/")
    api = settings.api.url
    return str(api).rstrip("/").removesuffix("/api") if api else None


def flow_run_url(flow_run_id: str | None) -> str | None:
    ui = prefect_ui_url()
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def flow_run_tags(flow_run_id: str | None) -> dict[str, str]:
    """Tags linking an MLflow run to its Prefect flow run: the id always, the UI URL when
    there is a Prefect server."""
    tags = {FLOW_RUN_TAG: str(flow_run_id or "")}
    url = flow_run_url(str(flow_run_id)) if flow_run_id else None
    if url:
        tags[FLOW_RUN_URL_TAG] = url
    return tags


def publish_stage(tracker, stage: str, description: str, status: str) -> None:
    """The stage's `<stage>-summary` and `<stage>-mlflow-run` artifacts, from its MLflow run
    (`tracker`: an MlflowLogger, read through its client). Never raises."""
    if not in_run_context():
        return
    try:
        run = tracker.client.get_run(tracker.run_id)
        link, note = mlflow_run_link(
            tracker.client.tracking_uri,
            run.info.experiment_id,
            run.info.run_id,
            run.info.artifact_uri,
        )
        metrics = headline_metrics(stage, run.data.metrics)
        tables = getattr(tracker, "published_tables", [])
        markdown = summary_markdown(
            stage, description, metrics, status, f"[{run.info.run_id}]({link})", tables
        )
    except Exception as exc:
        logger.warning("could not read the MLflow run of %s for its artifacts: %s", stage, exc)
        return
    publish_markdown(artifact_key(stage, "summary"), markdown, f"{stage}: summary")
    publish_mlflow_link(stage, link, note)
