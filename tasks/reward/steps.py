"""Prefect tasks of the reward stage (RECIPE.md §5, §6): preference collection with the rule
annotator, the Helpfulness and Safety reward models, their evaluation (Table 8), and the
margin ablation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from prefect.logging import get_run_logger

from models.losses import margins_for
from models.reward import RewardModel
from models.seeding import seeded
from tasks.caching import cached_task
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import rank as launched_rank
from tasks.distributed.launch import run_ranks, start_ranks_here, step_log
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.judges.annotator import RuleAnnotator
from tasks.judges.toxicity import ToxicityConfig, make_scorer
from tasks.preferences import collect as pc
from tasks.records import dialogue_frame
from tasks.results import StepOutput, write_artifact
from tasks.reward.collection import collect_batches
from tasks.reward.config import RewardConfig, RewardModelConfig
from tasks.reward.data import PairBatches, data_mix, encode_pairs
from tasks.reward.evaluate import (
    accuracy_by_level,
    calibration_png,
    score_pairs,
    unsafe_recall_precision,
)
from tasks.tracking import InMemoryLogger, PrefixedLogger, attach_run, register_model
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.loop import train
from tasks.training.model_io import HEAD_FILE, export_model, load_model, load_reward_model
from tasks.training.rerun import set_aside_if_forced

PAIRS, PAIRS_EXCLUDED = "preference_pairs", "preference_excluded"


@cached_task("collect_preferences")
def collect_step(
    dialogues: Manifest,
    models: dict[str, str],
    tokenizer_model: str,
    cfg: RewardConfig,
    toxicity: ToxicityConfig,
    seed: int,
    data_dir: str,
    label_files_sha256: dict[str, str],
) -> StepOutput:
    """Prompts from the SFT train dialogues, two responses from two model variants at two
    temperatures, one judgement each from the rule annotator (a stand-in for people); then the
    pairs of any label files people collected. `label_files_sha256` lets the cache see a
    changed file."""
    c = cfg.collection
    annotator = RuleAnnotator(cfg.annotator, make_scorer(toxicity))
    rows, excluded, stats = collect_batches(
        read_dataset(dialogues).to_dicts(),
        models,
        tokenizer_model,
        c,
        annotator,
        seed,
        log=get_run_logger().info,
    )
    from_files, quarantined, file_stats = pc.read_label_files(c)
    rows += from_files
    stats.update(file_stats, quarantined=len(quarantined))
    return pairs_output(rows, excluded, quarantined, stats, data_dir)


def pairs_output(rows, excluded, quarantined, stats: dict, data_dir: str) -> StepOutput:
    """A collection's datasets (preference_pairs, preference_excluded, quarantine) and stats."""
    return StepOutput(
        outputs={
            "quarantine": write_dataset(
                dialogue_frame(quarantined, "quarantine"), "quarantine", Path(data_dir)
            ),
            PAIRS: write_dataset(dialogue_frame(rows, PAIRS), PAIRS, Path(data_dir)),
            PAIRS_EXCLUDED: write_dataset(
                dialogue_frame(excluded, PAIRS_EXCLUDED), PAIRS_EXCLUDED, Path(data_dir)
            ),
        },
        stats={f"collect.{k}": float(v) for k, v in stats.items()},
    )


