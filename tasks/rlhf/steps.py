"""Prefect tasks of the RLHF stage (RECIPE.md §7): per round, fresh preferences from the newest
policy and refreshed reward models, rejection sampling and its fine-tuning, PPO from round
`ppo_from` on, the round's registered model; after the rounds, the per-round table.

Every task is cached on its inputs (model folders by path, which are keyed by their own inputs;
datasets by content hash), so a run interrupted in round 3 resumes there: rounds 1 and 2 are
cache hits. Each task takes only its own part of the config, so changing, say, the PPO settings
re-runs PPO and what follows it, not the rejection sampling before it. Training output folders are keyed the same way, so a killed fine-tuning resumes
from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import polars as pl
import sentencepiece as spm
import torch
from prefect import task
from prefect.logging import get_run_logger

from tasks.caching import code_and_inputs
from tasks.judges.toxicity import ToxicityConfig
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.chat.prompt import prompt_pool
from tasks.plots import figure_png, pyplot
from tasks.persist import STEP_OUTPUT_JSON
from tasks.results import StepOutput, write_artifact
from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.reward.collection import collect_batches
from tasks.reward.config import CollectionConfig, RewardConfig
from tasks.reward.steps import (PAIRS, PAIRS_EXCLUDED, train_reward_model)
from tasks.rlhf import rejection
from tasks.rlhf.config import RejectionConfig, RlhfConfig, RoundEvalConfig
from tasks.rlhf.ppo import PPOConfig, train_ppo
from tasks.judges.scoring import annotator_scores, kl_along, load_scorer, rule_annotator, win_rates
from tasks.records import dialogue_frame
from tasks.chat.format import prompt_tokens
from tasks.chat.config import FormatConfig
from tasks.training.finetune import FinetuneConfig
from tasks.training.model_io import load_model
from tasks.chat.answer import make_answer_fn
from tasks.tracking import PrefixedLogger, attach_run, register_model
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.finetune import answer_examples, finetune_on
from tasks.training.model_io import save_model_folder
from tasks.training.rerun import set_aside_if_forced

SAMPLES, EVAL = "rejection_samples", "rlhf_eval"
PROMPT_KEYS = ("prompt_id", "system", "turns", "is_safety", "category", "risk_category", "source",
               "reference")


def _draw(pool: dict[str, list[dict]], counts, rng: random.Random, exclude: set[str] = frozenset()
          ) -> list[dict]:
    out = []
    for kind in ("helpfulness", "safety"):
        candidates = [p for p in pool[kind] if p["prompt_id"] not in exclude]
        out += rng.sample(candidates, min(getattr(counts, kind), len(candidates)))
    return out


def prompt_sets(dialogues: list[dict], cfg: RlhfConfig, seed: int) -> dict[str, list[dict]]:
    """The stage's prompt sets, seeded: `rs` (rejection sampling, the same every round), `ppo`
    and `validation` (PPO early stopping; disjoint from `ppo`) from the SFT train dialogues;
    `eval` (the per-round table) from the held-out ones, unseen by any training."""
    train, heldout = prompt_pool(dialogues, "train"), prompt_pool(dialogues, "heldout")
    rng = random.Random(f"rlhf:{seed}")
    rs = _draw(train, cfg.rejection.prompts, rng)
    ppo = _draw(train, cfg.ppo_prompts, rng)
    validation = _draw(train, cfg.validation_prompts, rng, exclude={p["prompt_id"] for p in ppo})
    return {"rs": rs, "ppo": ppo, "validation": validation,
            "eval": _draw(heldout, cfg.evaluation.prompts, rng)}


# --- 1. fresh preferences and refreshed reward models (rounds >= 2) -------------------------

@task(name="refresh_reward_models", cache_policy=code_and_inputs() - "mlflow_run_id",
      persist_result=True, result_serializer=STEP_OUTPUT_JSON)
def refresh_step(round_: int, models: dict[str, str], pairs: Manifest, dialogues: Manifest,
                 tokenizer_model: str, sft_dir: str, reward: RewardConfig, collection: CollectionConfig,
                 toxicity: ToxicityConfig, seed: int, data_dir: str, run_dir: str,
                 mlflow_run_id: str) -> StepOutput:
    """New comparisons of the newest policy's answers (against the models `cfg.collection`
    names) judged by the rule annotator, appended to every earlier batch; then both reward
    models retrained from the SFT weights on all of it (paper: the RMs are refreshed on the
    newest batches before each round), each registered as a new version."""
    c = collection
    earlier = read_dataset(pairs)
    first_batch = int(earlier["batch"].max()) + 1 if earlier.height else 0
    annotator = rule_annotator(reward.annotator, toxicity)
    rows, excluded, collected = collect_batches(read_dataset(dialogues).to_dicts(), models,
                                                tokenizer_model, c, annotator, seed, first_batch,
                                                log=get_run_logger().info)
    stats = {f"collect.{k}": v for k, v in collected.items()}
    get_run_logger().info("RLHF-V%d: %d new preference pairs (%d excluded) from %s", round_,
                          len(rows), len(excluded), ", ".join(c.variants))
    merged = pl.concat([earlier, dialogue_frame(rows, PAIRS)]) if rows else earlier
    pairs_out = write_dataset(merged, PAIRS, Path(data_dir))
    excluded_out = write_dataset(dialogue_frame(excluded, PAIRS_EXCLUDED), PAIRS_EXCLUDED, Path(data_dir))
    logger = attach_run(Path(run_dir), mlflow_run_id)
    folders = {}
    for rm in ("helpfulness", "safety"):
        rm_cfg = getattr(reward, rm)
        st, folder = train_reward_model(pairs_out, rm, rm_cfg, sft_dir, tokenizer_model,
                                        reward.safety_share, seed, run_dir, mlflow_run_id,
                                        f"v{round_}_rm_{rm}")
        stats.update(st)
        folders[rm] = str(folder)
        stats[f"v{round_}_rm_{rm}.registered_version"] = float(register_model(
            logger, folder, rm_cfg.registered_model,
            f"{rm.capitalize()} reward model refreshed for RLHF-V{round_} on {merged.height} pairs "
            f"(batches 0..{first_batch + c.batches - 1})"))
    stats["pairs_total"] = merged.height
    return StepOutput(outputs={PAIRS: pairs_out, PAIRS_EXCLUDED: excluded_out},
                      stats={k: float(v) for k, v in stats.items()}, artifacts=folders)


# --- 2. rejection sampling -------------------------------------------------------------------

def _sample_rows(round_: int, prompts: list[dict], answers: list[list[str | None]],
                 temperature: float) -> tuple[list[dict], int]:
    """Rows for the K answers of each prompt (sample k = answers[k]); prompts whose context does
    not fit the window (answer None) are left out and counted."""
    rows, skipped = [], 0
    for i, p in enumerate(prompts):
        texts = [answers[k][i] for k in range(len(answers))]
        if any(t is None for t in texts):
            skipped += 1
            continue
        for k, text in enumerate(texts):
            rows.append({"round": round_, "prompt_id": p["prompt_id"], "system": p["system"],
                         "prompt": p["turns"], "is_safety": p["is_safety"], "category": p["category"],
                         "risk_category": p["risk_category"], "reference": p["reference"],
                         "sample": k, "response": text, "temperature": temperature,
                         "origin_round": round_, "is_best": False})
    return rows, skipped


def _as_prompt(row: dict) -> dict:
    return {**row, "turns": row["prompt"]}


@task(name="rejection_sample", cache_policy=code_and_inputs(), persist_result=True, result_serializer=STEP_OUTPUT_JSON)
def rejection_sample_step(round_: int, policy_dir: str, rms: dict[str, str], prompts: list[dict],
                          earlier: list[Manifest], tokenizer_model: str, rm_seq_len: int, annotator_cfg: RuleAnnotatorConfig,
                          rejection_cfg: RejectionConfig, rs_pool_from: int, seed: int, data_dir: str,
                          run_dir: str) -> StepOutput:
    """K answers per prompt from the round's starting policy, scored by the round's RMs; from
    `rs_pool_from` on, the earlier rounds' best answers re-scored beside them; the best per
    prompt marked. Logs the Fig. 7 curve (max and median R_c over the first N samples)."""
    r = rejection_cfg
    processor = spm.SentencePieceProcessor(model_file=tokenizer_model)
    torch.manual_seed(seed + round_)
    answer = make_answer_fn(load_model(Path(policy_dir)), processor, r.max_new_tokens, r.temperature,
                            r.top_p, r.batch_size)
    contexts = [(p["system"], p["turns"]) for p in prompts]
    answers = []
    for k in range(r.k):
        answers.append(answer(contexts, seed + 7919 * round_ + 104729 * k))
        get_run_logger().info("RLHF-V%d rejection sampling: sample %d/%d for %d prompts", round_,
                              k + 1, r.k, len(prompts))
    rows, skipped = _sample_rows(round_, prompts, answers, r.temperature)
    earlier_best = [row for m in earlier for row in read_dataset(m).filter(pl.col("is_best")).to_dicts()]
    rows += rejection.pooled_candidates(round_, earlier_best, {row["prompt_id"] for row in rows},
                                        rs_pool_from)
    scores = load_scorer(rms, processor, rm_seq_len).score([_as_prompt(x) for x in rows],
                                                                [x["response"] for x in rows])
    for i, row in enumerate(rows):
        row.update(r_h=float(scores["r_h"][i]), r_s=float(scores["r_s"][i]), r_c=float(scores["r_c"][i]))
    rows = rejection.mark_best(rows)
    curve = rejection.best_of_n_curve(rows)
    best = [x for x in rows if x["is_best"]]
    stats = {"prompts": len(prompts), "prompts_skipped_too_long": skipped, "samples": len(rows),
             "pooled_rows": sum(x["origin_round"] < round_ for x in rows),
             "best_from_earlier_rounds": sum(x["origin_round"] < round_ for x in best),
             "best_r_c_mean": float(np.mean([x["r_c"] for x in best])) if best else 0.0,
             "all_r_c_mean": float(np.mean([x["r_c"] for x in rows])) if rows else 0.0}
    if curve:
        stats.update({"fig7.max_at_1": curve[0]["max"], f"fig7.max_at_{curve[-1]['n']}": curve[-1]["max"],
                      f"fig7.median_at_{curve[-1]['n']}": curve[-1]["median"]})
    name = f"fig7_rejection_sampling_v{round_}"
    artifacts = {
        "curve.csv": str(write_artifact(pl.DataFrame(curve).write_csv().encode(), Path(run_dir), "rlhf",
                                        f"{name}.csv")),
        "curve.png": str(write_artifact(rejection.curve_png({f"V{round_}": curve}), Path(run_dir), "rlhf",
                                        f"{name}.png")),
    }
    get_run_logger().info("RLHF-V%d rejection sampling: mean R_c %.3f over all samples, %.3f of the best",
                          round_, stats["all_r_c_mean"], stats["best_r_c_mean"])
    return StepOutput(outputs={SAMPLES: write_dataset(dialogue_frame(rows, SAMPLES), SAMPLES, Path(data_dir))},
                      stats={f"rs.{k}": float(v) for k, v in stats.items()}, artifacts=artifacts)


def best_examples(samples: pl.DataFrame, processor, seq_len: int) -> tuple[pl.DataFrame, dict]:
    """The best row per prompt as a chat training example (see `answer_examples`)."""
    return answer_examples(samples.filter(pl.col("is_best")).to_dicts(), processor, seq_len, "response")


@task(name="rs_finetune", cache_policy=code_and_inputs() - "mlflow_run_id", persist_result=True, result_serializer=STEP_OUTPUT_JSON)
def rs_finetune_step(round_: int, policy_dir: str, samples: Manifest, tokenizer_model: str,
                     ft: FinetuneConfig, fmt: FormatConfig, run_dir: str, mlflow_run_id: str) -> StepOutput:
    """Fine-tune the round's starting policy on the best answers, with the shared loop as in SFT."""
    processor = spm.SentencePieceProcessor(model_file=tokenizer_model)
    examples, stats = best_examples(read_dataset(samples), processor, ft.train.seq_len)
    if not examples.height:
        raise ValueError(f"RLHF-V{round_}: no usable best answer to fine-tune on (stats {stats})")
    key = parts_key(samples.sha256, sha256_of(Path(policy_dir) / MODEL_FILE), ft.model_dump_json(),
               fmt.model_dump_json())
    out_dir = Path(run_dir) / "artifacts" / "rlhf" / f"v{round_}-rs-{key}"
    get_run_logger().info("RLHF-V%d: fine-tuning on %d best answers into %s", round_, examples.height, out_dir)
    logger = PrefixedLogger(attach_run(Path(run_dir), mlflow_run_id), "rs_finetune/")
    loop, folder = finetune_on(examples, policy_dir, ft, fmt, processor, out_dir, logger)
    out = {**stats, **loop}
    return StepOutput(stats={f"rs_finetune.{k}": float(v) for k, v in out.items()},
                      artifacts={"model_dir": str(folder)})


