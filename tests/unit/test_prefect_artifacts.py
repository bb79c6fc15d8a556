"""Prefect artifacts of a stage (tables, summary, link to its MLflow run) with stable keys, read
back through the Prefect API (the ephemeral one the conftest sets up), and the link from an
MLflow stage run to its Prefect flow run."""

from __future__ import annotations

import json
import logging
from uuid import UUID

import polars as pl
import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.runtime import flow_run

from tasks import prefect_artifacts as pa
from tasks.config import load_config
from tasks.tracking import stage_run, tracking_uri

ROWS = [{"source": "news", "docs": 3, "share": 0.25}, {"source": "plays", "docs": 1, "share": None}]


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


@flow
def stage_flow(cfg, rows: list[dict]) -> tuple[str, str]:
    with stage_run(cfg, "demo-stage", None, flow_run.id, "A stage made up for the test.") as t:
        t.log_metrics({"rows_in": 4.0, "rows_kept": 3.0, "curve/loss": 1.0})
        t.log_table(pl.DataFrame(rows), "sources_table")
    return t.run_id, str(flow_run.id)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPE_RUN_DIR", str(tmp_path / "run"))
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which tracking_uri() prefers
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config("tiny")


def test_keys_are_lowercase_dashes_and_stable():
    assert pa.table_key("reward", "table8_accuracy_by_level") == "reward-table8-accuracy-by-level"
    assert pa.table_key("rlhf", "rlhf_rounds") == "rlhf-rounds"  # the stage is not said twice
    assert pa.table_key("rlhf-v2", "Fig 7 (max@N)") == "rlhf-v2-fig-7-max-n"
    assert pa.artifact_key("evaluate", "mlflow-run") == "evaluate-mlflow-run"


def test_outside_a_flow_run_nothing_is_published(monkeypatch):
    calls = []
    monkeypatch.setattr("prefect.artifacts.create_table_artifact", lambda *a, **k: calls.append(a))
    assert pa.publish_table("corpus", "demographics", pl.DataFrame(ROWS)) is None
    assert not pa.publish_markdown("corpus-summary", "# corpus")
    assert calls == []


def test_a_stage_publishes_its_table_summary_and_mlflow_link_under_stable_keys(cfg):
    first_run, first_flow = stage_flow(cfg, ROWS)
    second_run, second_flow = stage_flow(cfg, ROWS[:1])

    tables = _artifacts("demo-stage-sources-table")
    by_flow = {str(a.flow_run_id): a for a in tables}
    assert set(by_flow) == {first_flow, second_flow}  # one key, one version per flow run
    assert all(a.type == "table" for a in tables)
    first = by_flow[first_flow].data
    first = json.loads(first) if isinstance(first, str) else first
    assert first == ROWS  # every row, None kept as null
    second = by_flow[second_flow].data
    assert (json.loads(second) if isinstance(second, str) else second) == ROWS[:1]

    summaries = {str(a.flow_run_id): a.data for a in _artifacts("demo-stage-summary")}
    assert set(summaries) == {first_flow, second_flow}
    summary = summaries[first_flow]
    assert summary.startswith("# demo-stage") and "A stage made up for the test." in summary
    assert "| rows_kept | 3 |" in summary and "curve/loss" not in summary  # no step curves
    assert "FINISHED" in summary and "`demo-stage-sources-table`" in summary

    client = MlflowClient(tracking_uri(cfg.run_dir))
    artifact_uri = client.get_run(first_run).info.artifact_uri
    links = {str(a.flow_run_id): a.data for a in _artifacts("demo-stage-mlflow-run")}
    assert artifact_uri in links[first_flow]  # a local store: the run's artifact folder

    tags = client.get_run(first_run).data.tags
    assert tags["prefect.flow_run_id"] == first_flow
    assert "prefect.flow_run_url" not in tags  # the ephemeral API has no UI to link to
    assert UUID(tags["prefect.flow_run_id"])


def test_publishing_errors_never_fail_the_stage(cfg, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("artifact API down")

    monkeypatch.setattr("prefect.artifacts.create_table_artifact", broken)
    monkeypatch.setattr("prefect.artifacts.create_markdown_artifact", broken)
    with caplog.at_level(logging.WARNING, logger="tasks.prefect_artifacts"):
        run_id, _ = stage_flow(cfg, ROWS)
    client = MlflowClient(tracking_uri(cfg.run_dir))
    assert client.get_run(run_id).info.status == "FINISHED"
    assert "tables/sources_table.csv" in {a.path for a in client.list_artifacts(run_id, "tables")}
    assert "artifact API down" in caplog.text


def test_flow_run_url_comes_from_the_prefect_server_settings():
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    assert pa.flow_run_tags("abc") == {"prefect.flow_run_id": "abc"}  # ephemeral: id only
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert pa.flow_run_tags("abc") == {
            "prefect.flow_run_id": "abc",
            "prefect.flow_run_url": "http://127.0.0.1:4200/runs/flow-run/abc",
        }
    with temporary_settings(
        {PREFECT_API_URL: "http://10.0.0.1:4200/api", PREFECT_UI_URL: "https://prefect.example"}
    ):
        assert pa.flow_run_url("abc") == "https://prefect.example/runs/flow-run/abc"
    assert pa.flow_run_tags(None) == {"prefect.flow_run_id": ""}


def test_mlflow_link_is_the_ui_page_on_a_server_else_the_artifact_folder():
    link, note = pa.mlflow_run_link("http://127.0.0.1:5000", "3", "r1", "mlflow-artifacts:/x")
    assert link == "http://127.0.0.1:5000/#/experiments/3/runs/r1"
    link, note = pa.mlflow_run_link("sqlite:////tmp/m.db", "3", "r1", "file:///tmp/a/r1/artifacts")
    assert link == "file:///tmp/a/r1/artifacts" and "no MLflow server" in note


def test_headline_metrics_follow_the_stage_list_else_a_few_plain_metrics():
    metrics = {"rows_kept": 3.0, "rows_in": 4.0, "other": 1.0}
    assert list(pa.headline_metrics("corpus", metrics)) == ["rows_in", "rows_kept"]
    evaluate = {"sft.violation_annotator_pct": 2.0, "sft.answers": 9.0}
    assert pa.headline_metrics("evaluate", evaluate) == {"sft.violation_annotator_pct": 2.0}
    rounds = {"rs.prompts": 12.0, "ppo/kl": 0.1}
    assert pa.headline_metrics("rlhf-v3", rounds) == {"rs.prompts": 12.0}
    many = {f"m{i:02d}": float(i) for i in range(20)} | {"a/curve": 0.0}
    assert list(pa.headline_metrics("unknown", many)) == [f"m{i:02d}" for i in range(12)]
