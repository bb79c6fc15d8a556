"""The task graph, for `--rerun`: forcing a task also forces everything downstream of it.

Names are `<stage>.<task>` (the Prefect task names) or a whole `<stage>`. The graph is data,
kept next to the flows that realise it; tests/unit/test_dag.py checks the two agree.
"""

from __future__ import annotations

# task -> the tasks whose outputs it reads
EDGES: dict[str, tuple[str, ...]] = {
    "corpus.ingest": (),
    "corpus.split_shards": ("corpus.ingest",),
    "corpus.pii": ("corpus.split_shards",),  # mapped over shards
    "corpus.quality": ("corpus.pii",),  # mapped over shards
    "corpus.merge_shards": ("corpus.quality", "corpus.pii"),
    "corpus.exact_dedup": ("corpus.merge_shards",),
    "corpus.near_dedup": ("corpus.exact_dedup",),
    "corpus.weights": ("corpus.near_dedup", "corpus.merge_shards", "corpus.exact_dedup"),
    "corpus.toxicity": ("corpus.weights",),
    "corpus.demographics": ("corpus.weights",),
    "tokenizer.train_tokenizer": ("corpus.weights",),
    "tokenizer.evaluate_tokenizer": ("tokenizer.train_tokenizer", "corpus.weights"),
    "pretrain.token_shards": ("tokenizer.train_tokenizer", "corpus.weights"),
    "pretrain.train_model": ("pretrain.token_shards",),
    # with `base_model` set, this replaces the tokenizer stage and pretraining (SKIPPED_WITH_BASE)
    "pretrain.import_base": (),
    "sft.collect_dialogues": (),
    "sft.curate": ("sft.collect_dialogues",),
    "sft.tokenize": ("sft.curate", "tokenizer.train_tokenizer", "pretrain.import_base"),
    "sft.train_base": ("sft.tokenize", "pretrain.train_model", "pretrain.import_base"),
    "sft.gatt_data": ("sft.curate", "sft.tokenize", "sft.train_base"),
    "sft.train_gatt": ("sft.gatt_data", "sft.train_base"),
    "sft.evaluate": ("sft.curate", "sft.train_base", "sft.train_gatt"),
    "sft.register": ("sft.train_base", "sft.train_gatt"),
    "reward.collect_preferences": (
        "sft.curate",
        "sft.train_base",
        "sft.train_gatt",
        "pretrain.train_model",
        "pretrain.import_base",
    ),
    # reward.collection.annotator people|mixed: the pairs go to people, the flow waits, the labels
    # become the pairs (rounds' refresh batches run the same two tasks under rlhf)
    "reward.queue_for_people": (
        "sft.curate",
        "sft.train_base",
        "sft.train_gatt",
        "pretrain.train_model",
        "pretrain.import_base",
    ),
    "reward.labels_to_pairs": ("reward.queue_for_people",),
    "reward.train_helpfulness_rm": ("reward.collect_preferences", "reward.labels_to_pairs"),
    "reward.train_safety_rm": ("reward.collect_preferences", "reward.labels_to_pairs"),
    "reward.evaluate_rms": ("reward.train_helpfulness_rm", "reward.train_safety_rm"),
    "reward.margin_ablation": ("reward.collect_preferences", "reward.labels_to_pairs"),
    # one node per task for all rounds: round r's tasks read round r-1's policy, so forcing any
    # RLHF task re-runs it in every round and everything after it
    "rlhf.refresh_reward_models": (
        "reward.collect_preferences",
        "reward.labels_to_pairs",
        "sft.curate",
        "sft.train_gatt",
        "rlhf.rs_finetune",
        "rlhf.ppo",
        "rlhf.dpo",
    ),
    "rlhf.rejection_sample": (
        "reward.train_helpfulness_rm",
        "reward.train_safety_rm",
        "rlhf.refresh_reward_models",
        "sft.train_gatt",
        "rlhf.rs_finetune",
        "rlhf.ppo",
        "rlhf.dpo",
    ),
    "rlhf.rs_finetune": ("rlhf.rejection_sample",),
    "rlhf.ppo": (
        "rlhf.rs_finetune",
        "rlhf.refresh_reward_models",
        "reward.train_helpfulness_rm",
        "reward.train_safety_rm",
    ),
    "rlhf.dpo": (  # rlhf.method dpo: instead of rlhf.ppo
        "rlhf.rs_finetune",
        "rlhf.refresh_reward_models",
        "reward.collect_preferences",
        "reward.labels_to_pairs",
    ),
    "rlhf.average_rounds": ("rlhf.rs_finetune", "rlhf.ppo", "rlhf.dpo"),  # averaged_rounds > 1
    "rlhf.register_round": ("rlhf.rs_finetune", "rlhf.ppo", "rlhf.dpo", "rlhf.average_rounds"),
    "rlhf.evaluate_rounds": (
        "rlhf.average_rounds",
        "rlhf.rs_finetune",
        "rlhf.ppo",
        "rlhf.dpo",
        "rlhf.refresh_reward_models",
        "reward.train_helpfulness_rm",
        "reward.train_safety_rm",
        "sft.curate",
    ),
    "distill.distill_data": (
        "rlhf.average_rounds",
        "rlhf.rs_finetune",
        "rlhf.ppo",
        "rlhf.dpo",
        "rlhf.refresh_reward_models",
        "reward.train_safety_rm",
        "sft.curate",
    ),
    "distill.distill_finetune": ("distill.distill_data",),
    "distill.register": ("distill.distill_finetune",),
    "evaluate.eval_prompts": ("sft.curate",),
    "evaluate.evaluate_version": (
        "evaluate.eval_prompts",
        "distill.distill_finetune",
        "rlhf.average_rounds",
        "rlhf.rs_finetune",
        "rlhf.ppo",
        "rlhf.dpo",
        "rlhf.refresh_reward_models",
        "reward.train_helpfulness_rm",
        "reward.train_safety_rm",
        "sft.train_gatt",
        "pretrain.train_model",
        "pretrain.import_base",
    ),
    "evaluate.summarize": ("evaluate.evaluate_version",),
}
STAGES: tuple[str, ...] = (
    "corpus",
    "tokenizer",
    "pretrain",
    "sft",
    "reward",
    "rlhf",
    "distill",
    "evaluate",
)


