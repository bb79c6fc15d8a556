"""Cached task results are persisted as JSON, and a record that is not ours is never loaded.

Real Prefect flow runs of a real task (the corpus stage's `split_shards`), real result files.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import polars as pl
import pytest
from prefect import flow
from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
from prefect.serializers import PickleSerializer
from prefect.tasks import Task

import tasks
from tasks.corpus.steps import split_shards
from tasks.io import write_dataset
from tasks.persist import SERIALIZER_TYPE, StepOutputJSON, VerifiedRecords, record_problem
from tasks.results import StepOutput


class _TouchOnUnpickle:
    """Unpickling this creates a file: it stands for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _documents(tmp_path: Path):
    n = 6
    df = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "source": ["web"] * n,
            "domain": ["web"] * n,
            "url": [None] * n,
            "title": [None] * n,
            "text": [f"document {i}" for i in range(n)],
            "factual": [False] * n,
            "license": ["test"] * n,
            "location": [f"f:{i}" for i in range(n)],
        },
        schema_overrides={"url": pl.String, "title": pl.String},
    )
    return write_dataset(df, "raw_documents", tmp_path / "data")


@flow
def _split(documents, data_dir: str):
    state = split_shards(documents, 2, data_dir, return_state=True)
    return state.name, state.result(), state.data.metadata.storage_key


def test_a_cached_task_result_is_json_and_the_cache_hit_returns_an_equal_step_output(tmp_path):
    docs = _documents(tmp_path)
    name, first, key = _split(docs, str(tmp_path / "data"))
    assert name == "Completed" and isinstance(first, StepOutput)
    assert sorted(first.outputs) == ["shard_0", "shard_1"]

    record = json.loads(Path(key).read_bytes())  # the whole file is JSON ...
    assert record["metadata"]["serializer"] == {"type": SERIALIZER_TYPE}
    assert StepOutput.model_validate_json(record["result"]) == first  # ... and so is the result
    assert b"pickle" not in Path(key).read_bytes()

    name, again, key_again = _split(docs, str(tmp_path / "data"))
    assert name == "Cached" and key_again == key
    assert isinstance(again, StepOutput) and again == first


def test_a_record_edited_to_name_pickle_is_refused_and_the_task_runs_again(tmp_path):
    docs = _documents(tmp_path)
    _, first, key = _split(docs, str(tmp_path / "data"))
    marker = tmp_path / "code-ran"
    evil = ResultRecord(
        metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=key),
        result=_TouchOnUnpickle(marker),
    ).serialize()
    # Prefect itself decodes a record with the serializer its file names: this is the threat.
    ResultRecord.deserialize(evil)
    assert marker.exists()
    marker.unlink()

    Path(key).write_bytes(evil)
    name, again, key_again = _split(docs, str(tmp_path / "data"))
    assert not marker.exists()  # nothing was unpickled
    assert name == "Completed" and again == first and key_again == key  # recomputed, not loaded
    assert Path(key + ".refused").read_bytes() == evil  # kept aside for a look
    assert json.loads(Path(key).read_bytes())["metadata"]["serializer"] == {"type": SERIALIZER_TYPE}


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x80\x04not json", "not a result record"),
        (b'{"metadata": {"serializer": {"type": "json"}}, "result": "{}"}', "its serializer is"),
        (
            json.dumps(
                {
                    "metadata": {"serializer": {"type": SERIALIZER_TYPE}},
                    "result": '{"outputs": {"x": 1}}',
                }
            ).encode(),
            "not a valid StepOutput",
        ),
    ],
)
def test_record_problem_names_why_a_record_is_refused(data, why):
    assert why in record_problem(data)


def test_every_project_task_persists_its_result_as_json_through_the_checked_policy():
    found = []
    for info in pkgutil.walk_packages(tasks.__path__, "tasks."):
        if not info.name.endswith(".steps"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, Task) and obj.__module__ == info.name:
                found.append(f"{info.name}.{name}")
                assert obj.persist_result is True, found[-1]
                assert isinstance(obj.result_serializer, StepOutputJSON), found[-1]
                assert isinstance(obj.cache_policy, VerifiedRecords), found[-1]
    assert len(found) >= 30  # every stage's tasks, not an empty walk


def test_nan_and_infinite_stats_round_trip_so_the_cache_hit_is_not_refused():
    """A stat that is NaN (no loss yet) or infinite must read back; pydantic's default writes
    null, which made the record invalid and the task run again on every run."""
    import math

    from tasks.persist import STEP_OUTPUT_JSON
    from tasks.results import StepOutput

    out = StepOutput(stats={"loss": float("nan"), "ppl": float("inf"), "ok": 1.0})
    back = STEP_OUTPUT_JSON.loads(STEP_OUTPUT_JSON.dumps(out))
    assert (
        math.isnan(back.stats["loss"]) and back.stats["ppl"] == math.inf and back.stats["ok"] == 1.0
    )
