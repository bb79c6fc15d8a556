"""Command line: run the pipeline or one stage, force tasks to re-run, list tasks.

    python -m flows run --preset demo
    python -m flows run --preset tiny --stage corpus --rerun corpus.quality
    python -m flows run --preset demo --set corpus.quality.min_words=30
    python -m flows tasks

Prefect's settings are read when it is imported, so the environment (PREFECT_HOME under the
run directory, analytics off) is set up before the flows are imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tasks.config import ConfigError, load_config
from tasks.runtime import configure_environment

KEY_METRICS = (
    "rows_in", "rows_kept", "rows_excluded", "rows_quarantined",
    "toxicity.share_toxic", "toxicity.sampled_docs", "eval.bytes_per_token",
    "eval.roundtrip_failures", "train.vocab_size", "train.val_loss", "train.val_ppl",
    "train.tokens_per_s", "train.mfu", "curate.dialogues_kept", "tokenize.examples",
    "base.val_loss", "gatt.dialogues_kept", "gatt.val_loss", "registered_version",
    "collect.pairs", "eval.helpfulness_rm.helpfulness.avg", "eval.safety_rm.safety.avg",
    "eval.sft.mean_r_c", "eval.final.mean_r_c", "eval.final.kl_to_sft",
    "eval.final.helpfulness_win_rate", "eval.final.safety_win_rate", "distill.kept", "distill.rows",
    "distill.kept_delta_mean", "sft.violation_annotator_pct", "distilled.violation_annotator_pct",
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "tasks":
        from flows.dag import EDGES

        for name, parents in EDGES.items():
            print(f"{name:32s} <- {', '.join(parents) or '(sources)'}")
        return 0
    try:
        cfg = load_config(args.preset, args.set)
        from flows.dag import expand_reruns

        expand_reruns(args.rerun)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_environment(cfg.run_dir, cfg.threads)
    from flows.corpus import corpus_flow
    from flows.distill import distill_flow
    from flows.evaluate import evaluate_flow
    from flows.pipeline import pipeline_flow
    from flows.pretrain import pretrain_flow
    from flows.reward import reward_flow
    from flows.rlhf import rlhf_flow
    from flows.sft import sft_flow
    from flows.tokenizer import tokenizer_flow

    flow = {"pipeline": pipeline_flow, "corpus": corpus_flow, "tokenizer": tokenizer_flow,
            "pretrain": pretrain_flow, "sft": sft_flow, "reward": reward_flow,
            "rlhf": rlhf_flow, "distill": distill_flow, "evaluate": evaluate_flow}[args.stage]
    started = time.perf_counter()
    result = flow(preset=args.preset, overrides=args.set, rerun=args.rerun)
    seconds = time.perf_counter() - started
    if args.stage != "pipeline":
        result = {"preset": cfg.preset, "stages": {args.stage: result}}
    result["seconds"] = round(seconds, 1)
    (cfg.run_dir / "last_run.json").write_text(json.dumps(result, indent=2, default=str))
    print_summary(result, cfg)
    return 0


def print_summary(result: dict, cfg) -> None:
    from mlflow import MlflowClient
    from rich.console import Console
    from rich.table import Table

    from tasks.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg.run_dir))
    table = Table(title=f"Llama 2 recipe, preset '{cfg.preset}', {result['seconds']} s")
    for col in ("stage", "tasks run", "tasks cached", "key metrics"):
        table.add_column(col)
    for stage, out in result["stages"].items():
        states = list(out["states"].values())
        metrics = client.get_run(out["mlflow_run_id"]).data.metrics
        shown = ", ".join(f"{k}={_fmt(metrics[k])}" for k in KEY_METRICS if k in metrics)
        table.add_row(stage, str(states.count("Completed")), str(states.count("Cached")), shown)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    uri = tracking_uri(cfg.run_dir)
    run_id = result.get("mlflow_run_id") or next(iter(result["stages"].values()))["mlflow_run_id"]
    experiment_id = client.get_run(run_id).info.experiment_id
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if uri.startswith("http"):
        console.print(f"MLflow run:   {uri.rstrip('/')}/{page}")
    else:
        console.print(f"MLflow store: {uri}")
        console.print(f"MLflow run:   make ui, then open http://127.0.0.1:5000/{page}")
    if result.get("report"):
        console.print(f"Report:       {result['report']}  (open it in a browser)")
    console.print(f"Datasets:     {cfg.data_dir}")
    console.print(f"Summary JSON: {cfg.run_dir / 'last_run.json'}")


def _fmt(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4g}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline or one stage")
    run.add_argument("--preset", default="demo", help="configs/<preset>.yaml or a path (default demo)")
    run.add_argument("--stage", default="pipeline",
                     choices=["pipeline", "corpus", "tokenizer", "pretrain", "sft", "reward", "rlhf",
                              "distill", "evaluate"])
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. corpus.quality.min_words=30")
    run.add_argument("--rerun", action="append", default=[], metavar="NAME",
                     help="force a stage or task (and everything downstream) to re-run; "
                          "see `python -m flows tasks`")
    sub.add_parser("tasks", help="list the tasks and what each reads")
    return p


if __name__ == "__main__":
    sys.exit(main())
