"""Process set-up shared by the CLI, tests and deployments: where Prefect and MLflow keep state.

Prefect reads most settings when it is imported, so `configure_environment` must run before
the first `import prefect` (the CLI calls it before importing the flows; tests from conftest).
Values already in the environment win, so a user's PREFECT_API_URL or MLFLOW_TRACKING_URI
(a real server) is respected.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUN_DIR_ENV = "RECIPE_RUN_DIR"  # overrides the config's `run_dir` (tests point it at a temp folder)


def default_run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV) or PROJECT_ROOT / "runs").resolve()


def configure_environment(run_dir: Path | None = None, threads: int = 2) -> Path:
    run_dir = Path(run_dir or default_run_dir()).resolve()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    defaults = {
        "PREFECT_HOME": run_dir / "prefect",
        "PREFECT_LOCAL_STORAGE_PATH": run_dir / "prefect" / "storage",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "POLARS_MAX_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",  # nothing is downloaded from a hub at run time
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "GIT_PYTHON_REFRESH": "quiet",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks",  # e.g. the PPO trainer's per-iteration lines
        # the report and model cards download artifacts: one progress bar per file is noise
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, str(value))
    (run_dir / "prefect").mkdir(parents=True, exist_ok=True)
    return run_dir
