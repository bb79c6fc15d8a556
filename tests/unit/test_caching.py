"""The cache policy of every project task (tasks/caching.py), through real Prefect flow runs."""

from __future__ import annotations

from prefect import flow

from tasks.caching import cached_task
from tasks.results import StepOutput


@cached_task("first")
def first_step(x: int) -> StepOutput:
    return StepOutput(stats={"which": 1.0, "x": float(x)})


@cached_task("second")
def second_step(x: int) -> StepOutput:
    return StepOutput(stats={"which": 2.0, "x": float(x)})


@flow
def _both(x: int) -> list[tuple[str, float]]:
    out = []
    for step in (first_step, second_step, first_step):
        state = step(x, return_state=True)
        out.append((state.name, state.result().stats["which"]))
    return out


def test_two_tasks_of_one_module_with_the_same_inputs_do_not_share_a_cache_entry():
    """The code key is the module's (and its imports'); the task's own name keeps two tasks of
    one module apart (a margin-ablation RM once came back as the Helpfulness RM's result)."""
    x = 12345  # not used by any other test's run of these tasks
    first, second, first_again = _both(x)
    assert first[1] == 1.0 and second == ("Completed", 2.0)
    assert first_again == ("Cached", 1.0)