def train_reward_model(
    pairs: Manifest,
    rm: str,
    rm_cfg: RewardModelConfig,
    sft_dir: str,
    tokenizer_model: str,
    safety_share: float,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
    label: str,
) -> tuple[dict, Path]:
    """Data mix -> chat-format pairs -> RewardModel from the SFT weights -> the shared loop.
    With `rm_cfg.training.launch` set to a launcher, the same function runs on N ranks
    (tasks/distributed/launch.py): rank 0 logs to MLflow and exports the model."""
    pairs = Manifest.model_validate(pairs)  # a dict where a launched rank calls it
    rm_cfg = RewardModelConfig.model_validate(rm_cfg)
    launch = rm_cfg.training.launch
    rank = launched_rank()
    key = parts_key(
        pairs.sha256, rm, rm_cfg.model_dump_json(), sha256_of(Path(sft_dir) / MODEL_FILE), str(seed)
    )
    out_dir = (
        Path(run_dir) / "artifacts" / "reward" / f"{label}-{key}"
    )  # keyed by inputs: resumable
    if start_ranks_here(launch):  # the Prefect task: start the ranks and wait
        set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
        stats, folder = run_ranks(
            "tasks.reward.steps:train_reward_model",
            {
                "pairs": pairs.model_dump(mode="json"),
                "rm": rm,
                "rm_cfg": rm_cfg.model_dump(mode="json"),
                "sft_dir": sft_dir,
                "tokenizer_model": tokenizer_model,
                "safety_share": safety_share,
                "seed": seed,
                "run_dir": run_dir,
                "mlflow_run_id": mlflow_run_id,
                "label": label,
            },
            launch,
            out_dir / "launch",
            log=step_log,
        )
        return stats, Path(folder)
    processor = load_tokenizer(tokenizer_model)
    rows, mix_stats = data_mix(
        read_dataset(pairs).to_dicts(), rm, seed, safety_share, rm_cfg.other_pairs
    )
    t = rm_cfg.training.train
    margins = margins_for([r["rating"] for r in rows], rm_cfg.margin).tolist()
    encoded, too_long, enc_stats = encode_pairs(rows, processor, t.seq_len, margins)
    batches = PairBatches(encoded, t.batch_size, t.seq_len, seed=t.seed)
    run_cfg = rm_cfg.training.resolve(len(encoded))
    with seeded(t.seed):  # the scalar head's initial weights: same seed, same model
        model = RewardModel.from_llama(
            load_model(Path(sft_dir)), aux_weight=rm_cfg.safety_aux_weight
        )
    if rank == 0:
        step_log(
            f"{rm} RM: {len(encoded)} pairs ({len(too_long)} too long), "
            f"{run_cfg.max_steps} steps, into {out_dir}"
        )
    if not launch.distributed:
        set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
    logger = attach_run(Path(run_dir), mlflow_run_id) if rank == 0 else InMemoryLogger()
    stats = train(model, batches, run_cfg, PrefixedLogger(logger, f"{label}/"), out_dir)
    folder = out_dir / "model"
    if rank == 0:
        export_model(Path(stats["checkpoint"]), folder)
        (folder / HEAD_FILE).write_text(
            json.dumps(
                {
                    "head": "reward",
                    "rm": rm,
                    "margin": rm_cfg.margin,
                    "safety_aux_weight": rm_cfg.safety_aux_weight,
                }
            )
        )
    out = {
        **{f"mix.{k}": v for k, v in mix_stats.items()},
        **{f"encode.{k}": v for k, v in enc_stats.items()},
        **{k: v for k, v in stats.items() if isinstance(v, (int, float))},
    }
    return {f"{label}.{k}": float(v) for k, v in out.items()}, folder


def _train_task(
    pairs, rm, cfg: RewardConfig, sft_dir, tokenizer_model, seed, run_dir, mlflow_run_id
):
    rm_cfg = getattr(cfg, rm)
    stats, folder = train_reward_model(
        pairs,
        rm,
        rm_cfg,
        sft_dir,
        tokenizer_model,
        cfg.safety_share,
        seed,
        run_dir,
        mlflow_run_id,
        f"rm_{rm}",
    )
    version = register_model(
        attach_run(Path(run_dir), mlflow_run_id),
        folder,
        rm_cfg.registered_model,
        f"{rm.capitalize()} reward model (Llama trunk from the SFT model, scalar "
        f"head), margin '{rm_cfg.margin}', trained {int(stats[f'rm_{rm}.steps'])} steps",
        tokenizer=tokenizer_model,
    )
    stats[f"rm_{rm}.registered_version"] = float(version)
    return StepOutput(stats=stats, models={"model": str(folder)})


