"""Prefect tasks of the safety context distillation stage (RECIPE.md §9, paper §4.2.4).

distill_data: for adversarial train prompts, the policy answers once with a safety preprompt
in front of its system prompt and once without; the Safety RM scores both answers on the prompt
*without* the preprompt; an answer is kept only where the preprompted one scores higher
(`select_distilled`). distill_finetune: the policy fine-tuned on (prompt without the preprompt ->
kept answer), loss on the answer only, with the shared loop. register: the distilled model.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import polars as pl
from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.chat.answer import cutoff_share
from tasks.chat.config import FormatConfig
from tasks.chat.prompt import prompt_pool
from tasks.chat.sharded import AnswerJob, answer_jobs
from tasks.chat.tokenizer import load_tokenizer
from tasks.distill.config import DistillConfig
from tasks.distill.preprompts import choose_preprompt, with_preprompt
from tasks.distill.select import select_distilled, trim_to_sentence
from tasks.distributed.launch import step_log
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.judges.scoring import rm_probs, rm_sequence
from tasks.plots import figure_png, pyplot
from tasks.records import dialogue_frame
from tasks.results import StepOutput, write_artifact
from tasks.tracking import PrefixedLogger, attach_run
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.finetune import answer_examples, finetune_on
from tasks.training.model_io import load_reward_model

SAMPLES = "distillation_samples"
COLUMNS = (
    "prompt_id",
    "system",
    "prompt",
    "risk_category",
    "preprompt_kind",
    "preprompt",
    "answer_with",
    "answer_without",
    "ended_with",
    "ended_without",
    "trimmed_with",
    "score_with",
    "score_without",
    "delta",
    "kept",
    "reason",
)


def adversarial_prompts(dialogues: list[dict], n: int, seed: int) -> list[dict]:
    """`n` adversarial prompts (safety-tagged, with a risk category) of the SFT train split."""
    pool = [p for p in prompt_pool(dialogues, "train")["safety"] if p["risk_category"] is not None]
    return random.Random(f"distill:{seed}").sample(pool, min(n, len(pool)))


def benign_prompts(dialogues: list[dict], n: int, seed: int) -> list[dict]:
    """`n` train prompts without a risk category (helpfulness and borderline), for the replay."""
    pool = prompt_pool(dialogues, "train")
    benign = pool["helpfulness"] + [p for p in pool["safety"] if p["risk_category"] is None]
    return random.Random(f"distill-replay:{seed}").sample(benign, min(n, len(benign)))


def replay_examples(
    dialogues: Manifest,
    policy_dir: str,
    tokenizer_model: str,
    processor,
    cfg: DistillConfig,
    n: int,
    seed: int,
    work_dir: Path,
) -> tuple[pl.DataFrame, dict]:
    """The policy's own greedy answers to `n` benign train prompts as fine-tuning examples: they
    hold its behaviour on benign prompts where it is, while the distilled refusals move it on
    adversarial ones. Answers cut off at max_new_tokens are left out (counted): as targets they
    would teach the policy not to stop, and a small policy is cut off often."""
    prompts = benign_prompts(read_dataset(dialogues).to_dicts(), n, seed)
    ((texts, ended),) = _answer(
        policy_dir,
        tokenizer_model,
        [[(p["system"], p["turns"]) for p in prompts]],
        cfg,
        seed,
        work_dir,
    )
    rows = [
        {"system": p["system"], "prompt": p["turns"], "answer": t}
        for p, t, e in zip(prompts, texts, ended)
        if t is not None and e
    ]
    examples, stats = answer_examples(rows, processor, cfg.finetune.train.seq_len, "answer")
    return examples, {**stats, "cut_off": sum(e is False for e in ended)}


def delta_png(rows: list[dict]) -> bytes:
    """Histogram of the Safety RM score gain from the preprompt, kept vs dropped."""
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for kept, label, color in ((True, "kept", "C2"), (False, "dropped", "C3")):
        deltas = [r["delta"] for r in rows if r["kept"] == kept]
        if deltas:
            ax.hist(deltas, bins=30, alpha=0.7, label=f"{label} ({len(deltas)})", color=color)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("Safety RM score with the preprompt - without")
    ax.set_ylabel("prompts")
    ax.set_title("Safety context distillation")
    ax.legend()
    return figure_png(fig)


def _answer(
    policy_dir: str,
    tokenizer_model: str,
    contexts: list[list],
    cfg: DistillConfig,
    seed: int,
    work_dir: Path,
) -> list:
    """Greedy (answers, ended) of the policy for each list of contexts, in this process or on
    `cfg.launch`'s ranks (one launch for all lists; tasks/chat/sharded.py)."""
    jobs = [
        AnswerJob(
            model_dir=policy_dir,
            contexts=c,
            max_new_tokens=cfg.max_new_tokens,
            temperature=0.0,
            top_p=1.0,
            seed=seed,
            batch_size=cfg.batch_size,
        )
        for c in contexts
    ]
    return answer_jobs(jobs, tokenizer_model, cfg.launch, work_dir, step_log)


