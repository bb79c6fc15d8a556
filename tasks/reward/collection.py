"""One collection loop for the reward stage and each RLHF round's refresh (RECIPE.md §5, §7):
for every batch, plan prompts, sample two responses from two model variants at two
temperatures, judge each pair. The caller decides where the batches start (the refresh appends
to the batches already collected) and what to do with the rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tasks.chat.answer import make_answer_status_fn
from tasks.chat.prompt import prompt_pool
from tasks.chat.tokenizer import load_tokenizer
from tasks.preferences import collect as pc
from tasks.preferences.collect import CollectionConfig
from tasks.training.model_io import load_model


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
    """Batches `first_batch .. first_batch + cfg.batches - 1` of preference pairs from the train
    prompts of `dialogues` -> (pair rows, excluded rows, stats summed over the batches, and
    `cutoff_share`: the share of sampled responses cut off at max_new_tokens)."""
    missing = [v for v in cfg.variants if v not in models]
    if missing:
        raise ValueError(
            f"collection variants {missing} have no model; available: {sorted(models)}"
        )
    processor = load_tokenizer(tokenizer_model)
    loaded = {v: load_model(Path(models[v])) for v in cfg.variants}

    def sampler(variant, temperature, contexts, s):
        answer = make_answer_status_fn(
            loaded[variant], processor, cfg.max_new_tokens, temperature, cfg.top_p
        )
        return answer(contexts, s)

    pool = prompt_pool(dialogues)
    rows, excluded, stats = [], [], {}
    for batch in range(first_batch, first_batch + cfg.batches):
        planned = pc.plan_batch(pool, cfg, batch, seed)
        a, b, ended_a, ended_b = pc.sample_responses(planned, sampler, seed + 1000 * batch)
        got, dropped, batch_stats = pc.annotate(
            planned, a, b, annotator, seed + batch, ended_a, ended_b
        )
        rows += got
        excluded += dropped
        for k, v in batch_stats.items():
            stats[k] = stats.get(k, 0) + v
        log(
            f"preference batch {batch}: {len(got)} pairs, {len(dropped)} excluded, "
            f"{batch_stats['responses_cut_off']} of {batch_stats['responses']} responses "
            f"cut off at max_new_tokens {cfg.max_new_tokens}"
        )
    if stats.get("responses"):
        stats["cutoff_share"] = stats["responses_cut_off"] / stats["responses"]
    return rows, excluded, stats
