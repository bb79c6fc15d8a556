"""A task fails (fault injected); Prefect's own retry of the failed flow run resumes from it:
the tasks that completed before come from cache, the failed one and what follows run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows._runner import FAULT_ENV, InjectedFault
from flows.pipeline import pipeline_flow

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SLICE = "data.max_docs_per_source=55"  # its own slice: no cache shared with other tests
ONE_ROUND = "rlhf.rounds=1"  # the retry is about the corpus: one RLHF round keeps it short
NO_DISTILL, NO_EVAL = "distill.enabled=false", "evaluate.enabled=false"  # likewise


def _latest_flow_run(client, flow_name: str):
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                   sort=FlowRunSort.START_TIME_DESC, limit=1)
    return run


def _states(client, flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def test_retry_of_failed_flow_run_resumes_from_the_failed_task(monkeypatch):
    from prefect.client.orchestration import get_client

    monkeypatch.setenv(FAULT_ENV, "corpus.exact_dedup")
    state = pipeline_flow(preset="tiny", overrides=[SLICE, ONE_ROUND, NO_DISTILL, NO_EVAL],
                          return_state=True)
    assert state.is_failed()
    with pytest.raises(InjectedFault):
        state.result()
    with get_client(sync_client=True) as client:
        failed_pipeline = _latest_flow_run(client, "pipeline")
        failed_corpus = _latest_flow_run(client, "corpus")
        before = _states(client, failed_corpus.id)
    assert failed_pipeline.id == state.state_details.flow_run_id
    assert before["ingest"] == "Completed" and before["exact_dedup"] == "Failed"
    assert "near_dedup" not in before  # nothing ran after the failure

    monkeypatch.delenv(FAULT_ENV)
    retry = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "retry", str(failed_pipeline.id),
         "--entrypoint", "flows/pipeline.py:pipeline_flow"],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=600,
    )
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]

    with get_client(sync_client=True) as client:
        pipeline = client.read_flow_run(failed_pipeline.id)
        corpus = _latest_flow_run(client, "corpus")
        after = _states(client, corpus.id)
        tokenizer = _states(client, _latest_flow_run(client, "tokenizer").id)
    assert pipeline.state.is_completed()  # the same flow run, retried to completion
    assert corpus.id != failed_corpus.id
    assert after["ingest"] == "Cached" and after["split_shards"] == "Cached"
    assert after["exact_dedup"] == "Completed" and after["near_dedup"] == "Completed"
    assert set(tokenizer.values()) == {"Completed"}
