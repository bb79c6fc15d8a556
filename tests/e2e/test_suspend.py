"""Suspension for people, on a real Prefect server with a worker: a deployment's top-level
flow run that waits for labels is *suspended* (the worker's process exits; nothing waits),
resumed through the API with input, rescheduled, and picked up again by a worker; the rerun
returns the operator's input."""

import json
import subprocess
import time

import pytest

from flows import serve
from tasks.annotation.store import AnnotationStore
from tests.e2e.test_services import ROOT, _api, services  # noqa: F401 - the servers fixture

pytestmark = pytest.mark.e2e

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
    services,
    tmp_path,  # noqa: F811
):
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
