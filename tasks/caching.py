"""Cache policy for expensive deterministic tasks.

Prefect's TASK_SOURCE hashes only the task function's own lines, so a change in the pure code it
calls (a filter rule, a loss, the refusal rule) would not invalidate the cache. `ImportedCode`
keys a task on the source of its module and of every project module that module imports,
transitively, with the data files they ship (tasks/codegraph.py derives the list from the
imports; nothing is listed by hand). With INPUTS (content-addressed manifests and configs) the
key changes exactly when the data, the config or the code a task can run changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, CachePolicy

from tasks.codegraph import CodeGraph
from tasks.persist import STEP_OUTPUT_JSON, VerifiedRecords


@dataclass
class ImportedCode(CachePolicy):
    """The code key of the task function's module (see tasks/codegraph.py)."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters, **kwargs) -> str:
        # a fresh graph each time: files are re-parsed only when their mtime or size changed
        fn = task_ctx.task.fn
        code = CodeGraph().code_key(fn.__module__)
        # the function's own name: two tasks of one module called with the same inputs (the
        # Helpfulness RM and the margin ablation) must not share a key
        return hashlib.sha256(f"{code}|{fn.__module__}.{fn.__qualname__}".encode()).hexdigest()


def code_and_inputs() -> CachePolicy:
    """Cache on the task's inputs and on the code its module imports. A cached record is checked
    before Prefect loads it (see tasks/persist.py)."""
    return VerifiedRecords(policies=(INPUTS + ImportedCode()).policies)


def cached_task(name: str, *, ignore: tuple[str, ...] = (), **options):
    """`@task` as every expensive task of the project declares it: cached on its inputs (less the
    parameters in `ignore`, e.g. the MLflow run id a cached result may be logged to) and on the
    code it imports, with its StepOutput persisted as JSON (tasks/persist.py)."""
    policy = code_and_inputs()
    for parameter in ignore:
        policy = policy - parameter
    return task(
        name=name,
        cache_policy=policy,
        persist_result=True,
        result_serializer=STEP_OUTPUT_JSON,
        **options,
    )
