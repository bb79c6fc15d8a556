"""Task results persisted as JSON, and loaded back only when they are what this project wrote.

Prefect persists a cached task's return value as a "result record": a JSON file under
`<run_dir>/prefect/storage`, named by the cache key, whose metadata names the serializer that
decodes its result. Prefect's default serializer is pickle, so whoever can write that folder
could run code on the next cache hit. Every task of this project returns a `StepOutput`:
`STEP_OUTPUT_JSON` stores it as the StepOutput's own JSON and reads it back with
`StepOutput.model_validate_json`, which looks up no class or function named in the file (Prefect's
"json" serializer imports the `__class__` a file names).

Prefect decodes a record with the serializer that the *file* names, so writing JSON alone would
not stop a record edited to name "pickle". `VerifiedRecords`, the cache policy of
`tasks.caching.code_and_inputs`, therefore checks the record at the computed key before Prefect
opens it: one that does not name STEP_OUTPUT_JSON, or whose result is not a valid StepOutput, is
moved aside to `<key>.refused` with a warning, and the task runs again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CompoundCachePolicy
from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer
from pydantic import Field, ValidationError

from tasks.results import StepOutput

log = logging.getLogger(__name__)

SERIALIZER_TYPE = "recipe-step-output-json"


class StepOutputJSON(Serializer):
    """A StepOutput as its JSON; nothing else is written or read."""

    type: str = Field(default=SERIALIZER_TYPE, frozen=True)

    def dumps(self, obj: StepOutput) -> bytes:
        if not isinstance(obj, StepOutput):
            raise TypeError(
                f"{SERIALIZER_TYPE} persists a StepOutput, got {type(obj).__name__}; "
                "return a StepOutput from the task or give it another serializer"
            )
        return obj.model_dump_json().encode()

    def loads(self, blob: bytes) -> StepOutput:
        return StepOutput.model_validate_json(blob)


# What every project task persists with (tasks.caching.cached_task sets it)
STEP_OUTPUT_JSON = StepOutputJSON()


def record_problem(data: bytes) -> str | None:
    """Why the bytes of a result record must not be loaded, or None when they may."""
    try:
        record = json.loads(data)
        serializer, result = record["metadata"]["serializer"], record["result"]
    except (ValueError, KeyError, TypeError) as e:
        return f"not a result record of this project ({type(e).__name__}: {e})"
    if serializer != {"type": SERIALIZER_TYPE}:
        return f"its serializer is {serializer!r}, only {{'type': {SERIALIZER_TYPE!r}}} is loaded"
    try:
        StepOutput.model_validate_json(result)
    except ValidationError as e:
        return f"its result is not a valid StepOutput ({e.error_count()} errors)"
    return None


def refuse_untrusted_record(task_ctx: Any, key: str) -> Path | None:
    """Move the record stored at `key` aside unless it may be loaded; returns where it went.

    Only for tasks that persist with STEP_OUTPUT_JSON in local storage (the project's set-up);
    any other task is left to Prefect as it is.
    """
    store = getattr(task_ctx, "result_store", None)
    storage = getattr(store, "result_storage", None)
    serializer = getattr(getattr(task_ctx, "task", None), "result_serializer", None)
    if (
        not isinstance(serializer, StepOutputJSON)
        or not isinstance(storage, LocalFileSystem)
        or store.metadata_storage is not None
    ):
        return None
    path = Path(storage.basepath or ".").expanduser() / key
    if not path.is_file():
        return None
    problem = record_problem(path.read_bytes())
    if problem is None:
        return None
    refused = path.with_name(f"{path.name}.refused")
    os.replace(path, refused)
    log.warning(
        "task %r: not loading the cached result %s: %s; moved it to %s, the task runs again",
        task_ctx.task.name,
        path,
        problem,
        refused.name,
    )
    return refused


@dataclass
class VerifiedRecords(CompoundCachePolicy):
    """A compound cache policy that checks the record at its key before Prefect loads it.

    `policy - "input"` keeps the check (dataclasses.replace keeps the class); `policy + other`
    gives a plain CompoundCachePolicy without it.
    """

    def compute_key(
        self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        key = super().compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        if key is not None:
            refuse_untrusted_record(task_ctx, key)
        return key
