"""Who owns an MLflow run, runs whose process is gone, and the run a Prefect retry continues.

A process killed by a signal (SIGKILL, an OOM kill, a closed laptop) never closes its MLflow
runs: they would stay RUNNING forever. Every run is therefore tagged with the process that
opened it (pid, host and the process's start time, so that a reused pid does not look alive),
and whenever a run is opened, RUNNING runs of the experiment whose process is gone are ended
as KILLED, with a tag that says why. A new top-level run that follows such a killed run (same
stage, same resolved config) says which run it continues, and that run says which run continued
it.

A Prefect retry keeps the flow-run id, so the retried pipeline finds its parent MLflow run by
the `prefect.flow_run_id` tag and continues it instead of opening a second one.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

PID_TAG = "recipe.pid"
HOST_TAG = "recipe.host"
PROCESS_START_TAG = "recipe.process_start"
CONFIG_TAG = "recipe.config_sha256"  # the resolved config: a run continues one with the same
CONTINUES_TAG = "recipe.continues"  # run id of the killed run this one continues
CONTINUED_BY_TAG = "recipe.continued_by"  # on the killed run: the run that continues it
ENDED_TAG = "recipe.ended"  # why a run was ended by another process
ATTEMPT_TAG = "recipe.attempt"  # 1, then 2, 3 ... for each Prefect retry of the same flow run
FLOW_RUN_TAG = "prefect.flow_run_id"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"


def config_sha256(cfg) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def owner_tags() -> dict[str, str]:
    """Tags naming this process, set on every run it opens or continues."""
    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        HOST_TAG: socket.gethostname(),
        PROCESS_START_TAG: _process_start(pid),
    }


def _process_start(pid: int) -> str:
    """Start time of process `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or
    "" where /proc is not there. With the pid it names one process, not a later one reusing it."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # after "pid (comm)" the fields start at field 3


def process_alive(tags: dict[str, str]) -> bool | None:
    """Is the process that owns a run with these tags still running? None when this machine
    cannot tell (the run was opened on another host, or before runs were tagged)."""
    if not tags.get(PID_TAG) or tags.get(HOST_TAG) != socket.gethostname():
        return None
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    started, now = tags.get(PROCESS_START_TAG, ""), _process_start(pid)
    return not started or not now or started == now


def end_orphaned_runs(client, experiment_id: str) -> list:
    """End as KILLED every RUNNING run of the experiment whose process is gone; returns them."""
    ended = []
    for run in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING'", max_results=5000
    ):
        tags = run.data.tags
        if process_alive(tags) is not False:
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        client.set_tag(
            run.info.run_id,
            ENDED_TAG,
            f"ended as KILLED at {when} by process {os.getpid()}: the process that ran it "
            f"(pid {tags[PID_TAG]} on {tags[HOST_TAG]}) is gone, killed or crashed",
        )
        client.set_terminated(run.info.run_id, status="KILLED")
        ended.append(run)
    return ended


def continued_run(client, experiment_id: str, tags: dict[str, str]):
    """The killed top-level run a new top-level run with `tags` continues: the latest run ended
    as KILLED (by `end_orphaned_runs`) with the same stage and config that no run continues
    yet; or None."""
    if not tags.get(CONFIG_TAG):
        return None
    runs = client.search_runs(
        [experiment_id],
        f"attributes.status = 'KILLED' and tags.stage = '{tags.get('stage', '')}' "
        f"and tags.`{CONFIG_TAG}` = '{tags[CONFIG_TAG]}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    return next(
        (
            r
            for r in runs
            if ENDED_TAG in r.data.tags
            and PARENT_TAG not in r.data.tags
            and CONTINUED_BY_TAG not in r.data.tags
        ),
        None,
    )


def continues_note(run) -> str:
    return (
        f"\n\nContinues run '{run.info.run_name}' ({run.info.run_id}), which was killed: its "
        "completed tasks come from Prefect's cache and its training resumes from checkpoints."
    )


def find_flow_run_run(client, experiment_id: str, flow_run_id: str | None, stage: str):
    """The top-level run a Prefect flow run opened for `stage` (a retry keeps the flow-run id)."""
    if not flow_run_id:
        return None
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}' and tags.stage = '{stage}'",
        order_by=["attributes.start_time DESC"],
        max_results=10,
    )
    top = [r for r in runs if PARENT_TAG not in r.data.tags]
    return top[0] if top else None


def reopen(client, run) -> None:
    """Mark `run` RUNNING again for a retry of its flow run, owned by this process."""
    attempt = int(run.data.tags.get(ATTEMPT_TAG, "1")) + 1
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    note = run.data.tags.get(NOTE_TAG, "") + (
        f"\n\nAttempt {attempt} (Prefect retry of the same flow run) started {when}; it was "
        f"{run.info.status} before. Stage runs of earlier attempts stay next to the new ones."
    )
    for key, value in {**owner_tags(), ATTEMPT_TAG: str(attempt), NOTE_TAG: note}.items():
        client.set_tag(run.info.run_id, key, value)
    client.update_run(run.info.run_id, status="RUNNING")