# --- 3. PPO ------------------------------------------------------------------------------------


@task(name="ppo", cache_policy=code_and_inputs() - "mlflow_run_id", persist_result=True, result_serializer=STEP_OUTPUT_JSON)
def ppo_step(round_: int, start_dir: str, rms: dict[str, str], prompts: list[dict],
             validation: list[dict], tokenizer_model: str, rm_seq_len: int, annotator_cfg: RuleAnnotatorConfig, ppo: PPOConfig,
             toxicity: ToxicityConfig, seed: int, run_dir: str, mlflow_run_id: str) -> StepOutput:
    """PPO from the round's rejection-sampling model against the gated reward; the reference is
    that same starting model. Early stopping on the validation prompts' mean R_c (greedy
    answers); the guard is the rule annotator's score of the same answers, an independent
    signal that falls when the policy games the reward models."""
    p = ppo
    processor = spm.SentencePieceProcessor(model_file=tokenizer_model)
    scorer = load_scorer(rms, processor, rm_seq_len)
    annotator = rule_annotator(annotator_cfg, toxicity, noise=False)
    policy, ref = load_model(Path(start_dir)), load_model(Path(start_dir))
    tokens = [prompt_tokens(processor, x["system"], x["turns"]) for x in prompts]
    eos = processor.eos_id()

    def reward_fn(indices: list[int], responses: list[list[int]]) -> dict[str, torch.Tensor]:
        texts = [processor.decode([t for t in r if t != eos]) for r in responses]
        s = scorer.score([prompts[i] for i in indices], texts)
        return {k: torch.from_numpy(v).float() for k, v in s.items()}

    contexts = [(x["system"], x["turns"]) for x in validation]

    def eval_fn(model) -> dict[str, float]:
        answers = make_answer_fn(model, processor, p.max_new_tokens, 0.0, 1.0)(contexts, seed)
        kept = [(x, a) for x, a in zip(validation, answers) if a is not None]
        if not kept:
            raise ValueError("no validation prompt fits the model's window with max_new_tokens")
        s = scorer.score([x for x, _ in kept], [a for _, a in kept])
        guard = annotator_scores(annotator, [x for x, _ in kept], [a for _, a in kept])
        safety = np.array([bool(x["is_safety"]) for x, _ in kept])
        model.train()
        out = {"reward": float(np.mean(s["r_c"])), "guard": float(np.mean(guard)),
               "r_h": float(np.mean(s["r_h"])), "r_s": float(np.mean(s["r_s"]))}
        for name, rows in (("helpfulness", ~safety), ("safety", safety)):
            if rows.any():  # one guard per axis: a fall on one is not hidden by a rise on the other
                out[f"guard_{name}"] = float(np.mean(guard[rows]))
        return out

    key = parts_key(sha256_of(Path(start_dir) / MODEL_FILE), json.dumps(sorted(rms.items())),
               p.model_dump_json(), json.dumps([x["prompt_id"] for x in prompts]), str(seed))
    out_dir = Path(run_dir) / "artifacts" / "rlhf" / f"v{round_}-ppo-{key}"
    set_aside_if_forced(out_dir)  # --rerun trains again into a fresh folder; the old model is kept
    logger = attach_run(Path(run_dir), mlflow_run_id)
    logging.getLogger("tasks.rlhf.ppo").setLevel(logging.INFO)  # one line per iteration, to Prefect's log
    get_run_logger().info("RLHF-V%d PPO: %d iterations max, %d prompts, into %s", round_, p.iterations,
                          len(prompts), out_dir)
    stats = train_ppo(policy, ref, tokens, reward_fn, p.model_copy(update={"seed": p.seed + round_}),
                      logger, eval_fn=eval_fn, eos_id=eos, pad_id=0)
    folder = save_model_folder(policy, out_dir / "model", {"ppo": json.loads(p.model_dump_json()),
                                                           "round": round_, "started_from": start_dir})
    flat = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return StepOutput(stats={f"ppo.{k}": float(v) for k, v in flat.items()},
                      artifacts={"model_dir": str(folder), "stopped": str(stats.get("stopped"))})


