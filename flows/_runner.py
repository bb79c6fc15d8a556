"""Runs one stage's tasks: applies --rerun (refresh_cache) and records each task's final state."""

from __future__ import annotations

from prefect import Task


class StageRunner:
    def __init__(self, stage: str, forced: set[str]):
        self.stage = stage
        self.forced = forced
        self.states: dict[str, str] = {}  # task -> "Completed" | "Cached" | ...

    def __call__(self, task: Task, *args, **kwargs):
        name = f"{self.stage}.{task.name}"
        if name in self.forced:
            task = task.with_options(refresh_cache=True)
        state = task(*args, return_state=True, **kwargs)
        self.states[name] = state.name
        return state.result()
