"""PPO as a round's policy step (tasks/rlhf/ppo.py is the trainer): the Prefect task `ppo_step`,
and `ppo_round`, its work in the task's process or on each launched rank (`ppo.launch`;
tasks/rlhf/ppo_ranks.py says how the ranks share an iteration)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from models.generation import ended_at_eos
from tasks.caching import cached_task
from tasks.chat.answer import make_answer_status_fn
from tasks.chat.format import prompt_tokens
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import rank as launched_rank
from tasks.distributed.launch import run_ranks, start_ranks_here, step_log
from tasks.hashing import parts_key, sha256_of
from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.judges.scoring import annotator_scores, load_scorer, rule_annotator
from tasks.judges.toxicity import ToxicityConfig
from tasks.results import StepOutput
from tasks.rlhf.ppo import PPOConfig, train_ppo
from tasks.tracking import InMemoryLogger, attach_run
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.model_io import load_model, save_model_folder
from tasks.training.rerun import set_aside_if_forced


@cached_task("ppo", ignore=("mlflow_run_id",))
def ppo_step(
    round_: int,
    start_dir: str,
    rms: dict[str, str],
    prompts: list[dict],
    validation: list[dict],
    tokenizer_model: str,
    rm_seq_len: int,
    annotator_cfg: RuleAnnotatorConfig,
    ppo: PPOConfig,
    toxicity: ToxicityConfig,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """PPO from the round's rejection-sampling model against the gated reward; the reference is
    that same starting model. Early stopping on the validation prompts' mean R_c (greedy
    answers); the guard is the rule annotator's score of the same answers, an independent
    signal that falls when the policy games the reward models. On N ranks where `ppo.launch`
    says so."""
    key = parts_key(
        sha256_of(Path(start_dir) / MODEL_FILE),
        json.dumps(sorted(rms.items())),
        ppo.model_dump_json(exclude={"launch"}),  # where it runs does not change what it trains
        json.dumps([x["prompt_id"] for x in prompts]),
        str(seed),
    )
    out_dir = Path(run_dir) / "artifacts" / "rlhf" / f"v{round_}-ppo-{key}"
    set_aside_if_forced(out_dir)  # --rerun trains again into a fresh folder; the old model is kept
    step_log(
        f"RLHF-V{round_} PPO: {ppo.iterations} iterations max, {len(prompts)} prompts, "
        f"into {out_dir}"
        + (
            f", on {ppo.launch.nproc} ranks ({ppo.launch.launcher})"
            if ppo.launch.distributed
            else ""
        )
    )
    args = dict(
        round_=round_,
        start_dir=start_dir,
        rms=rms,
        prompts=prompts,
        validation=validation,
        tokenizer_model=tokenizer_model,
        rm_seq_len=rm_seq_len,
        annotator_cfg=annotator_cfg,
        ppo=ppo,
        toxicity=toxicity,
        seed=seed,
        run_dir=run_dir,
        mlflow_run_id=mlflow_run_id,
        out_dir=str(out_dir),
    )
    if start_ranks_here(ppo.launch):
        for name in ("annotator_cfg", "ppo", "toxicity"):
            args[name] = args[name].model_dump(mode="json")
        stats, folder, stopped = run_ranks(
            "tasks.rlhf.ppo_steps:ppo_round", args, ppo.launch, out_dir / "launch", step_log
        )
    else:
        stats, folder, stopped = ppo_round(**args)
    return StepOutput(stats=stats, models={"model": folder}, notes={"stopped": stopped})


def ppo_round(
    round_: int,
    start_dir: str,
    rms: dict[str, str],
    prompts: list[dict],
    validation: list[dict],
    tokenizer_model: str,
    rm_seq_len: int,
    annotator_cfg,
    ppo,
    toxicity,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
    out_dir: str,
) -> tuple[dict[str, float], str, str]:
    """The work of `ppo_step` (in the task's process, or on each launched rank: every rank
    samples and scores its chunks, rank 0 logs and writes the model folder)
    -> (stats, model folder, why it stopped)."""
    p = PPOConfig.model_validate(ppo)
    annotator_cfg = RuleAnnotatorConfig.model_validate(annotator_cfg)
    toxicity = ToxicityConfig.model_validate(toxicity)
    rank0 = launched_rank() == 0
    processor = load_tokenizer(tokenizer_model)
    scorer = load_scorer(rms, processor, rm_seq_len)
    annotator = rule_annotator(annotator_cfg, toxicity, noise=False)
    policy, ref = load_model(Path(start_dir)), load_model(Path(start_dir))
    tokens = [prompt_tokens(processor, x["system"], x["turns"]) for x in prompts]
    eos = processor.eos_id()

    def reward_fn(indices: list[int], responses: list[list[int]]) -> dict[str, torch.Tensor]:
        # a response cut off at max_new_tokens is scored as it is: without EOS
        texts = [processor.decode([t for t in r if t != eos]) for r in responses]
        s = scorer.score([prompts[i] for i in indices], texts, ended_at_eos(responses, eos))
        return {k: torch.from_numpy(v).float() for k, v in s.items()}

    contexts = [(x["system"], x["turns"]) for x in validation]

    def eval_fn(model) -> dict[str, float]:
        # every rank evaluates the same greedy answers, so all take the same stop decision
        answers, ended = make_answer_status_fn(model, processor, p.max_new_tokens, 0.0, 1.0)(
            contexts, seed
        )
        kept = [(x, a, e) for x, a, e in zip(validation, answers, ended) if a is not None]
        if not kept:
            raise ValueError("no validation prompt fits the model's window with max_new_tokens")
        s = scorer.score([x for x, _, _ in kept], [a for _, a, _ in kept], [e for *_, e in kept])
        guard = annotator_scores(annotator, [x for x, _, _ in kept], [a for _, a, _ in kept])
        safety = np.array([bool(x["is_safety"]) for x, _, _ in kept])
        model.train()
        out = {
            "reward": float(np.mean(s["r_c"])),
            "guard": float(np.mean(guard)),
            "r_h": float(np.mean(s["r_h"])),
            "r_s": float(np.mean(s["r_s"])),
            "cutoff_share": sum(not e for *_, e in kept) / len(kept),
        }
        for name, rows in (("helpfulness", ~safety), ("safety", safety)):
            if rows.any():  # one guard per axis: a fall on one is not hidden by a rise on the other
                out[f"guard_{name}"] = float(np.mean(guard[rows]))
        return out

    trainer_log = logging.getLogger("tasks.rlhf.ppo")
    trainer_log.setLevel(logging.INFO)  # one line per iteration, to Prefect's log
    if p.launch.distributed and rank0 and not trainer_log.handlers:
        trainer_log.addHandler(logging.StreamHandler(sys.stdout))  # the launcher streams it
    logger = attach_run(Path(run_dir), mlflow_run_id) if rank0 else InMemoryLogger()
    stats = train_ppo(
        policy,
        ref,
        tokens,
        reward_fn,
        p.model_copy(update={"seed": p.seed + round_}),
        logger,
        eval_fn=eval_fn,
        eos_id=eos,
        pad_id=0,
    )
    folder = Path(out_dir) / "model"
    if rank0:
        save_model_folder(
            policy,
            folder,
            {"ppo": json.loads(p.model_dump_json()), "round": round_, "started_from": start_dir},
        )
    flat = {
        k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return {f"ppo.{k}": float(v) for k, v in flat.items()}, str(folder), str(stats.get("stopped"))