@task(name="register_round", cache_policy=code_and_inputs() - "mlflow_run_id",
      persist_result=True, result_serializer=STEP_OUTPUT_JSON)
def register_step(round_: int, policy_dir: str, registered_model: str, how: str, run_dir: str,
                  mlflow_run_id: str) -> StepOutput:
    version = register_model(attach_run(Path(run_dir), mlflow_run_id), Path(policy_dir),
                             registered_model, f"RLHF-V{round_}: {how}")
    return StepOutput(stats={"registered_version": float(version)})


# --- 4. the per-round table -----------------------------------------------------------------

def _version_rows(name: str, order: int, prompts: list[dict], answers: list[str], scores: dict,
                  kl: list, annot: np.ndarray, wins: np.ndarray) -> list[dict]:
    return [{"version": name, "order": order, "prompt_id": p["prompt_id"],
             "kind": "safety" if p["is_safety"] else "helpfulness", "category": p["category"],
             "risk_category": p["risk_category"], "answer": a, "r_h": float(scores["r_h"][i]),
             "r_s": float(scores["r_s"][i]), "r_c": float(scores["r_c"][i]), "kl_to_sft": kl[i],
             "annotator_score": float(annot[i]), "win_vs_sft": float(wins[i])}
            for i, (p, a) in enumerate(zip(prompts, answers))]


