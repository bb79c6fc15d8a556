"""How the command line ends a failed run: one message with the flow-run id and the command
that retries it, the traceback in a file, and no traceback per flow and task on the console.

Prefect logs the exception of a failed task, of its stage flow and of the pipeline flow, each
with its traceback (three copies of one error). On the console they become one line each; the
full text still reaches Prefect's API (`prefect flow-run logs <id>`) and a file under the run
directory.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path


class _NoTraceback(logging.Formatter):
    """Formats like `inner` but leaves the traceback out (on a copy of the record: other
    handlers, Prefect's API log handler among them, still get it)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def quiet_console_tracebacks() -> None:
    """Prefect's console handler (on the root logger) prints log lines without tracebacks."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(
            handler.formatter, _NoTraceback
        ):
            handler.setFormatter(_NoTraceback(handler.formatter))


def exit_on_sigterm() -> None:
    """SIGTERM (a `kill`, a scheduler's time limit) unwinds like Ctrl-C, so the flows close their
    MLflow runs as FAILED. SIGKILL cannot be caught: the next run ends those runs (KILLED)."""

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def retry_command(flow_run_id: str, run_dir: Path, default_run_dir: Path) -> str:
    """The exact command that retries `flow_run_id`, as the user would type it here."""
    python = sys.executable
    if Path(python).is_relative_to(Path.cwd()):
        python = os.path.relpath(python)
    command = [python, "-m", "flows", "retry", flow_run_id]
    if Path(run_dir).resolve() != Path(default_run_dir).resolve():
        command += ["--run-dir", str(run_dir)]
    return shlex.join(command)


def report_failure(state, flow_name: str, run_dir: Path, default_run_dir: Path) -> None:
    """Print why the flow run failed, where the traceback is, and how to retry it."""
    flow_run_id = str(state.state_details.flow_run_id)
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        reason = f"{type(exc).__name__}: {exc}"
        text = "".join(traceback.format_exception(exc))
    else:
        reason = state.message or state.name
        text = f"{state!r}\n"
    log = Path(run_dir) / "failures" / f"{flow_run_id}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    print(
        f"\nerror: flow run {flow_run_id} ({flow_name}) failed: {reason}\n"
        f"  traceback: {log}\n"
        "  Tasks that completed are cached. "
        "To retry this flow run (it resumes at the failed task\n"
        f"  and continues the same MLflow run):\n\n"
        f"    {retry_command(flow_run_id, run_dir, default_run_dir)}\n",
        file=sys.stderr,
    )
