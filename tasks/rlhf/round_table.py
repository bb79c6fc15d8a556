"""The RLHF per-round table (a task): every version's greedy answers to the held-out prompts,
judged by the final reward models and the shared judge, with the KL to SFT along each answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.chat.answer import cutoff_share, make_answer_status_fn
from tasks.chat.format import answer_tokens, prompt_tokens
from tasks.chat.tokenizer import load_tokenizer
from tasks.io import write_dataset
from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.judges.judge import judge
from tasks.judges.scoring import kl_along, load_scorer, rule_annotator, win_rates
from tasks.judges.toxicity import ToxicityConfig
from tasks.records import dialogue_frame
from tasks.results import StepOutput, write_artifact
from tasks.rlhf.config import RoundEvalConfig
from tasks.rlhf.rounds import rounds_png, rounds_table, version_rows
from tasks.training.model_io import load_model

EVAL = "rlhf_eval"


@cached_task("evaluate_rounds")
def evaluate_step(
    versions: dict[str, str],
    rms: dict[str, str],
    prompts: list[dict],
    tokenizer_model: str,
    rm_seq_len: int,
    annotator_cfg: RuleAnnotatorConfig,
    evaluation: RoundEvalConfig,
    toxicity: ToxicityConfig,
    seed: int,
    data_dir: str,
    run_dir: str,
) -> StepOutput:
    """Greedy answers of every version (SFT first) to the held-out prompts, all scored by the
    final reward models; KL to SFT along each answer; the annotator's verdict against SFT."""
    e = evaluation
    processor = load_tokenizer(tokenizer_model)
    scorer = load_scorer(rms, processor, rm_seq_len)
    annotator = rule_annotator(annotator_cfg, toxicity, noise=False)
    contexts = [(p["system"], p["turns"]) for p in prompts]
    models = {name: load_model(Path(d)) for name, d in versions.items()}  # each loaded once
    answers, ended = {}, {}
    for name, model in models.items():
        answers[name], ended[name] = make_answer_status_fn(
            model, processor, e.max_new_tokens, 0.0, 1.0, e.batch_size
        )(contexts, seed)
    fits = [i for i in range(len(prompts)) if all(answers[n][i] is not None for n in answers)]
    kept = [prompts[i] for i in fits]
    tokens = [prompt_tokens(processor, p["system"], p["turns"]) for p in kept]
    texts = {name: [answers[name][i] for i in fits] for name in models}
    done = {name: [ended[name][i] for i in fits] for name in models}
    judged = {
        name: judge(kept, texts[name], scorer, annotator, safety_threshold=0.5, ended=done[name])
        for name in models
    }
    annot = {name: np.array([j["annotator_score"] for j in judged[name]]) for name in models}
    rows = []
    for order, (name, model) in enumerate(models.items()):
        # an answer that ended has its EOS; an empty one is the EOS alone (the model chose to
        # stop at once), so the KL is measured on at least that position. A cut-off answer has
        # no EOS. The stripped text without its trailing space, as this table always measured.
        along = [
            answer_tokens(processor, t, e, trailing_space=False) or [processor.eos_id()]
            for t, e in zip(texts[name], done[name])
        ]
        kl = kl_along(model, models["sft"], tokens, along)
        scores = {k: np.array([j[k] for j in judged[name]]) for k in ("r_h", "r_s", "r_c")}
        rows += version_rows(
            name,
            order,
            kept,
            texts[name],
            scores,
            kl,
            annot[name],
            win_rates(annot[name], annot["sft"]),
        )
    frame = dialogue_frame(rows, EVAL)
    table = rounds_table(frame)
    get_run_logger().info("RLHF per-round table (held-out prompts):\n%s", table)
    stats = {"prompts": len(kept), "prompts_too_long": len(prompts) - len(kept)}
    for name in models:  # answers cut off at max_new_tokens (scored without EOS)
        stats[f"{name}.cutoff_share"] = cutoff_share(done[name]) or 0.0
    for i, row in enumerate(table.to_dicts()):
        for k, v in row.items():
            if k != "version" and v is not None:
                stats[f"{row['version']}.{k}"] = v
                if i == table.height - 1:  # the newest version, under one name for every preset
                    stats[f"final.{k}"] = v
    artifacts = {
        "rounds.csv": str(
            write_artifact(table.write_csv().encode(), Path(run_dir), "rlhf", "rlhf_rounds.csv")
        ),
        "rounds.png": str(
            write_artifact(rounds_png(table), Path(run_dir), "rlhf", "rlhf_rounds.png")
        ),
    }
    return StepOutput(
        outputs={EVAL: write_dataset(frame, EVAL, Path(data_dir))},
        stats={f"eval.{k}": float(v) for k, v in stats.items()},
        files=artifacts,
    )