def rounds_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Per version: mean R_c, R_h, R_s, mean KL to SFT, and the annotator's helpfulness and safety
    win rates against SFT (ties half), on the held-out prompts."""
    return (rows.group_by("version", "order").agg(
        pl.col("r_c").mean().alias("mean_r_c"), pl.col("r_h").mean().alias("mean_r_h"),
        pl.col("r_s").mean().alias("mean_r_s"), pl.col("kl_to_sft").mean().alias("kl_to_sft"),
        pl.col("win_vs_sft").filter(pl.col("kind") == "helpfulness").mean().alias("helpfulness_win_rate"),
        pl.col("win_vs_sft").filter(pl.col("kind") == "safety").mean().alias("safety_win_rate"),
        pl.len().alias("prompts"))
        .sort("order").drop("order"))


def rounds_png(table: pl.DataFrame) -> bytes:
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 4))
    x = list(range(table.height))
    for col in ("mean_r_c", "mean_r_h", "mean_r_s", "helpfulness_win_rate", "safety_win_rate"):
        left.plot(x, table[col].to_list(), "-o", label=col)
    left.set_xticks(x, table["version"].to_list())
    left.set_title("Held-out prompts, per model version")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(x, table["kl_to_sft"].fill_null(0).to_list(), "-o", color="C5")
    right.set_xticks(x, table["version"].to_list())
    right.set_title("Mean per-token KL to the SFT model")
    right.grid(alpha=0.3)
    return figure_png(fig)


@task(name="evaluate_rounds", cache_policy=code_and_inputs(), persist_result=True, result_serializer=STEP_OUTPUT_JSON)
def evaluate_step(versions: dict[str, str], rms: dict[str, str], prompts: list[dict],
                  tokenizer_model: str, rm_seq_len: int, annotator_cfg: RuleAnnotatorConfig, evaluation: RoundEvalConfig,
                  toxicity: ToxicityConfig, seed: int, data_dir: str, run_dir: str) -> StepOutput:
    """Greedy answers of every version (SFT first) to the held-out prompts, all scored by the
    final reward models; KL to SFT along each answer; the annotator's verdict against SFT."""
    e = evaluation
    processor = spm.SentencePieceProcessor(model_file=tokenizer_model)
    scorer = load_scorer(rms, processor, rm_seq_len)
    annotator = rule_annotator(annotator_cfg, toxicity, noise=False)
    contexts = [(p["system"], p["turns"]) for p in prompts]
    models = {name: load_model(Path(d)) for name, d in versions.items()}  # each loaded once
    answers = {name: make_answer_fn(model, processor, e.max_new_tokens, 0.0, 1.0, e.batch_size)(contexts, seed)
               for name, model in models.items()}
    fits = [i for i in range(len(prompts)) if all(answers[n][i] is not None for n in answers)]
    kept = [prompts[i] for i in fits]
    tokens = [prompt_tokens(processor, p["system"], p["turns"]) for p in kept]
    texts = {name: [answers[name][i] for i in fits] for name in models}
    annot = {name: annotator_scores(annotator, kept, texts[name]) for name in models}
    rows = []
    for order, (name, model) in enumerate(models.items()):
        # the answer as generated ends with EOS; an empty answer is the EOS alone (the model chose
        # to stop at once), so the KL is always measured on at least that one position
        answer_tokens = [processor.encode(t) + [processor.eos_id()] for t in texts[name]]
        kl = kl_along(model, models["sft"], tokens, answer_tokens)
        rows += _version_rows(name, order, kept, texts[name], scorer.score(kept, texts[name]), kl,
                              annot[name], win_rates(annot[name], annot["sft"]))
    frame = dialogue_frame(rows, EVAL)
    table = rounds_table(frame)
    get_run_logger().info("RLHF per-round table (held-out prompts):\n%s", table)
    stats = {"prompts": len(kept), "prompts_too_long": len(prompts) - len(kept)}
    for i, row in enumerate(table.to_dicts()):
        for k, v in row.items():
            if k != "version" and v is not None:
                stats[f"{row['version']}.{k}"] = v
                if i == table.height - 1:  # the newest version, under one name for every preset
                    stats[f"final.{k}"] = v
    artifacts = {
        "rounds.csv": str(write_artifact(table.write_csv().encode(), Path(run_dir), "rlhf", "rlhf_rounds.csv")),
        "rounds.png": str(write_artifact(rounds_png(table), Path(run_dir), "rlhf", "rlhf_rounds.png")),
    }
    return StepOutput(outputs={EVAL: write_dataset(frame, EVAL, Path(data_dir))},
                      stats={f"eval.{k}": float(v) for k, v in stats.items()}, artifacts=artifacts)