@cached_task("distill_data")
def distill_data_step(
    dialogues: Manifest,
    policy_dir: str,
    safety_rm: str,
    tokenizer_model: str,
    cfg: DistillConfig,
    rm_seq_len: int,
    seed: int,
    data_dir: str,
    run_dir: str,
) -> StepOutput:
    """Answers with and without a safety preprompt, scored by the Safety RM; keep-if-better."""
    processor = load_tokenizer(tokenizer_model)
    prompts = adversarial_prompts(read_dataset(dialogues).to_dicts(), cfg.prompts, seed)
    chosen = [
        choose_preprompt(p["prompt_id"], p["risk_category"], seed, cfg.template_share)
        for p in prompts
    ]
    (with_, ended_with), (without, ended_without) = _answer(
        policy_dir,
        tokenizer_model,
        [
            [
                (with_preprompt(p["system"], text), p["turns"])
                for p, (_, text) in zip(prompts, chosen)
            ],
            [(p["system"], p["turns"]) for p in prompts],
        ],
        cfg,
        seed,
        Path(run_dir) / "artifacts" / "distill" / "answering",
    )
    fits = [i for i in range(len(prompts)) if with_[i] is not None and without[i] is not None]
    rows = [
        {
            "prompt_id": prompts[i]["prompt_id"],
            "system": prompts[i]["system"],
            "prompt": prompts[i]["turns"],
            "risk_category": prompts[i]["risk_category"],
            "preprompt_kind": chosen[i][0],
            "preprompt": chosen[i][1],
            "answer_with": with_[i],
            "answer_without": without[i],
            "ended_with": ended_with[i],
            "ended_without": ended_without[i],
            "trimmed_with": False,
        }
        for i in fits
    ]
    if cfg.trim_cut_off:  # a cut-off preprompted answer, cut back to its last whole sentence
        for r in rows:
            head = None if r["ended_with"] else trim_to_sentence(r["answer_with"])
            if head is not None:
                r.update(answer_with=head, ended_with=True, trimmed_with=True)
    rm = load_reward_model(Path(safety_rm))
    seq_len = rm_seq_len
    as_prompt = [
        {"system": r["system"], "turns": r["prompt"]} for r in rows
    ]  # scored WITHOUT the preprompt
    s_with, s_without = (
        rm_probs(
            rm,
            [
                rm_sequence(processor, p, r[f"answer_{side}"], seq_len, r[f"ended_{side}"])
                for p, r in zip(as_prompt, rows)
            ],
        )
        for side in ("with", "without")
    )
    kept, dropped, stats = select_distilled(
        rows,
        s_with.tolist(),
        s_without.tolist(),
        cfg.min_gain,
        answer_key="answer_with",
        max_per_answer=cfg.max_per_answer,
    )
    # the contract's columns: kept rows have no reason; dropped ones carry theirs
    out = [{k: r.get(k) for k in COLUMNS} | {"kept": True} for r in kept]
    out += [{k: r.get(k) for k in COLUMNS} | {"kept": False} for r in dropped]
    for kind in ("generic", "template"):
        of_kind = [r for r in out if r["preprompt_kind"] == kind]
        stats[f"{kind}.rows"] = len(of_kind)
        stats[f"{kind}.kept"] = sum(r["kept"] for r in of_kind)
    stats["prompts_too_long"] = len(prompts) - len(fits)
    # answers cut off at max_new_tokens: with the preprompt (never targets: `cut_off`, unless
    # trimmed to a whole sentence), without
    stats["cutoff_share"] = cutoff_share([r["ended_with"] and not r["trimmed_with"] for r in rows])
    stats["cutoff_share_without"] = cutoff_share([r["ended_without"] for r in rows])
    stats["trimmed"] = sum(r["trimmed_with"] for r in rows)
    stats["score_with_mean"] = float(np.mean(s_with)) if len(s_with) else None
    stats["score_without_mean"] = float(np.mean(s_without)) if len(s_without) else None
    get_run_logger().info(
        "safety context distillation: %d of %d answers improved by the preprompt "
        "(mean Safety RM %.3f with, %.3f without); %d prompts did not fit the window "
        "with the preprompt",
        len(kept),
        len(out),
        stats["score_with_mean"] or 0.0,
        stats["score_without_mean"] or 0.0,
        stats["prompts_too_long"],
    )
    return StepOutput(
        outputs={SAMPLES: write_dataset(dialogue_frame(out, SAMPLES), SAMPLES, Path(data_dir))},
        stats={f"distill.{k}": float(v) for k, v in stats.items() if v is not None},
        files={
            "distill_delta.png": str(
                write_artifact(delta_png(out), Path(run_dir), "distill", "distill_delta.png")
            )
        },
    )


