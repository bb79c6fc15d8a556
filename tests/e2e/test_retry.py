"""A task fails (fault injected); the run ends with one message naming its flow-run id and the
retry command, and `python -m flows retry <id>` resumes from the failed task: the tasks that
completed come from cache, the MLflow parent run is the same, and the report covers every stage.
A run killed with SIGKILL leaves no MLflow run RUNNING once the next run starts."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows._runner import FAULT_ENV
from tasks import mlflow_runs
from tasks.config import load_config
from tasks.tracking import experiment_name, tracking_uri

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SLICE = "data.max_docs_per_source=55"  # its own slice: no cache shared with other tests
ONE_ROUND = "rlhf.rounds=1"  # the retry is about the corpus: one RLHF round keeps it short
NO_DISTILL, NO_EVAL = "distill.enabled=false", "evaluate.enabled=false"  # likewise
STAGES = ("corpus", "tokenizer", "pretrain", "sft", "reward", "rlhf")


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "flows", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _latest_flow_run(client, flow_name: str):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    (run,) = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
        sort=FlowRunSort.START_TIME_DESC,
        limit=1,
    )
    return run


def _states(client, flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def _mlflow():
    client = MlflowClient(tracking_uri(load_config("tiny").run_dir))
    return client, client.get_experiment_by_name(experiment_name("tiny")).experiment_id


def test_failed_run_prints_its_retry_command_and_the_retry_resumes_in_the_same_mlflow_run():
    from prefect.client.orchestration import get_client

    failed = _cli(
        "run",
        "--preset",
        "tiny",
        "--set",
        SLICE,
        "--set",
        ONE_ROUND,
        "--set",
        NO_DISTILL,
        "--set",
        NO_EVAL,
        fault="corpus.exact_dedup",
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output[-3000:]
    match = re.search(
        r"error: flow run ([0-9a-f-]{36}) \(pipeline\) failed: InjectedFault: fault "
        r"injected into corpus.exact_dedup",
        failed.stderr,
    )
    assert match, failed.stderr[-3000:]
    flow_run_id = match.group(1)
    assert f"-m flows retry {flow_run_id}\n" in failed.stderr
    assert "Traceback" not in output  # one message, not a traceback per task and flow
    with get_client(sync_client=True) as client:
        failed_corpus = _latest_flow_run(client, "corpus")
        before = _states(client, failed_corpus.id)
    assert before["ingest"] == "Completed" and before["exact_dedup"] == "Failed"
    assert "near_dedup" not in before  # nothing ran after the failure

    retry = _cli("retry", flow_run_id)
    output = retry.stdout + retry.stderr
    assert retry.returncode == 0, output[-3000:]
    assert "workflowType=machine_learning" in retry.stdout  # the UI's training runs view
    assert "Downloading artifacts" not in output  # no progress bar per downloaded artifact

    with get_client(sync_client=True) as client:
        pipeline = client.read_flow_run(flow_run_id)
        corpus = _latest_flow_run(client, "corpus")
        after = _states(client, corpus.id)
        tokenizer = _states(client, _latest_flow_run(client, "tokenizer").id)
    assert pipeline.state.is_completed()  # the same flow run, retried to completion
    assert corpus.id != failed_corpus.id
    assert after["ingest"] == "Cached" and after["split_shards"] == "Cached"
    assert after["exact_dedup"] == "Completed" and after["near_dedup"] == "Completed"
    assert set(tokenizer.values()) == {"Completed"}

    client, experiment = _mlflow()
    (parent,) = client.search_runs([experiment], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags[mlflow_runs.ATTEMPT_TAG] == "2"
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    statuses = {}
    for run in children:
        statuses.setdefault(run.info.run_name, []).append(run.info.status)
    assert sorted(statuses["corpus"]) == ["FAILED", "FINISHED"]  # both attempts, one parent
    assert all(statuses[stage] == ["FINISHED"] for stage in STAGES[1:]), statuses
    summary = json.loads((load_config("tiny").run_dir / "last_run.json").read_text())
    assert summary["mlflow_run_id"] == parent.info.run_id
    html = Path(summary["report"]).read_text()
    for stage in STAGES:  # the retried run's report has the upstream stages too
        assert f">{stage}<" in html, stage


def test_runs_of_a_killed_run_are_ended_and_the_next_run_says_it_continues_it():
    args = [
        sys.executable,
        "-m",
        "flows",
        "run",
        "--preset",
        "tiny",
        "--stage",
        "corpus",
        "--set",
        "data.max_docs_per_source=54",
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    client, experiment = _mlflow()
    mine = f"tags.`{mlflow_runs.PID_TAG}` = '{proc.pid}'"
    deadline = time.monotonic() + 300
    while not client.search_runs([experiment], mine) and time.monotonic() < deadline:
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: the runs stay RUNNING
    proc.wait()
    (killed,) = client.search_runs([experiment], mine)
    assert killed.info.status == "RUNNING"

    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    killed = client.get_run(killed.info.run_id)
    assert killed.info.status == "KILLED" and "is gone" in killed.data.tags[mlflow_runs.ENDED_TAG]
    successor = client.get_run(killed.data.tags[mlflow_runs.CONTINUED_BY_TAG])
    assert successor.info.status == "FINISHED"
    assert successor.data.tags[mlflow_runs.CONTINUES_TAG] == killed.info.run_id
    assert (
        f"Continues run 'corpus' ({killed.info.run_id})"
        in successor.data.tags["mlflow.note.content"]
    )
