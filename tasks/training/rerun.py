"""A forced re-run (`--rerun`) of a training task trains again from step 0.

A training task's output folder is keyed by its inputs so that a crashed run resumes from its
last checkpoint. A task forced with `--rerun` has the same inputs, so without this it would find
its own final checkpoint and train 0 steps. `--rerun` runs the task with Prefect's
`refresh_cache`; that is the signal used here: the previous folder is renamed aside (kept, not
deleted, so nothing trained is lost) and training starts fresh. A retry after a crash does not
refresh the cache, so it still resumes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

SET_ASIDE = ".set-aside-"  # <out_dir>.set-aside-<UTC time>: the folder a forced re-run replaced


def forced_rerun() -> bool:
    """True inside a Prefect task run that was forced to recompute (`refresh_cache`)."""
    try:
        from prefect.context import TaskRunContext
    except ImportError:  # pure use of the training loop, without Prefect installed
        return False
    ctx = TaskRunContext.get()
    return bool(ctx is not None and getattr(ctx.task, "refresh_cache", None))


def set_aside_if_forced(out_dir: Path) -> Path | None:
    """In a forced task run, rename `out_dir` (if it exists) to a sibling `*.set-aside-<time>`
    folder and say so in the task's log; returns the new name, or None when nothing moved."""
    out_dir = Path(out_dir)
    if not forced_rerun() or not out_dir.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = out_dir.with_name(f"{out_dir.name}{SET_ASIDE}{stamp}")
    n = 1
    while aside.exists():  # two forced runs within one second
        aside, n = out_dir.with_name(f"{out_dir.name}{SET_ASIDE}{stamp}-{n}"), n + 1
    os.replace(out_dir, aside)
    _log().info(
        "forced re-run (--rerun): the previous output %s was set aside as %s; training "
        "again from step 0 (delete that folder when you no longer need it)",
        out_dir,
        aside.name,
    )
    return aside


def _log() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)