@cached_task("train_helpfulness_rm", ignore=("mlflow_run_id",))
def train_helpfulness_step(
    pairs: Manifest,
    cfg: RewardConfig,
    sft_dir: str,
    tokenizer_model: str,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Helpfulness RM: all helpfulness pairs + as many safety pairs (§3.2.2)."""
    return _train_task(
        pairs, "helpfulness", cfg, sft_dir, tokenizer_model, seed, run_dir, mlflow_run_id
    )


@cached_task("train_safety_rm", ignore=("mlflow_run_id",))
def train_safety_step(
    pairs: Manifest,
    cfg: RewardConfig,
    sft_dir: str,
    tokenizer_model: str,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Safety RM: all safety pairs mixed 90/10 with helpfulness pairs, safety auxiliary loss."""
    return _train_task(pairs, "safety", cfg, sft_dir, tokenizer_model, seed, run_dir, mlflow_run_id)


def _test_scores(model: RewardModel, rows: list[dict], processor, seq_len: int):
    """Scores of the chosen and rejected responses of test pairs (pairs too long are skipped)."""
    encoded, _, _ = encode_pairs(rows, processor, seq_len, [0.0] * len(rows))
    kept = {e.pair_id for e in encoded}
    rows = [r for r in rows if r["pair_id"] in kept]
    r_c, r_r = score_pairs(model.scores, encoded)
    return rows, r_c, r_r


def evaluate_models(
    pairs: Manifest,
    models: dict[str, str],
    tokenizer_model: str,
    seq_len: int,
    thresholds: list[float],
    test_sets: tuple[str, ...] = ("helpfulness", "safety"),
) -> tuple[pl.DataFrame, list[dict], dict[str, bytes]]:
    """Table 8 (accuracy per rating level, per RM and test set), the Safety RM's unsafe-response
    recall/precision, and a calibration plot per RM against the annotator's scores."""
    processor = load_tokenizer(tokenizer_model)
    test = read_dataset(pairs).filter(pl.col("split") == "test").to_dicts()
    judged, safety_rows, plots = [], [], {}
    for rm, folder in models.items():
        model = load_reward_model(Path(folder))
        for test_set in test_sets:
            rows, r_c, r_r = _test_scores(
                model, [r for r in test if r["kind"] == test_set], processor, seq_len
            )
            judged += [
                {"rm": rm, "test_set": test_set, "rating": r["rating"], "correct": bool(c > j)}
                for r, c, j in zip(rows, r_c, r_r)
            ]
            if test_set == rm:
                scores = np.concatenate([r_c, r_r])
                annot = [r["chosen_score"] for r in rows] + [r["rejected_score"] for r in rows]
                plots[f"calibration_{rm}.png"] = calibration_png(
                    scores, np.asarray(annot, dtype=float), f"{rm} RM vs the rule annotator"
                )
                if rm == "safety":
                    unsafe = np.asarray(
                        [not r["chosen_safe"] for r in rows]
                        + [not r["rejected_safe"] for r in rows]
                    )
                    safety_rows = unsafe_recall_precision(scores, unsafe, tuple(thresholds))
    table = accuracy_by_level(
        pl.DataFrame(
            judged,
            schema={"rm": pl.Utf8, "test_set": pl.Utf8, "rating": pl.Utf8, "correct": pl.Boolean},
        )
    )
    return table, safety_rows, plots


@cached_task("evaluate_rms")
def evaluate_step(
    pairs: Manifest, models: dict[str, str], tokenizer_model: str, cfg: RewardConfig, run_dir: str
) -> StepOutput:
    seq_len = cfg.helpfulness.training.train.seq_len
    table, safety_rows, plots = evaluate_models(
        pairs, models, tokenizer_model, seq_len, cfg.thresholds
    )
    stats = {}
    for row in table.to_dicts():
        stats[f"eval.{row['rm']}_rm.{row['test_set']}.avg"] = row["avg"]
    for row in safety_rows:
        for k in ("recall", "precision"):
            if row[k] is not None:
                stats[f"eval.safety_rm.unsafe_{k}_at_{row['threshold']}"] = row[k]
    artifacts = {
        name: str(write_artifact(png, Path(run_dir), "reward", name)) for name, png in plots.items()
    }
    artifacts["table8.csv"] = str(
        write_artifact(table.write_csv().encode(), Path(run_dir), "reward", "table8.csv")
    )
    artifacts["safety_recall.json"] = str(
        write_artifact(
            json.dumps(safety_rows, indent=1).encode(),
            Path(run_dir),
            "reward",
            "safety_recall.json",
        )
    )
    get_run_logger().info("reward models, accuracy by rating level (Table 8):\n%s", table)
    return StepOutput(
        stats={k: float(v) for k, v in stats.items() if v is not None}, files=artifacts
    )


@cached_task("margin_ablation", ignore=("mlflow_run_id",))
def margin_ablation_step(
    pairs: Manifest,
    cfg: RewardConfig,
    sft_dir: str,
    tokenizer_model: str,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """The Helpfulness RM trained once per margin scheme (Table 28), on the same pairs."""
    tables, stats = [], {}
    seq_len = cfg.helpfulness.training.train.seq_len
    for scheme in cfg.margin_ablation:
        rm_cfg = cfg.helpfulness.model_copy(update={"margin": scheme})
        st, folder = train_reward_model(
            pairs,
            "helpfulness",
            rm_cfg,
            sft_dir,
            tokenizer_model,
            cfg.safety_share,
            seed,
            run_dir,
            mlflow_run_id,
            f"ablation_{scheme}",
        )
        table, _, _ = evaluate_models(
            pairs,
            {"helpfulness": str(folder)},
            tokenizer_model,
            seq_len,
            [0.5],
            test_sets=("helpfulness",),
        )
        tables.append(table.with_columns(pl.lit(scheme).alias("margin")))
        stats[f"ablation.{scheme}.avg"] = tables[-1]["avg"][0]
    table = pl.concat(tables) if tables else pl.DataFrame()
    path = write_artifact(
        table.write_csv().encode(), Path(run_dir), "reward", "margin_ablation.csv"
    )
    return StepOutput(
        stats={k: float(v) for k, v in stats.items() if v is not None},
        files={"margin_ablation.csv": str(path)},
    )
