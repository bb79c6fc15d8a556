"""One collection loop for the reward stage and each RLHF round's refresh (RECIPE.md §5, §7):
for every batch, plan prompts, sample two responses from two model variants at two
temperatures, judge each pair. The caller decides where the batches start (the refresh appends
to the batches already collected) and what to do with the rows."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from tasks.chat.answer import make_answer_status_fn
from tasks.chat.prompt import chitchat_openers, prompt_pool
from tasks.chat.sharded import AnswerJob, answer_jobs
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import start_ranks_here
from tasks.preferences import collect as pc
from tasks.preferences.collect import CollectionConfig
from tasks.training.model_io import load_model


def sample_batches(
    dialogues: list[dict],
    models: dict[str, str],
    tokenizer_model: str,
    cfg: CollectionConfig,
    seed: int,
    first_batch: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Batches `first_batch .. first_batch + cfg.batches - 1` of planned prompts from the train
    prompts of `dialogues`, each with its two sampled responses: the planned prompt's fields
    plus `response_a`, `response_b` (None: the context did not fit) and `ended_a`, `ended_b`
    (False: cut off at max_new_tokens). Nothing is judged here. With `cfg.launch` every
    response of every batch comes from one launch of N ranks (tasks/chat/sharded.py): the same
    responses as in one process."""
    missing = [v for v in cfg.models_needed() if v not in models]
    if missing:
        raise ValueError(
            f"collection variants {missing} have no model; available: {sorted(models)}"
        )
    pool = prompt_pool(dialogues)
    openers = chitchat_openers(dialogues, "train") if cfg.multi_turn_share > 0 else []
    plans = [
        (batch, pc.plan_batch(pool, cfg, batch, seed, openers))
        for batch in range(first_batch, first_batch + cfg.batches)
    ]
    if start_ranks_here(cfg.launch):
        # record what sample_responses asks for, answer it all on the ranks, replay in order
        jobs = []

        def record(variant, temperature, contexts, s):
            model, prefix = cfg.sampled_by(variant)
            jobs.append(
                AnswerJob(
                    model_dir=str(models[model]),
                    contexts=contexts,
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=temperature,
                    top_p=cfg.top_p,
                    seed=s,
                    prefix=prefix,
                )
            )
            return [None] * len(contexts), [None] * len(contexts)

        for batch, planned in plans:
            pc.sample_responses(planned, record, seed + 1000 * batch)
        with tempfile.TemporaryDirectory(prefix="collection-answers-") as work:
            answered = iter(zip(jobs, answer_jobs(jobs, tokenizer_model, cfg.launch, work, log)))

        def sampler(variant, temperature, contexts, s):
            job, got = next(answered)
            if (job.seed, job.temperature, len(job.contexts)) != (s, temperature, len(contexts)):
                raise RuntimeError("collection replay out of step with the recorded sampler calls")
            return got
    else:
        processor = load_tokenizer(tokenizer_model)
        loaded = {v: load_model(Path(models[v])) for v in cfg.models_needed()}

        def sampler(variant, temperature, contexts, s):
            model, prefix = cfg.sampled_by(variant)
            answer = make_answer_status_fn(
                loaded[model], processor, cfg.max_new_tokens, temperature, cfg.top_p, prefix=prefix
            )
            return answer(contexts, s)

    sampled = []
    for batch, planned in plans:
        a, b, ended_a, ended_b = pc.sample_responses(planned, sampler, seed + 1000 * batch)
        sampled += [
            {**p, "response_a": ra, "response_b": rb, "ended_a": ea, "ended_b": eb}
            for p, ra, rb, ea, eb in zip(planned, a, b, ended_a, ended_b)
        ]
        log(f"preference batch {batch}: {len(planned)} prompts, two responses each")
    return sampled


def annotate_batches(
    sampled: list[dict],
    annotator,
    seed: int,
    max_new_tokens: int,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict], dict]:
    """Judge the sampled pairs of `sample_batches` batch by batch -> (pair rows, excluded rows,
    stats summed over the batches, and `cutoff_share`: the share of sampled responses cut off
    at max_new_tokens)."""
    rows, excluded, stats = [], [], {}
    for batch in sorted({p["batch"] for p in sampled}):
        planned = [p for p in sampled if p["batch"] == batch]
        got, dropped, batch_stats = pc.annotate(
            planned,
            [p["response_a"] for p in planned],
            [p["response_b"] for p in planned],
            annotator,
            seed + batch,
            [p["ended_a"] for p in planned],
            [p["ended_b"] for p in planned],
        )
        rows += got
        excluded += dropped
        for k, v in batch_stats.items():
            stats[k] = stats.get(k, 0) + v
        log(
            f"preference batch {batch}: {len(got)} pairs, {len(dropped)} excluded, "
            f"{batch_stats['responses_cut_off']} of {batch_stats['responses']} responses "
            f"cut off at max_new_tokens {max_new_tokens}"
        )
    if stats.get("responses"):
        stats["cutoff_share"] = stats["responses_cut_off"] / stats["responses"]
    return rows, excluded, stats


def collect_batches(
    dialogues: list[dict],
    models: dict[str, str],
    tokenizer_model: str,
    cfg: CollectionConfig,
    annotator,
    seed: int,
    first_batch: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict], dict]:
    """Sample and judge in one go (the rule annotator) -> annotate_batches' result."""
    sampled = sample_batches(dialogues, models, tokenizer_model, cfg, seed, first_batch, log)
    return annotate_batches(sampled, annotator, seed, cfg.max_new_tokens, log)
