"""Prefect tasks of the RLHF stage (RECIPE.md §7): per round, fresh preferences from the newest
policy and refreshed reward models, rejection sampling and its fine-tuning, PPO from round
`ppo_from` on, the round's registered model; after the rounds, the per-round table.

Every task is cached on its inputs (model folders by path, which are keyed by their own inputs;
datasets by content hash), so a run interrupted in round 3 resumes there: rounds 1 and 2 are
cache hits. Each task takes only its own part of the config, so changing, say, the PPO settings
re-runs PPO and what follows it, not the rejection sampling before it. Training output folders
are keyed the same way, so a killed fine-tuning resumes from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.chat.config import FormatConfig
from tasks.chat.sharded import AnswerJob, answer_jobs
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import step_log
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.judges.scoring import annotator_scores, load_scorer, rule_annotator
from tasks.judges.toxicity import ToxicityConfig
from tasks.records import dialogue_frame
from tasks.results import StepOutput, write_artifact
from tasks.reward.collection import collect_batches
from tasks.reward.config import CollectionConfig, RewardConfig
from tasks.reward.steps import PAIRS, PAIRS_EXCLUDED, train_reward_model
from tasks.rlhf import rejection
from tasks.rlhf.config import RejectionConfig
from tasks.rlhf.rounds import (
    as_prompt,
    best_examples,
    sample_rows,
)
from tasks.tracking import PrefixedLogger, attach_run, register_model
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.finetune import FinetuneConfig, finetune_on

SAMPLES = "rejection_samples"


# --- 1. fresh preferences and refreshed reward models (rounds >= 2) -------------------------


def next_batch(pairs: Manifest) -> int:
    """The batch number a new collection appended to `pairs` starts at."""
    earlier = read_dataset(pairs)
    return int(earlier["batch"].max()) + 1 if earlier.height else 0


@cached_task("refresh_reward_models", ignore=("mlflow_run_id",))
def refresh_step(
    round_: int,
    models: dict[str, str],
    pairs: Manifest,
    dialogues: Manifest,
    tokenizer_model: str,
    sft_dir: str,
    reward: RewardConfig,
    collection: CollectionConfig,
    toxicity: ToxicityConfig,
    seed: int,
    data_dir: str,
    run_dir: str,
    mlflow_run_id: str,
    labelled: Manifest | None = None,
    labelled_excluded: Manifest | None = None,
) -> StepOutput:
    """New comparisons of the newest policy's answers (against the models `cfg.collection`
    names) judged by the rule annotator, appended to every earlier batch; then both reward
    models retrained from the SFT weights on all of it (paper: the RMs are refreshed on the
    newest batches before each round), each registered as a new version. With `labelled` (and
    `labelled_excluded`): the new batch people labelled (flows/people.py) instead."""
    c = collection
    earlier = read_dataset(pairs)
    first_batch = next_batch(pairs)
    if labelled is not None:
        rows = read_dataset(labelled).to_dicts()
        excluded = read_dataset(labelled_excluded).to_dicts() if labelled_excluded else []
        collected = {"pairs": len(rows), "excluded": len(excluded)}
    else:
        annotator = rule_annotator(reward.annotator, toxicity)
        rows, excluded, collected = collect_batches(
            read_dataset(dialogues).to_dicts(),
            models,
            tokenizer_model,
            c,
            annotator,
            seed,
            first_batch,
            log=get_run_logger().info,
        )
    stats = {f"collect.{k}": v for k, v in collected.items()}
    get_run_logger().info(
        "RLHF-V%d: %d new preference pairs (%d excluded) from %s",
        round_,
        len(rows),
        len(excluded),
        ", ".join(c.variants),
    )
    merged = pl.concat([earlier, dialogue_frame(rows, PAIRS)]) if rows else earlier
    pairs_out = write_dataset(merged, PAIRS, Path(data_dir))
    excluded_out = write_dataset(
        dialogue_frame(excluded, PAIRS_EXCLUDED), PAIRS_EXCLUDED, Path(data_dir)
    )
    logger = attach_run(Path(run_dir), mlflow_run_id)
    folders = {}
    for rm in ("helpfulness", "safety"):
        rm_cfg = getattr(reward, rm)
        st, folder = train_reward_model(
            pairs_out,
            rm,
            rm_cfg,
            sft_dir,
            tokenizer_model,
            reward.safety_share,
            seed,
            run_dir,
            mlflow_run_id,
            f"v{round_}_rm_{rm}",
        )
        stats.update(st)
        folders[rm] = str(folder)
        stats[f"v{round_}_rm_{rm}.registered_version"] = float(
            register_model(
                logger,
                folder,
                rm_cfg.registered_model,
                f"{rm.capitalize()} reward model refreshed for RLHF-V{round_} "
                f"on {merged.height} pairs "
                f"(batches 0..{first_batch + c.batches - 1})",
                tokenizer=tokenizer_model,
            )
        )
    stats["pairs_total"] = merged.height
    return StepOutput(
        outputs={PAIRS: pairs_out, PAIRS_EXCLUDED: excluded_out},
        stats={k: float(v) for k, v in stats.items()},
        models=folders,
    )


# --- 2. rejection sampling -------------------------------------------------------------------


@cached_task("rejection_sample")
def rejection_sample_step(
    round_: int,
    policy_dir: str,
    rms: dict[str, str],
    prompts: list[dict],
    earlier: list[Manifest],
    tokenizer_model: str,
    rm_seq_len: int,
    annotator_cfg: RuleAnnotatorConfig,
    rejection_cfg: RejectionConfig,
    rs_pool_from: int,
    seed: int,
    data_dir: str,
    run_dir: str,
    toxicity_cfg: ToxicityConfig = ToxicityConfig(),
) -> StepOutput:
    """K answers per prompt from the round's starting policy, scored by the round's RMs; from
    `rs_pool_from` on, the earlier rounds' best answers re-scored beside them; the best per
    prompt marked. Logs the Fig. 7 curve (max and median R_c over the first N samples) and how
    the pick compares by the rule annotator (no noise; `rejection.annotator_agreement`)."""
    r = rejection_cfg
    processor = load_tokenizer(tokenizer_model)
    contexts = [(p["system"], p["turns"]) for p in prompts]
    jobs = [
        AnswerJob(
            model_dir=policy_dir,
            contexts=contexts,
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            seed=seed + 7919 * round_ + 104729 * k,
            batch_size=r.batch_size,
        )
        for k in range(r.k)
    ]
    answered = answer_jobs(  # on N ranks where rejection.launch says so: all k in one launch
        jobs,
        tokenizer_model,
        r.launch,
        Path(run_dir) / "artifacts" / "rlhf" / f"v{round_}-rs-answering",
        step_log,
        lambda k: step_log(
            f"RLHF-V{round_} rejection sampling: sample {k + 1}/{r.k} for {len(prompts)} prompts"
        ),
    )
    answers = [texts for texts, _ in answered]
    ended = {
        (p["prompt_id"], k): e
        for k, (_, done) in enumerate(answered)
        for p, e in zip(prompts, done)
    }
    rows, skipped = sample_rows(round_, prompts, answers, r.temperature)
    for row in rows:
        row["ended"] = ended[(row["prompt_id"], row["sample"])]
    earlier_best = [
        row for m in earlier for row in read_dataset(m).filter(pl.col("is_best")).to_dicts()
    ]
    rows += rejection.pooled_candidates(
        round_, earlier_best, {row["prompt_id"] for row in rows}, rs_pool_from
    )
    scores = load_scorer(rms, processor, rm_seq_len).score(
        [as_prompt(x) for x in rows], [x["response"] for x in rows], [x["ended"] for x in rows]
    )
    for i, row in enumerate(rows):
        row.update(
            r_h=float(scores["r_h"][i]), r_s=float(scores["r_s"][i]), r_c=float(scores["r_c"][i])
        )
    rows = rejection.mark_best(rows)
    judged = annotator_scores(
        rule_annotator(annotator_cfg, toxicity_cfg, noise=False),
        [as_prompt(x) for x in rows],
        [x["response"] for x in rows],
    )
    agreement = rejection.annotator_agreement(rows, judged.tolist())
    no_best = rejection.all_cut_off(rows)
    if no_best:
        get_run_logger().warning(
            "RLHF-V%d rejection sampling: all samples of %d prompts were cut off at "
            "max_new_tokens %d; their best is a cut-off answer: %s",
            round_,
            len(no_best),
            r.max_new_tokens,
            ", ".join(no_best[:10]) + (" ..." if len(no_best) > 10 else ""),
        )
    curve = rejection.best_of_n_curve(rows)
    best = [x for x in rows if x["is_best"]]
    stats = {
        "prompts": len(prompts),
        "prompts_skipped_too_long": skipped,
        "samples": len(rows),
        # of this round's own samples (pooled rows are earlier bests: ended by construction)
        "cutoff_share": rejection.cutoff_share([x for x in rows if x["origin_round"] == round_]),
        "prompts_all_cut_off": len(no_best),
        "pooled_rows": sum(x["origin_round"] < round_ for x in rows),
        "best_from_earlier_rounds": sum(x["origin_round"] < round_ for x in best),
        "best_r_c_mean": float(np.mean([x["r_c"] for x in best])) if best else 0.0,
        "all_r_c_mean": float(np.mean([x["r_c"] for x in rows])) if rows else 0.0,
        **{f"annotator.{k}": v for k, v in agreement.items()},
    }
    if curve:
        stats.update(
            {
                "fig7.max_at_1": curve[0]["max"],
                f"fig7.max_at_{curve[-1]['n']}": curve[-1]["max"],
                f"fig7.median_at_{curve[-1]['n']}": curve[-1]["median"],
            }
        )
    name = f"fig7_rejection_sampling_v{round_}"
    artifacts = {
        "curve.csv": str(
            write_artifact(
                pl.DataFrame(curve).write_csv().encode(), Path(run_dir), "rlhf", f"{name}.csv"
            )
        ),
        "curve.png": str(
            write_artifact(
                rejection.curve_png({f"V{round_}": curve}), Path(run_dir), "rlhf", f"{name}.png"
            )
        ),
    }
    get_run_logger().info(
        "RLHF-V%d rejection sampling: mean R_c %.3f over all samples, %.3f of the best",
        round_,
        stats["all_r_c_mean"],
        stats["best_r_c_mean"],
    )
    for axis in ("helpfulness", "safety"):
        if f"{axis}.prompts" in agreement:  # every prompt has its own samples and one pick
            get_run_logger().info(
                "RLHF-V%d rejection sampling, %s prompts, by the rule annotator: the RMs' pick "
                "%.3f, a random sample %.3f, the best sample %.3f; R_c orders %s of the sample "
                "pairs it tells apart as it does",
                round_,
                axis,
                agreement[f"{axis}.pick"],
                agreement[f"{axis}.sample"],
                agreement[f"{axis}.best"],
                f"{100 * agreement[f'{axis}.concordance']:.0f} %"
                if f"{axis}.concordance" in agreement
                else "none",
            )
    return StepOutput(
        outputs={SAMPLES: write_dataset(dialogue_frame(rows, SAMPLES), SAMPLES, Path(data_dir))},
        stats={f"rs.{k}": float(v) for k, v in stats.items()},
        files=artifacts,
    )


@cached_task("rs_finetune", ignore=("mlflow_run_id",))
def rs_finetune_step(
    round_: int,
    policy_dir: str,
    samples: Manifest,
    tokenizer_model: str,
    ft: FinetuneConfig,
    fmt: FormatConfig,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Fine-tune the round's starting policy on the best answers, with the shared loop as in SFT."""
    processor = load_tokenizer(tokenizer_model)
    examples, stats = best_examples(read_dataset(samples), processor, ft.train.seq_len)
    if not examples.height:
        raise ValueError(f"RLHF-V{round_}: no usable best answer to fine-tune on (stats {stats})")
    key = parts_key(
        samples.sha256,
        sha256_of(Path(policy_dir) / MODEL_FILE),
        ft.model_dump_json(),
        fmt.model_dump_json(),
    )
    out_dir = Path(run_dir) / "artifacts" / "rlhf" / f"v{round_}-rs-{key}"
    get_run_logger().info(
        "RLHF-V%d: fine-tuning on %d best answers into %s", round_, examples.height, out_dir
    )
    logger = PrefixedLogger(attach_run(Path(run_dir), mlflow_run_id), "rs_finetune/")
    loop, folder = finetune_on(
        examples,
        policy_dir,
        ft,
        fmt,
        processor,
        out_dir,
        logger,
        tracking=(run_dir, mlflow_run_id, "rs_finetune/"),
    )
    out = {**stats, **loop}
    return StepOutput(
        stats={f"rs_finetune.{k}": float(v) for k, v in out.items()}, models={"model": str(folder)}
    )
