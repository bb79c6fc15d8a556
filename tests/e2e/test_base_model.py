"""A base model from outside starts the tiny pipeline: a tiny random Llama written by the test
as a GGUF file and as a Hugging Face folder, each run once through the CLI up to SFT (its own
run directory: Prefect, MLflow and datasets are fresh), and read back through MLflow's client."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.chat.tokenizer import load_tokenizer
from tasks.config import load_config
from tasks.hashing import sha256_of
from tasks.pretrain.base_model import source_sha256
from tasks.tracking import experiment_name
from tasks.training.model_io import load_model
from tests.helpers.base_checkpoints import VOCAB_SIZE, write_base_checkpoints

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = "llama2-recipe-pretrained"
# a smaller corpus slice than the tiny preset's: the corpus is measured, not read by SFT
SHRINK = ("data.max_docs_per_source=40",)


def _cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # the run directory decides where Prefect and MLflow live: drop the test session's own
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["RECIPE_RUN_DIR"] = str(run_dir)
    return subprocess.run(
        [sys.executable, "-m", "flows", "run", "--preset", "tiny", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _base_sets(fmt: str, path: Path) -> list[str]:
    sets = [f"base_model.format={fmt}", f"base_model.path={path}", *SHRINK]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return write_base_checkpoints(tmp_path_factory.mktemp("bases"))


@pytest.fixture(scope="module", params=["gguf", "hf"])
def base_run(request, bases, tmp_path_factory):
    """One `--stage sft` run from the base in this format."""
    fmt = request.param
    run_dir = tmp_path_factory.mktemp(f"run-{fmt}")
    proc = _cli(run_dir, "--stage", "sft", *_base_sets(fmt, bases[fmt]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((run_dir / "last_run.json").read_text())
    # this run's own store: an earlier in-process test may have exported MLFLOW_TRACKING_URI
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name("tiny"))
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    return {
        "fmt": fmt,
        "path": bases[fmt],
        "model": bases[f"{fmt}_model"],
        "run_dir": run_dir,
        "sft": summary["stages"]["sft"],
        "client": client,
        "runs": runs,
    }


def test_sft_trains_from_the_base_with_its_vocabulary(base_run):
    sft = base_run["sft"]
    base_cfg = base_run["model"].config
    model = load_model(Path(sft["model_dir"]))
    assert model.config.vocab_size == base_cfg.vocab_size == VOCAB_SIZE  # not the preset's 1000
    assert (model.config.dim, model.config.n_kv_heads) == (base_cfg.dim, base_cfg.n_kv_heads)
    assert model.config.tie_embeddings == (base_run["fmt"] == "gguf")
    # SFT started from the imported model: the "pretrained" variant is the import's folder
    pretrained = load_model(Path(sft["models"]["pretrained"]))
    assert pretrained.num_params() == base_run["model"].num_params()
    # every later stage encodes with the base's own tokenizer, saved beside the import
    tok, source = load_tokenizer(sft["tokenizer_model"]), load_tokenizer(base_run["path"])
    text = "What is 12 plus 30? The answer is 42."
    assert tok.kind == "huggingface" and tok.encode(text) == source.encode(text)
    assert (tok.bos_id(), tok.eos_id()) == (1, 2)
    sft_run = base_run["runs"]["sft"]
    assert sft_run.data.metrics["tokenize.examples"] > 0
    curve = base_run["client"].get_metric_history(sft_run.info.run_id, "base/loss")
    assert len(curve) >= 2


def test_the_base_is_logged_and_registered_as_the_first_version(base_run):
    client, runs = base_run["client"], base_run["runs"]
    # the corpus is still measured; there is no tokenizer stage at all
    assert set(runs) == {"corpus", "pretrain", "sft"}
    pre = runs["pretrain"]
    p, m = pre.data.params, pre.data.metrics
    path = base_run["path"]
    assert p["base_model.format"] == base_run["fmt"] and p["base_model.path"] == str(path)
    base = load_config("tiny", ["base_model.format=" + base_run["fmt"], f"base_model.path={path}"])
    expected_sha = sha256_of(path) if path.is_file() else source_sha256(base.base_model, None)
    assert p["base_model.sha256"] == expected_sha
    assert m["base.params"] == base_run["model"].num_params()
    assert m["base.vocab_size"] == VOCAB_SIZE and m["base.max_seq_len"] == 128
    assert m["registered_version"] == 1
    version = client.get_model_version(REGISTERED, "1")
    assert version.run_id == pre.info.run_id
    assert expected_sha[:16] in version.description
    assert [int(v.version) for v in client.search_model_versions(f"name = '{REGISTERED}'")] == [1]
    assert pre.data.tags["registered_model"] == f"{REGISTERED} v1"
    assert pre.data.tags["task.pretrain.import_base"] == "Completed"


def test_rerunning_the_import_forces_it(base_run):
    """Once per module is enough: the cache and --rerun do not depend on the format."""
    if base_run["fmt"] != "gguf":
        pytest.skip("checked on the GGUF run")
    run_dir, sets = base_run["run_dir"], _base_sets("gguf", base_run["path"])
    cached = _cli(run_dir, "--stage", "pretrain", *sets)
    assert cached.returncode == 0, cached.stderr[-3000:]
    states = json.loads((run_dir / "last_run.json").read_text())["stages"]["pretrain"]["states"]
    assert states == {"pretrain.import_base": "Cached"}
    forced = _cli(run_dir, "--stage", "pretrain", "--rerun", "pretrain.import_base", *sets)
    assert forced.returncode == 0, forced.stderr[-3000:]
    stage = json.loads((run_dir / "last_run.json").read_text())["stages"]["pretrain"]
    assert stage["states"] == {"pretrain.import_base": "Completed"}
    assert stage["registered_version"] == 2  # imported again, registered again
    version = base_run["client"].get_model_version(REGISTERED, "2")
    assert version.run_id == stage["mlflow_run_id"] != base_run["runs"]["pretrain"].info.run_id
