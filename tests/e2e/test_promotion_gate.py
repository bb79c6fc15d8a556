"""A person's decision through the Prefect API: a flow calls the promotion gate with
`approval: person` and pauses; this test polls the flow run until it is Paused and resumes it
with a `Decision`, as the Prefect UI's Resume form does. The model version is a dummy one
registered in a temporary MLflow store (tests/unit/test_promotion.py)."""

from __future__ import annotations

import threading
import time
from uuid import UUID

import pytest
from prefect import flow
from prefect.flow_runs import resume_flow_run
from prefect.runtime import flow_run

from flows.promote import promotion_gate
from tasks import promotion
from tests.unit.test_promotion import ROW, gate_setup, register_dummy

pytestmark = pytest.mark.e2e

THRESHOLDS = {"max_violation_annotator": 5.0, "min_win_vs_sft_annotator": 50.0}


@pytest.fixture(autouse=True)
def prefect_api():
    """Start the ephemeral API here first: Prefect starts it on first use, and two threads
    using it for the first time at once can start two servers."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.hello()


STARTED: dict[str, str] = {}  # token -> flow-run id (flow parameters are copies, not shared)


@flow
def gate_flow(cfg, evaluate, token: str = ""):
    STARTED[token] = str(flow_run.id)
    return promotion_gate(cfg, evaluate, report="/runs/reports/report-x.html", poll_interval_s=1)


class GateRun:
    """The gate flow in a thread; `flow_run_id` once it started, `result` when it ended."""

    def __init__(self, cfg, evaluate):
        self.token = str(id(self))
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(cfg, evaluate), daemon=True)
        self.thread.start()

    def _run(self, cfg, evaluate):
        try:
            self.result = gate_flow(cfg, evaluate, self.token, return_state=True)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def wait_paused(self, timeout_s: float = 120) -> UUID:
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + timeout_s
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                assert self.error is None, self.error
                if self.token in STARTED:
                    flow_run_id = UUID(STARTED[self.token])
                    state = client.read_flow_run(flow_run_id).state
                    if state is not None and state.is_paused():
                        return flow_run_id
                time.sleep(0.3)
        raise AssertionError(f"the gate flow did not pause within {timeout_s} s")

    def outcome(self):
        self.thread.join(timeout=120)
        assert not self.thread.is_alive() and self.error is None, self.error
        assert self.result.is_completed(), self.result
        return self.result.result()


def _request(flow_run_id: UUID) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["promotion-approval-request"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return artifact.data


def test_a_person_approves_from_the_prefect_api(tmp_path, monkeypatch):
    cfg, evaluate, client, name = gate_setup(
        tmp_path, monkeypatch, ROW, enabled=True, approval="person", thresholds=THRESHOLDS
    )
    run = GateRun(cfg, evaluate)
    flow_run_id = run.wait_paused()
    number = promotion.find_model_version(client, name, evaluate.versions["rlhf-v1"])
    # while it waits: candidate, not champion; the request shows the row, thresholds, links
    assert promotion.aliases_of(client, name, number) == ["candidate"]
    request = _request(flow_run_id)
    assert f"# Promotion request: rlhf-v1 ({name}/{number})" in request
    assert "| violation_annotator_% | 4 |" in request
    assert "| max_violation_annotator | violation_annotator_% | <= 5 | 4 | yes |" in request
    assert evaluate.mlflow_run_id in request and "/runs/reports/report-x.html" in request

    resume_flow_run(
        flow_run_id,
        run_input={"decision": "approve", "reason": "safe and helpful enough", "approver": "ana"},
    )
    outcome = run.outcome()
    assert outcome.decision == "approved" and outcome.champion == number
    assert promotion.aliases_of(client, name, number) == ["candidate", "champion"]
    tags = client.get_model_version(name, number).tags
    assert tags["promotion.decision"] == "approved"
    assert tags["promotion.reason"] == "safe and helpful enough"
    assert tags["promotion.approver"] == "ana" and tags["promotion.time"]
    assert client.get_run(evaluate.mlflow_run_id).data.tags["promotion.decision"] == "approved"


def test_a_person_rejects_and_champion_stays(tmp_path, monkeypatch):
    cfg, evaluate, client, name = gate_setup(
        tmp_path, monkeypatch, ROW, enabled=True, approval="person", thresholds=THRESHOLDS
    )
    # an earlier champion of the same registered model
    earlier = register_dummy(cfg.run_dir, name, tmp_path / "models" / "earlier", b"earlier")
    checks = promotion.check_thresholds(ROW, promotion.Thresholds(**THRESHOLDS))
    promotion.record_checks(client, name, earlier, checks, "an earlier run")
    promotion.set_champion(client, name, earlier)

    run = GateRun(cfg, evaluate)
    flow_run_id = run.wait_paused()
    resume_flow_run(flow_run_id, run_input={"decision": "reject", "reason": "refuses too much"})
    outcome = run.outcome()
    assert outcome.decision == "rejected" and outcome.aliases == ["candidate"]
    assert promotion.champion_version(client, name) == earlier  # it stayed where it was
    tags = client.get_model_version(name, outcome.model_version).tags
    assert tags["promotion.decision"] == "rejected"
    assert tags["promotion.reason"] == "refuses too much"

    # the same weights again (a cached rerun): the person's decision holds, nobody is asked
    again = gate_flow(cfg, evaluate)
    assert again.decision == "rejected earlier"
    assert promotion.champion_version(client, name) == earlier


def test_no_decision_in_time_is_not_approved_and_the_run_completes(tmp_path, monkeypatch):
    cfg, evaluate, client, name = gate_setup(
        tmp_path,
        monkeypatch,
        ROW,
        enabled=True,
        approval="person",
        approval_timeout_s=2,
        thresholds=THRESHOLDS,
    )
    state = gate_flow(cfg, evaluate, return_state=True)
    assert state.is_completed(), state  # Prefect would fail a run whose pause timed out
    outcome = state.result()
    assert outcome.decision == "timed out" and outcome.champion is None
    assert outcome.aliases == ["candidate"]
    tags = client.get_model_version(name, outcome.model_version).tags
    assert tags["promotion.decision"] == "timed out"
