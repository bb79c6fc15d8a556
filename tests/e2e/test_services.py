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
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import serve

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
