"""Runs one stage's tasks: applies --rerun (refresh_cache), injected faults, records states.

`RECIPE_INJECT_FAULT=corpus.quality` (comma-separated names) makes those tasks fail: the switch
the retry and resume tests use to show that completed work is reused. It is off unless set.
"""

from __future__ import annotations

import functools
import os

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.utilities.annotations import unmapped

FAULT_ENV = "RECIPE_INJECT_FAULT"


class InjectedFault(RuntimeError):
    pass


class StageRunner:
    def __init__(self, stage: str, forced: set[str]):
        self.stage = stage
        self.forced = forced
        self.states: dict[str, str] = {}  # task (task/i when mapped) -> final state name

    def __call__(self, task: Task, *args, label: str | None = None, **kwargs):
        """Run `task` once. `label` tells repeated runs of one task apart (an RLHF round: "v2"):
        it names the Prefect task run and the recorded state ("rlhf.ppo:v2"); --rerun and
        injected faults still match the plain task name, so they hit every round."""
        name = f"{self.stage}.{task.name}"
        prepared = self._prepare(task, name)
        if label:
            prepared = prepared.with_options(task_run_name=f"{task.name}-{label}")
        state = prepared(*args, return_state=True, **kwargs)
        self.states[f"{name}:{label}" if label else name] = state.name
        return state.result()

    def map(self, task: Task, items: list, *args, **kwargs) -> list:
        """Run `task` once per item on the flow's task runner (threads, Dask); other arguments
        are shared. Returns the results in item order."""
        name = f"{self.stage}.{task.name}"
        futures: list[PrefectFuture] = self._prepare(task, name).map(
            items, *(unmapped(a) for a in args), **{k: unmapped(v) for k, v in kwargs.items()}
        )
        wait(futures)
        results = []
        for i, future in enumerate(futures):
            self.states[f"{name}/{i}"] = future.state.name
            results.append(future.result())
        return results

    def _prepare(self, task: Task, name: str) -> Task:
        if name in self.forced:
            task = task.with_options(refresh_cache=True)
        if name in _injected_faults():
            task = task.with_options(retries=0, cache_policy=NO_CACHE)
            task.fn = _failing(task.fn, name)
        return task


def _injected_faults() -> set[str]:
    return {n.strip() for n in os.environ.get(FAULT_ENV, "").split(",") if n.strip()}


def _failing(fn, name: str):
    @functools.wraps(fn)  # same signature, so Prefect binds the same parameters
    def fail(*args, **kwargs):
        raise InjectedFault(f"fault injected into {name} ({FAULT_ENV})")

    return fail


def build_task_runner(
    kind: str, workers: int, dask_address: str | None = None, dask_processes: bool = False
):
    """The task runner for mapped work: threads locally, or Dask (a LocalCluster, or the
    scheduler at `dask_address` on a real cluster)."""
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": dask_processes,
                "dashboard_address": None,
            },
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)
