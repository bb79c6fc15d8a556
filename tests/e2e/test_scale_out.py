"""The corpus stage mapped over shards on a Dask LocalCluster keeps exactly the documents
the plain single-shard run keeps."""

from uuid import UUID

import pytest

from flows.corpus import corpus_flow
from tasks.io import read_dataset

pytestmark = pytest.mark.e2e

SLICE = "data.max_docs_per_source=70"  # its own slice: no cache shared with other tests


def _subflow_task_names(parent_flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(parent_flow_run_id)])
            )
        )
        assert [c.name for c in children]
        (child,) = children
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [child.id]}))
        return sorted(t.name.rsplit("-", 1)[0] for t in tasks), child


def test_dask_sharded_run_keeps_the_same_documents():
    plain = corpus_flow(preset="tiny", overrides=[SLICE])
    sharded = corpus_flow(
        preset="tiny",
        overrides=[
            SLICE,
            "corpus.parallel.shards=3",
            "corpus.parallel.runner=dask",
            "corpus.parallel.workers=2",
        ],
    )
    docs = {"plain": plain.documents, "sharded": sharded.documents}
    assert docs["plain"].sha256 == docs["sharded"].sha256
    plain_ids = read_dataset(docs["plain"])["doc_id"].to_list()
    assert plain_ids == read_dataset(docs["sharded"])["doc_id"].to_list() and plain_ids

    names, child = _subflow_task_names(sharded.flow_run_id)
    assert names.count("pii") == 3 and names.count("quality") == 3
    assert sharded.states["corpus.split_shards"] == "Completed"
    assert {sharded.states[f"corpus.quality/{i}"] for i in range(3)} == {"Completed"}
    assert child.state.is_completed()
