"""One launcher for distributed steps (issue 17): a Prefect task whose training config says
`launcher: torchrun` (or `deepspeed`) and `nproc: N` runs its work as N processes and waits.

    run_ranks("tasks.reward.steps:train_reward_model", kwargs, launch, work_dir, log)

- The work is a module-level function named "module:function" taking JSON-able keyword
  arguments; every rank calls it inside the launcher's process group (tasks/training/engines.py
  joins it: gloo on CPU, nccl on GPU). Rank 0's return value (JSON) is what `run_ranks`
  returns, so the task builds the same manifest as in one process.
- The ranks' output is streamed into `log` (the Prefect task's log) line by line.
- If any rank fails, the launcher stops the others (torchrun's agent does) and `run_ranks`
  raises `RankFailed` with the failing rank's exception and traceback (each rank writes its
  own error file; the first by time is the cause, the others are usually its echo).
- A killed job resumes from its checkpoint like the single-process loop: the work function
  trains into a folder keyed by its inputs, and the loop resumes from the newest checkpoint.

Multi-node: `deepspeed` with a `hostfile` (one line per node: `host slots=N`), started on the
first node; torchrun here starts one node (`--standalone`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"


class LaunchConfig(BaseModel):
    """How a step runs: in the task's own process (`none`, the laptop path) or as `nproc`
    processes under torchrun / the deepspeed launcher."""

    model_config = ConfigDict(extra="forbid")

    launcher: Literal["none", "torchrun", "deepspeed"] = "none"
    nproc: int = Field(1, ge=1)  # processes per node (GPUs per node on a GPU machine)
    hostfile: Path | None = None  # deepspeed, several nodes
    timeout_s: int = Field(0, ge=0)  # 0: no limit

    @property
    def distributed(self) -> bool:
        return self.launcher != "none"


class RankFailed(RuntimeError):
    """A rank of a launched step raised; the message is that rank's error."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(launch: LaunchConfig, spec: Path) -> list[str]:
    """The launcher's command line for the worker module on `spec`."""
    worker = ["-m", "tasks.distributed.worker", str(spec)]
    if launch.launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={launch.nproc}",
            *worker,
        ]
    if launch.launcher == "deepspeed":
        exe = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
        cmd = [exe, f"--master_port={_free_port()}"]
        if launch.hostfile:
            cmd += ["--hostfile", str(launch.hostfile)]
        else:
            cmd += ["--num_nodes=1", f"--num_gpus={launch.nproc}"]
        return [*cmd, "--module", "tasks.distributed.worker", str(spec)]
    raise ValueError(f"launcher {launch.launcher!r} starts no processes")


def run_ranks(
    fn: str,
    kwargs: dict,
    launch: LaunchConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
) -> object:
    """Run `fn(**kwargs)` on every rank; returns rank 0's result (module docstring)."""
    if not launch.distributed:
        raise ValueError("run_ranks needs launcher torchrun or deepspeed")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in [work_dir / RESULT_FILE, *work_dir.glob("error-rank*.json")]:
        stale.unlink(missing_ok=True)
    spec = work_dir / SPEC_FILE
    spec.write_text(json.dumps({"fn": fn, "kwargs": kwargs, "out": str(work_dir)}, default=str))
    cmd = command(launch, spec)
    log(f"launching {fn} on {launch.nproc} rank(s): {' '.join(cmd)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    project = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project, env.get("PYTHONPATH")) if p)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=project,
        start_new_session=True,  # its own process group: a timeout stops every rank
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-40:]
        log(line)
        if launch.timeout_s and time.monotonic() - started > launch.timeout_s:
            os.killpg(proc.pid, 15)
            proc.wait(30)
            raise RankFailed(f"{fn} ran past timeout_s {launch.timeout_s}; ranks stopped")
    code = proc.wait()
    errors = sorted(
        (json.loads(p.read_text()) for p in work_dir.glob("error-rank*.json")),
        key=lambda e: e["time"],
    )
    if errors:
        first = errors[0]
        raise RankFailed(
            f"rank {first['rank']} of {launch.nproc} failed in {fn}: {first['error']}\n"
            f"{first['traceback']}"
        )
    if code != 0:
        raise RankFailed(
            f"{launch.launcher} exited with {code} and no rank reported an error; last "
            "output:\n" + "\n".join(tail)
        )
    result = work_dir / RESULT_FILE
    if not result.exists():
        raise RankFailed(f"rank 0 of {fn} wrote no {RESULT_FILE} in {work_dir}")
    return json.loads(result.read_text())["result"]


def start_ranks_here(launch: LaunchConfig) -> bool:
    """True in the Prefect task of a launched step (it starts the ranks); False in a rank (the
    launcher set RANK) and for steps that run in the task's process."""
    return launch.distributed and "RANK" not in os.environ


def rank() -> int:
    """This process's rank in a launched step (0 outside one)."""
    return int(os.environ.get("RANK", "0"))


def step_log(message: str) -> None:
    """To the Prefect task's log inside a run, else to stdout (a launched rank: the launcher
    streams it into the task's log)."""
    try:
        from prefect.logging import get_run_logger

        get_run_logger().info(message)
    except Exception:  # noqa: BLE001 - MissingContextError outside a run
        print(message, flush=True)