@cached_task("distill_finetune", ignore=("mlflow_run_id",))
def distill_finetune_step(
    samples: Manifest,
    dialogues: Manifest,
    policy_dir: str,
    tokenizer_model: str,
    cfg: DistillConfig,
    fmt: FormatConfig,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """The policy fine-tuned on the kept answers, the prompt WITHOUT the preprompt, and on its own
    answers to `replay_ratio` benign prompts per kept answer."""
    processor = load_tokenizer(tokenizer_model)
    rows = read_dataset(samples).filter(pl.col("kept")).to_dicts()
    examples, stats = answer_examples(rows, processor, cfg.finetune.train.seq_len, "answer_with")
    if not examples.height:
        raise ValueError(
            f"safety context distillation kept no answer to fine-tune on ({stats}); "
            "lower distill.min_gain or use more distill.prompts"
        )
    n_replay = round(cfg.replay_ratio * examples.height)
    if n_replay:
        replay, replay_stats = replay_examples(
            dialogues,
            policy_dir,
            tokenizer_model,
            processor,
            cfg,
            n_replay,
            seed,
            Path(run_dir) / "artifacts" / "distill" / "replay-answering",
        )
        examples = pl.concat([examples, replay])
        stats.update({f"replay.{k}": v for k, v in replay_stats.items()})
    key = parts_key(
        samples.sha256,
        sha256_of(Path(policy_dir) / MODEL_FILE),
        cfg.finetune.model_dump_json(),
        fmt.model_dump_json(),
        # the examples themselves: the replayed answers depend on generation code, not only on
        # these inputs, and a folder with a finished checkpoint is resumed, not retrained
        hashlib.sha256(examples.write_ipc(None).getvalue()).hexdigest() if n_replay else "",
    )
    out_dir = Path(run_dir) / "artifacts" / "distill" / f"finetune-{key}"
    get_run_logger().info(
        "distillation: fine-tuning on %d answers (%d of them replayed) into %s",
        examples.height,
        stats.get("replay.examples", 0),
        out_dir,
    )
    logger = PrefixedLogger(attach_run(Path(run_dir), mlflow_run_id), "finetune/")
    loop, folder = finetune_on(
        examples,
        policy_dir,
        cfg.finetune,
        fmt,
        processor,
        out_dir,
        logger,
        tracking=(run_dir, mlflow_run_id, "finetune/"),
    )
    return StepOutput(
        stats={f"finetune.{k}": float(v) for k, v in {**stats, **loop}.items()},
        models={"model": str(folder)},
    )