# the tasks that do not run when the config names a base model, and the one that runs only then
SKIPPED_WITH_BASE = (
    "tokenizer.train_tokenizer",
    "tokenizer.evaluate_tokenizer",
    "pretrain.token_shards",
    "pretrain.train_model",
)
ONLY_WITH_BASE = ("pretrain.import_base",)


class UnknownTaskError(ValueError):
    pass


def skipped_tasks(base_model: bool) -> tuple[str, ...]:
    """Tasks of the graph that a run does not have: pretraining's with a base model, the
    import without one."""
    return SKIPPED_WITH_BASE if base_model else ONLY_WITH_BASE


def skipped_by_choice(
    annotator: str = "rule", method: str = "ppo", averaged_rounds: int = 1
) -> tuple[str, ...]:
    """Tasks a run does not have because of its choices: who labels the reward stage's pairs
    (`reward.collection.annotator`: the rule annotator's collect_preferences, or people's
    queue_for_people + labels_to_pairs), the rounds' policy step (`rlhf.method`) and whether
    the last rounds are averaged (`RlhfConfig.averaged_rounds` > 1: average_rounds)."""
    people = ("reward.queue_for_people", "reward.labels_to_pairs")
    out = people if annotator == "rule" else ("reward.collect_preferences",)
    out += ("rlhf.dpo",) if method == "ppo" else ("rlhf.ppo",)
    return out + (("rlhf.average_rounds",) if averaged_rounds <= 1 else ())


def tasks_of(stage: str) -> list[str]:
    return [name for name in EDGES if name.split(".")[0] == stage]


def expand_reruns(names: list[str] | tuple[str, ...], base_model: bool | None = None) -> set[str]:
    """Named tasks/stages plus all their descendants; unknown names raise with the valid ones.
    With `base_model` given, a task the run does not have (see `skipped_tasks`) raises too."""
    seeds: set[str] = set()
    absent = () if base_model is None else skipped_tasks(base_model)
    for name in names:
        named = tasks_of(name) if name in STAGES else [name] if name in EDGES else []
        if named and all(task in absent for task in named):
            why = "the config sets base_model" if base_model else "the config sets no base_model"
            raise UnknownTaskError(
                f"--rerun '{name}': this run has no such task ({why}); skipped here: {list(absent)}"
            )
        if name in STAGES:
            seeds.update(tasks_of(name))
        elif name in EDGES:
            seeds.add(name)
        else:
            raise UnknownTaskError(
                f"--rerun '{name}' names no stage or task; stages: {list(STAGES)}, "
                f"tasks: {list(EDGES)}"
            )
    children: dict[str, set[str]] = {name: set() for name in EDGES}
    for name, parents in EDGES.items():
        for parent in parents:
            children[parent].add(name)
    forced, todo = set(), list(seeds)
    while todo:
        name = todo.pop()
        if name not in forced:
            forced.add(name)
            todo.extend(children[name])
    return forced
