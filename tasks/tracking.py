"""Tracking behind a small protocol: MLflow in runs, in-memory in tests of pure code.

The default store is SQLite plus an artifact folder under the run directory
(`MLFLOW_TRACKING_URI` overrides it). The pipeline is the parent run; each stage flow is a
nested run (tag `mlflow.parentRunId`) tagged with its Prefect flow-run id (and the flow run's
Prefect UI URL when there is a Prefect server). A stage run's tables, summary and a link to it
are also published as Prefect artifacts (tasks/prefect_artifacts.py). Runs are driven
through `MlflowClient` with explicit run ids rather than the fluent API's thread-local
"active run", so logging works from any thread Prefect runs code in.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

import polars as pl

from tasks import mlflow_runs, prefect_artifacts
from tasks.hashing import sha256_of
from tasks.io import Manifest, read_dataset
from tasks.results import StepOutput

PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value's length


class MetricLogger(Protocol):
    run_id: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_table(self, df: pl.DataFrame, name: str) -> None: ...
    def log_dataset(self, manifest: Manifest, context: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class InMemoryLogger:
    """Keeps everything in dicts: for tests of code that logs, and dry runs."""

    def __init__(self, run_id: str = "in-memory"):
        self.run_id = run_id
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.artifacts: list[tuple[Path, str | None]] = []
        self.tables: dict[str, pl.DataFrame] = {}
        self.datasets: list[tuple[Manifest, str]] = []
        self.tags: dict[str, str] = {}
        self.status: str | None = None

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            self.metrics.setdefault(key, []).append((step, float(value)))

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((Path(path), artifact_path))

    def log_table(self, df, name):
        self.tables[name] = df

    def log_dataset(self, manifest, context):
        self.datasets.append((manifest, context))

    def set_tags(self, tags):
        self.tags.update(tags)

    def close(self, status="FINISHED"):
        self.status = status


class MlflowLogger:
    """One MLflow run, addressed by id through `MlflowClient`. With `stage` (a stage's run,
    see `stage_run`), each logged table is also a Prefect table artifact `<stage>-<name>`."""

    def __init__(self, client, run_id: str, tables_dir: Path, stage: str | None = None):
        self.client = client
        self.run_id = run_id
        self._tables_dir = tables_dir
        self.stage = stage
        self.published_tables: list[str] = []  # artifact keys of the tables published

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_params(self, params):
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics, step=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path, artifact_path=None):
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_table(self, df, name):
        """A table as CSV (opens in the MLflow UI's artifact viewer and in a spreadsheet)."""
        folder = self._tables_dir / self.run_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.csv"
        df.write_csv(path)
        self.client.log_artifact(self.run_id, str(path), "tables")
        key = self.stage and prefect_artifacts.publish_table(self.stage, name, df)
        if key:
            self.published_tables.append(key)

    def log_dataset(self, manifest, context):
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        df = read_dataset(manifest)
        with warnings.catch_warnings():  # a file:// URI matches two equivalent local sources
            warnings.filterwarnings("ignore", message="The specified dataset source")
            dataset = mlflow.data.from_polars(
                df, source=manifest.uri, name=manifest.contract, digest=manifest.sha256[:16]
            )
        tags = [InputTag(key="mlflow.data.context", value=context)]
        self.client.log_inputs(
            self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)]
        )

    def set_tags(self, tags):
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def close(self, status="FINISHED"):
        self.client.set_terminated(self.run_id, status=status)


class PrefixedLogger:
    """A MetricLogger that prefixes metric and param names, so that several models trained in
    one stage (SFT then GAtt; two reward models) log into one MLflow run side by side."""

    def __init__(self, inner: MetricLogger, prefix: str):
        self.inner, self.prefix = inner, prefix

    def log_metrics(self, metrics, step=None):
        self.inner.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=step)

    def log_params(self, params):
        self.inner.log_params({self.prefix + k: v for k, v in params.items()})

    def log_artifact(self, path, artifact_path=None):
        self.inner.log_artifact(path, artifact_path or self.prefix.rstrip("/."))

    def __getattr__(self, name):
        return getattr(self.inner, name)


def tracking_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}"


def experiment_name(preset: str) -> str:
    return f"llama2-recipe-{preset}"


