"""The scheduling and inspection journeys against real servers: a Prefect server and an MLflow
server started by `flows.serve` (what `make serve` runs), the work pool and the deployments of
prefect.yaml, a deployment run with a parameter override picked up by `prefect worker start
--run-once`, its MLflow runs read back over REST and rendered by headless Chromium. Every
process started here is stopped by its PID."""

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import serve
from tasks.annotation.store import AnnotationStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
    "--window-size=1600,1100",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("served")
    ports = {"prefect": _free_port(), "mlflow": _free_port()}
    pids = serve.start(
        run_dir, ports["prefect"], ports["mlflow"], worker=False, log=lambda *_: None
    )
    env = serve.service_env(run_dir, ports["prefect"], ports["mlflow"])
    yield {"run_dir": run_dir, "ports": ports, "pids": pids, "env": env}
    stopped = serve.stop(run_dir, log=lambda *_: None)
    assert sorted(stopped) == sorted(pids.values())
    assert not any(serve._alive(pid) for pid in pids.values())


@pytest.fixture(scope="module")
def deployment_run(services):
    env = services["env"]
    params = {
        "preset": "tiny",
        "overrides": [
            "data.max_docs_per_source=25",
            "rlhf.rounds=1",
            "distill.enabled=false",
            "evaluate.enabled=false",
        ],
    }
    created = subprocess.run(
        [
            str(serve.BIN / "prefect"),
            "deployment",
            "run",
            "pipeline/pipeline",
            "--params",
            json.dumps(params),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", created.stdout).group(1)
    worker = subprocess.run(
        [str(serve.BIN / "prefect"), "worker", "start", "--pool", serve.POOL, "--run-once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    return {"flow_run_id": flow_run_id, "params": params}


def _api(services, method: str, path: str, body: dict | None = None) -> dict:
    import httpx

    url = f"http://127.0.0.1:{services['ports']['prefect']}/api{path}"
    response = httpx.request(method, url, json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_deployment_run_with_override_completes_and_is_tracked(services, deployment_run):
    deployments = _api(services, "POST", "/deployments/filter", {})
    assert {d["name"] for d in deployments} >= {
        "pipeline",
        "corpus",
        "tokenizer",
        "pretrain",
        "sft",
        "reward",
        "rlhf",
        "distill",
        "evaluate",
    }
    corpus = next(d for d in deployments if d["name"] == "corpus")
    assert corpus["work_pool_name"] == serve.POOL
    assert any(
        s["schedule"].get("cron")
        for s in _api(services, "GET", f"/deployments/{corpus['id']}/schedules")
    )

    flow_run = _api(services, "GET", f"/flow_runs/{deployment_run['flow_run_id']}")
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["parameters"]["overrides"] == deployment_run["params"]["overrides"]

    client = MlflowClient(f"http://127.0.0.1:{services['ports']['mlflow']}")
    experiment = client.get_experiment_by_name("llama2-recipe-tiny")
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.`prefect.flow_run_id` = '{deployment_run['flow_run_id']}'",
    )
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name.startswith("pipeline tiny ")
    stages = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {r.info.run_name for r in stages} == {
        "corpus",
        "tokenizer",
        "pretrain",
        "sft",
        "reward",
        "rlhf",
    }
    corpus_run = next(r for r in stages if r.info.run_name == "corpus")
    assert corpus_run.data.params["data.max_docs_per_source"] == "25"
    assert corpus_run.data.tags["mlflow.source.git.commit"]


def _chromium(args: list[str]) -> str:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: `make test` installs it (make browser)"
    out = subprocess.run(
        [binary, *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _visible_text(html: str) -> str:
    html = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_mlflow_ui_renders_runs_and_metrics_in_a_browser(services, deployment_run, tmp_path):
    base = f"http://127.0.0.1:{services['ports']['mlflow']}"
    client = MlflowClient(base)
    experiment = client.get_experiment_by_name("llama2-recipe-tiny")
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.`prefect.flow_run_id` = '{deployment_run['flow_run_id']}'",
    )
    (corpus,) = client.search_runs(
        [experiment.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.run_name = 'corpus'",
    )
    rows_kept = corpus.data.metrics["rows_kept"]

    def page(path: str) -> str:
        profile = tmp_path / f"profile-{abs(hash(path))}"
        return _visible_text(
            _chromium([f"--user-data-dir={profile}", "--dump-dom", f"{base}/#{path}"])
        )

    runs_page = page(f"/experiments/{experiment.experiment_id}/runs")
    assert parent.info.run_name in runs_page
    run_page = page(f"/experiments/{experiment.experiment_id}/runs/{corpus.info.run_id}")
    assert "corpus" in run_page and parent.info.run_name in run_page  # parent linked
    assert re.search(rf"rows_kept {int(rows_kept)}\b", run_page), run_page[:2000]
    assert "Toxicity is measured" in run_page  # the run's description

    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "mlflow-ui-corpus-run.png"
    _chromium(
        [
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            f"--screenshot={shot}",
            f"{base}/#/experiments/{experiment.experiment_id}/runs/{corpus.info.run_id}",
        ]
    )
    assert shot.stat().st_size > 20_000


UI_CHECK_FLOW = """
import polars as pl
from prefect import flow
from prefect.runtime import flow_run

from tasks.config import load_config
from tasks.tracking import stage_run


@flow(name="ui-check")
def ui_check():
    cfg = load_config("tiny")
    with stage_run(cfg, "ui-check", None, flow_run.id, "Artifacts for the UI test.") as tracker:
        tracker.log_metrics({"rows_in": 4.0, "rows_kept": 3.0})
        tracker.log_table(pl.DataFrame({"source": ["news", "plays"], "docs": [3, 1]}), "sources")
    print("RESULT", tracker.run_id, flow_run.id)


ui_check()
"""


def test_prefect_artifacts_page_shows_a_stage_s_artifacts(services, tmp_path):
    """A stage run against the Prefect server publishes its table, summary and MLflow link as
    artifacts (read back over REST), its MLflow run links to the flow run's Prefect UI page,
    and the Prefect UI's Artifacts page lists them (screenshot in test-artifacts/)."""
    import sys

    ports = services["ports"]
    done = subprocess.run(
        [sys.executable, "-c", UI_CHECK_FLOW],
        cwd=ROOT,
        env=services["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id, flow_run_id = re.search(r"RESULT (\w+) ([0-9a-f-]{36})", done.stdout).groups()

    keys = ["ui-check-sources", "ui-check-summary", "ui-check-mlflow-run"]
    found = _api(services, "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": keys}}})
    by_key = {a["key"]: a for a in found if a["flow_run_id"] == flow_run_id}
    assert set(by_key) == set(keys)
    assert json.loads(by_key["ui-check-sources"]["data"]) == [
        {"source": "news", "docs": 3},
        {"source": "plays", "docs": 1},
    ]
    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    assert f"{mlflow_url}/#/experiments/" in by_key["ui-check-mlflow-run"]["data"]
    assert "| rows_kept | 3 |" in by_key["ui-check-summary"]["data"]
    tags = MlflowClient(mlflow_url).get_run(run_id).data.tags
    prefect_url = f"http://127.0.0.1:{ports['prefect']}"
    assert tags["prefect.flow_run_url"] == f"{prefect_url}/runs/flow-run/{flow_run_id}"

    page = _visible_text(
        _chromium([f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", f"{prefect_url}/artifacts"])
    )
    assert "ui-check-summary" in page and "ui-check-sources" in page, page[:2000]
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "prefect-artifacts.png"
    _chromium(
        [f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}", f"{prefect_url}/artifacts"]
    )
    assert shot.stat().st_size > 20_000


# --- people in the loop: a deployment run waiting for labels is suspended for real ----------
# (flows/people.py): the worker's process exits, the run is resumed through the API with
# input, rescheduled, picked up by a second worker, and the rerun returns the input.

DEPLOY = """
from prefect import flow
flow.from_source(source={root!r}, entrypoint="tests/e2e/suspend_probe.py:wait_probe").deploy(
    name="probe", work_pool_name={pool!r}, build=False, push=False, print_next_steps=False
)
"""


def _prefect(env, *args, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(serve.BIN / "prefect"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_a_deployment_run_waiting_for_labels_is_suspended_and_resumed_with_input(
    services, tmp_path
):
    """A deployment's top-level flow run that waits for labels (`wait: auto`) is suspended."""
    env = services["env"]
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    store = AnnotationStore(db)
    item = {
        "pair_id": "p1",
        "kind": "helpfulness",
        "is_safety": False,
        "system": "",
        "turns": [{"role": "user", "content": "What is 2 plus 2?"}],
        "response_a": "4.",
        "response_b": "5.",
        "annotators_needed": 1,
        "gold": None,
        "meta": {},
    }
    store.add_batch("probe-batch", [item, {**item, "pair_id": "p2"}])
    deployed = subprocess.run(
        [str(serve.BIN / "python"), "-c", DEPLOY.format(root=str(ROOT), pool=serve.POOL)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    created = _prefect(
        env,
        "deployment",
        "run",
        "labels-wait-probe/probe",
        "--params",
        json.dumps({"store_url": db, "batch": "probe-batch"}),
    )
    run_id = created.stdout.split("UUID: ")[1].split()[0]
    _prefect(env, "worker", "start", "--pool", serve.POOL, "--run-once")
    state = _api(services, "GET", f"/flow_runs/{run_id}")["state"]
    assert state["type"] == "PAUSED" and state["name"] == "Suspended"  # the process is gone
    assert store.batch("probe-batch")["flow_run_id"] == run_id
    store.label("probe-batch", "p1", "alice", "a", "better", None, None)  # half the batch
    _api(
        services,
        "POST",
        f"/flow_runs/{run_id}/resume",
        {"run_input": {"resume_with": "labelled_so_far", "note": "enough for this week"}},
    )
    deadline = time.monotonic() + 60
    while _api(services, "GET", f"/flow_runs/{run_id}")["state"]["type"] != "SCHEDULED":
        assert time.monotonic() < deadline, "the resumed run was not rescheduled"
        time.sleep(1)
    _prefect(env, "worker", "start", "--pool", serve.POOL, "--run-once")
    final = _api(services, "GET", f"/flow_runs/{run_id}")
    assert final["state"]["type"] == "COMPLETED"
    logs = _api(services, "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
    text = "\n".join(entry["message"] for entry in logs)
    assert "waiting for people (suspend): 0 of 2 labels" in text
    assert "resumed (labelled_so_far): enough for this week" in text
    store.close()
