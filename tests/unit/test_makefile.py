"""`make ui` reads the run directory from RECIPE_RUN_DIR, the variable the flows read."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_make_ui_serves_the_store_under_recipe_run_dir(tmp_path, how):
    env = {k: v for k, v in os.environ.items() if k not in ("RECIPE_RUN_DIR", "MAKEFLAGS")}
    args = ["make", "-n", "ui"]  # -n: print the commands, run none
    if how == "argument":
        args.append(f"RECIPE_RUN_DIR={tmp_path}")
    else:
        env["RECIPE_RUN_DIR"] = str(tmp_path)
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"--backend-store-uri sqlite:///{tmp_path}/mlflow/mlflow.db" in out.stdout