def open_run(
    run_dir: Path,
    preset: str,
    run_name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    description: str = "",
    continue_flow_run: bool = False,
) -> MlflowLogger:
    """Create a run (nested under `parent_run_id` if given) in the preset's experiment.

    Runs left RUNNING by a killed process are ended first (KILLED; see mlflow_runs.py), and a new
    top-level run says which of them it continues. With `continue_flow_run`, the run this
    Prefect flow run (tag `prefect.flow_run_id`) opened before, if any, is continued instead:
    a Prefect retry of a failed pipeline keeps one parent run."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(run_dir)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, run_dir, preset)
    tables = run_dir / "mlflow" / "tables"
    mlflow_runs.end_orphaned_runs(client, experiment_id)
    if continue_flow_run:
        earlier = mlflow_runs.find_flow_run_run(
            client, experiment_id, tags.get(mlflow_runs.FLOW_RUN_TAG), tags.get("stage", "")
        )
        if earlier is not None:
            mlflow_runs.reopen(client, earlier)
            return MlflowLogger(client, earlier.info.run_id, tables)
    all_tags = {"preset": preset, **tags, **mlflow_runs.owner_tags()}
    commit = git_commit()
    if commit:
        all_tags["mlflow.source.git.commit"] = commit
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    killed = None if parent_run_id else mlflow_runs.continued_run(client, experiment_id, all_tags)
    if killed is not None:
        all_tags[mlflow_runs.CONTINUES_TAG] = killed.info.run_id
        description += mlflow_runs.continues_note(killed)
    if description:
        all_tags["mlflow.note.content"] = description
    run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    if killed is not None:
        client.set_tag(killed.info.run_id, mlflow_runs.CONTINUED_BY_TAG, run.info.run_id)
    return MlflowLogger(client, run.info.run_id, tables)


def _experiment_id(client, run_dir: Path, preset: str) -> str:
    name = experiment_name(preset)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = (run_dir / "mlflow" / "artifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifacts.as_uri())


def attach_run(run_dir: Path, run_id: str) -> MlflowLogger:
    """A logger for an existing run (e.g. a training task logging into its stage's run)."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(run_dir)
    mlflow.set_tracking_uri(uri)
    return MlflowLogger(MlflowClient(uri), run_id, run_dir / "mlflow" / "tables")


def register_model(
    logger: MlflowLogger,
    folder: Path,
    name: str,
    description: str,
    tokenizer: str | Path | None = None,
) -> str:
    """Log a model folder into the run at `models/<name>/<digest>` and register it as a new
    version of `name`; returns the version number.

    With `tokenizer` (every stage passes its own), what is logged is the folder's Hugging Face
    export (tasks/training/hf_export.py: config.json, model.safetensors, generation_config.json,
    tokenizer files with the Llama 2 chat template), so `models:/<name>/<version>` loads in
    transformers as is, and in the recipe through `load_model` / `load_reward_model`. Without
    it, the folder itself (tests of the registry alone).

    The path is content-addressed (digest of the logged files), so every version has its own
    folder that no later registration overwrites, even when one run registers several models
    (the two reward models) or one model several times (an RLHF round each)."""
    from tasks.training.hf_export import export_hf_folder  # lazy: tasks.training imports us

    folder = Path(folder)
    tags = {"trained_folder": str(folder.resolve())}
    weights = folder / "model.safetensors"
    if weights.exists():
        tags["weights_sha256"] = sha256_of(weights)  # the trained folder's weights
    with tempfile.TemporaryDirectory(prefix="hf-export-") as tmp:
        logged = folder
        if tokenizer is not None:
            logged = export_hf_folder(folder, tokenizer, Path(tmp) / "export")
            tags.update(export="huggingface", tokenizer=str(tokenizer))
            tags["export_weights_sha256"] = sha256_of(logged / "model.safetensors")
        digest = folder_sha256(logged)
        tags["folder_sha256"] = digest
        artifact_path = f"models/{name}/{digest[:16]}"
        logger.client.log_artifacts(logger.run_id, str(logged), artifact_path)
    return _new_version(logger, name, description, artifact_path, tags)


def _new_version(
    logger: MlflowLogger, name: str, description: str, artifact_path: str, tags: dict
) -> str:
    from mlflow.exceptions import MlflowException

    client = logger.client
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    version = client.create_model_version(
        name,
        source=f"{logger.artifact_uri}/{artifact_path}",
        run_id=logger.run_id,
        description=description,
        tags=tags,
    )
    return version.version


def folder_sha256(folder: Path) -> str:
    """One digest over a folder's files (relative names and contents), in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(sha256_of(path).encode() + b"\0")
    return digest.hexdigest()


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."


@contextmanager
def stage_run(
    cfg, stage: str, parent_run_id: str | None, flow_run_id: str | None, description: str
) -> Iterator[MlflowLogger]:
    """A nested MLflow run for one stage; closed FAILED if the stage raises. Inside a Prefect
    flow run, the stage's summary and a link to the run are published as artifacts on close."""
    flow_tags = prefect_artifacts.flow_run_tags(flow_run_id)
    logger = open_run(
        cfg.run_dir,
        cfg.preset,
        run_name=stage,
        tags={
            "stage": stage,
            **flow_tags,
            mlflow_runs.CONFIG_TAG: mlflow_runs.config_sha256(cfg),
        },
        parent_run_id=parent_run_id,
        description=description,
        continue_flow_run=parent_run_id is None,  # a retried stage flow run keeps its run
    )
    logger.stage = stage
    url_tag = prefect_artifacts.FLOW_RUN_URL_TAG
    if url_tag in flow_tags:  # a continued run (a Prefect retry) keeps its link up to date
        logger.set_tags({url_tag: flow_tags[url_tag]})
    try:
        yield logger
    except BaseException:
        logger.close("FAILED")
        prefect_artifacts.publish_stage(logger, stage, description, "FAILED")
        raise
    logger.close("FINISHED")
    prefect_artifacts.publish_stage(logger, stage, description, "FINISHED")


def log_step(
    logger: MetricLogger,
    output: StepOutput,
    datasets: dict[str, str] | None = None,
    artifact_path: str | None = None,
) -> None:
    """Log a task's stats, files and (selected) datasets with their MLflow context. Model
    folders are not logged here: the register task logs each under its own path."""
    logger.log_metrics(output.stats)
    for path in output.files.values():
        logger.log_artifact(Path(path), artifact_path)
    for name, context in (datasets or {}).items():
        logger.log_dataset(output.outputs[name], context)
