"""Local services for the three user journeys: `make serve` / `make stop`.

    python -m flows.serve start [--no-worker]   Prefect server, MLflow server, work pool,
                                                 deployments from prefect.yaml, a worker
    python -m flows.serve stop                  stop exactly what `start` started, by PID
    python -m flows.serve status

Everything binds to 127.0.0.1. PIDs, ports and logs are kept in <run dir>/services/; each
service runs in its own session, so stopping signals its process group (its PID) and the
children it started (a worker's flow runs), never anything found by name.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.runtime import PROJECT_ROOT, configure_environment, default_run_dir

POOL = "llama-recipe"
BIN = Path(sys.executable).parent


def service_env(run_dir: Path, prefect_port: int, mlflow_port: int) -> dict[str, str]:
    """Environment of the servers, the worker and the flow runs it starts."""
    env = dict(os.environ)
    env.pop("PREFECT_PROFILES_PATH", None)
    env.update(
        {
            "RECIPE_RUN_DIR": str(run_dir),
            "RECIPE_PROJECT_DIR": str(PROJECT_ROOT),
            "PREFECT_HOME": str(run_dir / "prefect"),
            "PREFECT_LOCAL_STORAGE_PATH": str(run_dir / "prefect" / "storage"),
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner: the server starts fast
            "HF_HUB_OFFLINE": "1",
            "GIT_PYTHON_REFRESH": "quiet",
        }
    )
    return env


def start(
    run_dir: Path, prefect_port: int = 4200, mlflow_port: int = 5000, worker: bool = True, log=print
) -> dict:
    run_dir = Path(run_dir).resolve()
    folder = run_dir / "services"
    folder.mkdir(parents=True, exist_ok=True)
    if _running(folder):
        raise RuntimeError(f"services already running (see {folder}); run `make stop` first")
    env = service_env(run_dir, prefect_port, mlflow_port)
    (run_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    services = {}
    try:
        services["prefect-server"] = _spawn(
            folder,
            "prefect-server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            env,
        )
        services["mlflow-server"] = _spawn(
            folder,
            "mlflow-server",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}",
                "--default-artifact-root",
                (run_dir / "mlflow" / "artifacts").as_uri(),
            ],
            env,
        )
        _wait_http(f"http://127.0.0.1:{prefect_port}/api/health", "Prefect server", folder)
        _wait_http(f"http://127.0.0.1:{mlflow_port}/health", "MLflow server", folder)
        log(f"Prefect UI  http://127.0.0.1:{prefect_port}")
        log(f"MLflow UI   http://127.0.0.1:{mlflow_port}")
        _cli(["work-pool", "create", POOL, "--type", "process", "--overwrite"], env)
        _cli(["--no-prompt", "deploy", "--all"], env)
        log(f"work pool '{POOL}' and the deployments of prefect.yaml are registered")
        if worker:
            services["prefect-worker"] = _spawn(
                folder,
                "prefect-worker",
                [str(BIN / "prefect"), "worker", "start", "--pool", POOL],
                env,
            )
            log(f"worker polling '{POOL}' (log: {folder / 'prefect-worker.log'})")
    except BaseException:
        stop(run_dir, log=lambda *_: None)
        raise
    return services


def stop(run_dir: Path, log=print, timeout: float = 20.0) -> list[int]:
    """Stop every service recorded in <run dir>/services by its PID (its process group)."""
    folder = Path(run_dir).resolve() / "services"
    stopped = []
    for pid_file in sorted(folder.glob("*.pid")):
        pid = int(pid_file.read_text())
        if _alive(pid):
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
            log(f"stopped {pid_file.stem} (pid {pid})")
            stopped.append(pid)
        pid_file.unlink()
    return stopped


def _spawn(folder: Path, name: str, cmd: list[str], env: dict) -> int:
    log_file = open(folder / f"{name}.log", "ab")
    proc = subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (folder / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _cli(args: list[str], env: dict) -> None:
    out = subprocess.run(
        [str(BIN / "prefect"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"prefect {' '.join(args)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
        )


def _wait_http(url: str, what: str, folder: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s; see logs in {folder}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) counts as stopped
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the service was started as a session leader: pgid == pid
    except ProcessLookupError:
        pass


def _running(folder: Path) -> list[str]:
    return [p.stem for p in folder.glob("*.pid") if _alive(int(p.read_text()))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["start", "stop", "status"])
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--no-worker", action="store_true", help="do not start a worker")
    args = p.parse_args(argv)
    run_dir = configure_environment(default_run_dir())
    if args.command == "start":
        start(run_dir, args.prefect_port, args.mlflow_port, worker=not args.no_worker)
        print(
            "Run a deployment:  .venv/bin/prefect deployment run pipeline/pipeline "
            "--param preset=tiny   (with PREFECT_API_URL set, see README)"
        )
        print("Stop everything:   make stop")
    elif args.command == "stop":
        if not stop(run_dir):
            print("nothing was running")
    else:
        running = _running(run_dir / "services")
        print(json.dumps({"running": running, "folder": str(run_dir / "services")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
