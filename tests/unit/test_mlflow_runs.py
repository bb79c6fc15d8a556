"""MLflow run lifecycle against a real SQLite store: runs of a killed process are ended KILLED
and the next run says which one it continues; a retried flow run continues its run; every
registered model version has its own artifact folder, read back through the registry."""

import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tasks import mlflow_runs
from tasks.hashing import sha256_of
from tasks.tracking import open_run, register_model, tracking_uri

ROOT = Path(__file__).resolve().parents[2]
TAGS = {"stage": "pipeline", mlflow_runs.CONFIG_TAG: "cfg-a"}


def _killed_process_opens_runs(run_dir: Path) -> tuple[str, str]:
    """A separate process opens a parent and a nested run, then dies by SIGKILL (no cleanup)."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from tasks.tracking import open_run
        parent = open_run(Path({str(run_dir)!r}), "unit", "pipeline unit old", {TAGS!r})
        child = open_run(Path({str(run_dir)!r}), "unit", "corpus", {{"stage": "corpus"}},
                         parent_run_id=parent.run_id)
        print(parent.run_id, child.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == -9, out.stderr[-2000:]
    parent_id, child_id = out.stdout.split()
    return parent_id, child_id


def test_runs_of_a_killed_process_are_ended_and_the_next_run_continues_them(tmp_path):
    parent_id, child_id = _killed_process_opens_runs(tmp_path)
    client = MlflowClient(tracking_uri(tmp_path))
    assert client.get_run(parent_id).info.status == "RUNNING"  # what a kill leaves behind
    alive = open_run(tmp_path, "unit", "mine", {"stage": "corpus"})  # this process: alive

    new = open_run(tmp_path, "unit", "pipeline unit new", TAGS, description="the pipeline")
    for run_id in (parent_id, child_id):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.info.end_time
        assert "is gone" in run.data.tags[mlflow_runs.ENDED_TAG]
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    tags = client.get_run(new.run_id).data.tags
    assert tags[mlflow_runs.CONTINUES_TAG] == parent_id
    assert "Continues run 'pipeline unit old'" in tags["mlflow.note.content"]
    assert client.get_run(parent_id).data.tags[mlflow_runs.CONTINUED_BY_TAG] == new.run_id
    again = open_run(tmp_path, "unit", "pipeline unit newer", TAGS)  # continued once only
    assert mlflow_runs.CONTINUES_TAG not in client.get_run(again.run_id).data.tags
    assert tags[mlflow_runs.PID_TAG] and tags[mlflow_runs.HOST_TAG]


def test_a_killed_run_with_another_config_is_ended_but_not_continued(tmp_path):
    parent_id, _ = _killed_process_opens_runs(tmp_path)
    new = open_run(tmp_path, "unit", "pipeline", {**TAGS, mlflow_runs.CONFIG_TAG: "cfg-b"})
    client = MlflowClient(tracking_uri(tmp_path))
    assert client.get_run(parent_id).info.status == "KILLED"
    assert mlflow_runs.CONTINUES_TAG not in client.get_run(new.run_id).data.tags


def test_a_retried_flow_run_continues_its_run(tmp_path):
    tags = {**TAGS, "prefect.flow_run_id": "flow-1"}
    first = open_run(tmp_path, "unit", "pipeline unit 1", tags, continue_flow_run=True)
    first.close("FAILED")
    again = open_run(tmp_path, "unit", "pipeline unit 1", tags, continue_flow_run=True)
    assert again.run_id == first.run_id
    run = again.client.get_run(again.run_id)
    assert run.info.status == "RUNNING" and run.data.tags[mlflow_runs.ATTEMPT_TAG] == "2"
    assert "Attempt 2" in run.data.tags["mlflow.note.content"]
    other = open_run(
        tmp_path,
        "unit",
        "pipeline unit 2",
        {**TAGS, "prefect.flow_run_id": "flow-2"},
        continue_flow_run=True,
    )
    assert other.run_id != first.run_id


def _model_folder(path: Path, content: bytes, extra: str | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(content)
    (path / "config.json").write_text("{}")
    if extra:
        (path / extra).write_text("{}")
    return path


@pytest.mark.parametrize("how", ["download_uri", "models_uri"])
def test_every_registered_version_loads_its_own_weights_from_the_registry(tmp_path, how):
    """One stage run registers two reward models, then (a later round) the first one again and
    a policy: before, all four shared `<run>/artifacts/model`, the last write winning."""
    run = open_run(tmp_path, "unit", "reward", {"stage": "reward"})
    trained = [
        ("rm-helpfulness", _model_folder(tmp_path / "h1", b"helpful-1", "reward_head.json")),
        ("rm-safety", _model_folder(tmp_path / "s1", b"safe-1", "reward_head.json")),
        ("rm-helpfulness", _model_folder(tmp_path / "h2", b"helpful-2", "reward_head.json")),
        ("policy", _model_folder(tmp_path / "p1", b"policy-1")),
    ]
    versions = [
        (name, register_model(run, folder, name, "test"), folder) for name, folder in trained
    ]
    client = MlflowClient(tracking_uri(tmp_path))
    sources = {client.get_model_version(n, v).source for n, v, _ in versions}
    assert len(sources) == len(versions)  # no two versions share a folder
    for name, version, folder in versions:
        uri = (
            client.get_model_version_download_uri(name, version)
            if how == "download_uri"
            else f"models:/{name}/{version}"
        )
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=str(tmp_path / "dl" / how / f"{name}-{version}"),
                tracking_uri=tracking_uri(tmp_path),
            )
        )
        assert sha256_of(local / "model.safetensors") == sha256_of(folder / "model.safetensors"), (
            name,
            version,
        )
        assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in folder.iterdir())
        mv = client.get_model_version(name, version)
        assert mv.tags["weights_sha256"] == sha256_of(folder / "model.safetensors")
