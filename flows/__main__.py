"""Command line: run the pipeline or one stage, force tasks to re-run, list tasks.

    python -m flows run --preset demo
    python -m flows run --preset tiny --stage corpus --rerun corpus.quality
    python -m flows run --preset demo --set corpus.quality.min_words=30
    python -m flows tasks
    python -m flows retry <flow-run-id>

Prefect's settings are read when it is imported, so the environment (PREFECT_HOME under the
run directory, analytics off) is set up before the flows are imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flows.dag import EDGES, STAGES, expand_reruns
from tasks.config import ConfigError, load_config
from tasks.runtime import PROJECT_ROOT, configure_environment, default_run_dir

if TYPE_CHECKING:
    from flows.results import PipelineResult

KEY_METRICS = (
    "rows_in",
    "rows_kept",
    "rows_excluded",
    "rows_quarantined",
    "toxicity.share_toxic",
    "toxicity.sampled_docs",
    "eval.bytes_per_token",
    "eval.roundtrip_failures",
    "train.vocab_size",
    "train.val_loss",
    "train.val_ppl",
    "train.tokens_per_s",
    "train.mfu",
    "curate.dialogues_kept",
    "tokenize.examples",
    "base.val_loss",
    "gatt.dialogues_kept",
    "gatt.val_loss",
    "registered_version",
    "collect.pairs",
    "eval.helpfulness_rm.helpfulness.avg",
    "eval.safety_rm.safety.avg",
    "eval.sft.mean_r_c",
    "eval.final.mean_r_c",
    "eval.final.kl_to_sft",
    "eval.final.helpfulness_win_rate",
    "eval.final.safety_win_rate",
    "distill.kept",
    "distill.rows",
    "distill.kept_delta_mean",
    "sft.violation_annotator_pct",
    "distilled.violation_annotator_pct",
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tasks":
        for name, parents in EDGES.items():
            print(f"{name:32s} <- {', '.join(parents) or '(sources)'}")
        return 0
    default_dir = default_run_dir()  # before configure_environment exports the config's
    if args.command == "retry":
        return retry(args.flow_run_id, Path(args.run_dir or default_dir), default_dir)
    try:
        cfg = load_config(args.preset, args.set)
        expand_reruns(args.rerun, base_model=cfg.base_model is not None)
        if cfg.base_model is not None and args.stage == "tokenizer":
            raise ValueError(
                f"preset {cfg.preset!r} sets base_model: there is no tokenizer stage to run "
                "(the base model's own tokenizer is imported by the pretrain stage)"
            )
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_environment(cfg.run_dir, cfg.threads)
    flow = _flows()[args.stage]
    started = time.perf_counter()
    _console_setup()
    state = flow(preset=args.preset, overrides=args.set, rerun=args.rerun, return_state=True)
    return _finish(state, args.stage, cfg, started, default_dir)


def retry(flow_run_id: str, run_dir: Path, default_dir: Path) -> int:
    """Prefect's retry of a failed flow run, in this project's environment (PREFECT_HOME is under
    the run directory): completed tasks come from cache, so it resumes at the failed task."""
    run_dir = configure_environment(run_dir)
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_engine import run_flow
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(UUID(flow_run_id))
        except (ValueError, ObjectNotFound):
            print(
                f"error: no flow run {flow_run_id} in {run_dir / 'prefect'}; "
                "if the run used another run directory, pass it with --run-dir",
                file=sys.stderr,
            )
            return 2
        name = client.read_flow(flow_run.flow_id).name
        if name not in _flows() or flow_run.parent_task_run_id:
            print(
                f"error: flow run {flow_run_id} is '{name}', part of a larger run; retry the "
                "top-level flow run (the id a failed run printed)",
                file=sys.stderr,
            )
            return 2
        if flow_run.state is None or not flow_run.state.is_final():
            print(
                f"error: flow run {flow_run_id} is "
                f"{flow_run.state.name if flow_run.state else 'new'}; "
                "only a finished flow run (failed, crashed, cancelled, completed) can be retried",
                file=sys.stderr,
            )
            return 2
        client.set_flow_run_state(
            flow_run.id, Scheduled(message="python -m flows retry"), force=True
        )
        if flow_run.deployment_id:  # a worker runs it, where the deployment says
            print(f"flow run {flow_run_id} is scheduled again; the work pool's worker will run it")
            return 0
        flow_run = client.read_flow_run(flow_run.id)
    params = flow_run.parameters
    cfg = load_config(params.get("preset", "demo"), params.get("overrides") or [])
    print(f"retrying flow run {flow_run_id} ({name}, preset {cfg.preset}) here")
    started = time.perf_counter()
    _console_setup()
    state = run_flow(_flows()[name], flow_run=flow_run, parameters=params, return_type="state")
    return _finish(state, name, cfg, started, default_dir)


def _flows() -> dict:
    from flows.corpus import corpus_flow
    from flows.distill import distill_flow
    from flows.evaluate import evaluate_flow
    from flows.pipeline import pipeline_flow
    from flows.pretrain import pretrain_flow
    from flows.reward import reward_flow
    from flows.rlhf import rlhf_flow
    from flows.sft import sft_flow
    from flows.tokenizer import tokenizer_flow

    return {
        "pipeline": pipeline_flow,
        "corpus": corpus_flow,
        "tokenizer": tokenizer_flow,
        "pretrain": pretrain_flow,
        "sft": sft_flow,
        "reward": reward_flow,
        "rlhf": rlhf_flow,
        "distill": distill_flow,
        "evaluate": evaluate_flow,
    }


def _console_setup() -> None:
    from flows.failures import exit_on_sigterm, quiet_console_tracebacks

    quiet_console_tracebacks()
    exit_on_sigterm()


def _finish(state, stage: str, cfg, started: float, default_dir: Path) -> int:
    """Summary and 0 for a completed flow run; the retry command and 1 for a failed one."""
    from flows.failures import report_failure
    from flows.results import PipelineResult

    if not state.is_completed():
        report_failure(state, stage, cfg.run_dir, default_dir)
        return 1
    result = state.result()
    if stage != "pipeline":  # one stage's result, summarised like the pipeline's
        result = PipelineResult(preset=cfg.preset, **{stage: result})
    seconds = round(time.perf_counter() - started, 1)
    summary = {**result.summary(), "seconds": seconds}
    (cfg.run_dir / "last_run.json").write_text(json.dumps(summary, indent=2))
    print_summary(result, seconds, cfg)
    return 0


def print_summary(result: PipelineResult, seconds: float, cfg) -> None:
    """The stages' task counts and key metrics, and where the run's records are."""
    from mlflow import MlflowClient
    from rich.console import Console
    from rich.table import Table

    from tasks.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg.run_dir))
    table = Table(title=f"Llama 2 recipe, preset '{cfg.preset}', {seconds} s")
    for col in ("stage", "tasks run", "tasks cached", "key metrics"):
        table.add_column(col)
    stages = result.stages()
    for stage, out in stages.items():
        states = list(out.states.values())
        metrics = client.get_run(out.mlflow_run_id).data.metrics
        shown = ", ".join(f"{k}={_fmt(metrics[k])}" for k in KEY_METRICS if k in metrics)
        table.add_row(stage, str(states.count("Completed")), str(states.count("Cached")), shown)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    uri = tracking_uri(cfg.run_dir)
    run_id = result.mlflow_run_id or next(iter(stages.values())).mlflow_run_id
    experiment_id = client.get_run(run_id).info.experiment_id
    # workflowType: MLflow 3 opens an experiment in its GenAI (traces) view unless told otherwise
    view = "?workflowType=machine_learning"
    runs_page = f"#/experiments/{experiment_id}/runs{view}"
    run_page = f"#/experiments/{experiment_id}/runs/{run_id}{view}"
    if uri.startswith("http"):
        base = uri.rstrip("/")
    else:
        base = "http://127.0.0.1:5000"
        ui = (
            "make ui"
            if cfg.run_dir == PROJECT_ROOT / "runs"
            else f"make ui RECIPE_RUN_DIR={cfg.run_dir}"
        )
        console.print(f"MLflow store: {uri}  ({ui} serves it on {base})")
    console.print(f"MLflow runs:  {base}/{runs_page}")
    console.print(f"MLflow run:   {base}/{run_page}")
    if result.report:
        console.print(f"Report:       {result.report}  (open it in a browser)")
    console.print(f"Datasets:     {cfg.data_dir}")
    console.print(f"Summary JSON: {cfg.run_dir / 'last_run.json'}")


def _fmt(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4g}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline or one stage")
    run.add_argument(
        "--preset", default="demo", help="configs/<preset>.yaml or a path (default demo)"
    )
    run.add_argument(
        "--stage",
        default="pipeline",
        choices=["pipeline", *STAGES],
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. corpus.quality.min_words=30",
    )
    run.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="NAME",
        help="force a stage or task (and everything downstream) to re-run; "
        "see `python -m flows tasks`",
    )
    sub.add_parser("tasks", help="list the tasks and what each reads")
    retry = sub.add_parser("retry", help="retry a failed flow run: completed tasks come from cache")
    retry.add_argument("flow_run_id", help="the id a failed run printed")
    retry.add_argument(
        "--run-dir", help="the run directory of that run (default: $RECIPE_RUN_DIR or runs/)"
    )
    return p


if __name__ == "__main__":
    sys.exit(main())
