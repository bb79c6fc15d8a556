"""The reward stage's collection by people (issue 16; flows/people.py waits between the two
tasks): `queue_step` samples the pairs and puts the ones people label into the annotation
store; `labels_step` turns the store's labels into `preference_pairs` through the same
judgement path as the rule annotator, with the batch's label-quality metrics."""

from __future__ import annotations

import json
from pathlib import Path

from prefect.logging import get_run_logger

from tasks.caching import cached_task
from tasks.io import Manifest, read_dataset
from tasks.judges.annotator import RuleAnnotator, judge_all
from tasks.judges.toxicity import ToxicityConfig, make_scorer
from tasks.preferences import collect as pc
from tasks.preferences.collect import CollectionConfig
from tasks.results import StepOutput, write_artifact
from tasks.reward import people
from tasks.reward.collection import annotate_batches, sample_batches
from tasks.reward.config import RewardConfig
from tasks.reward.steps import pairs_output


@cached_task("queue_for_people")
def queue_step(
    stage: str,
    dialogues: Manifest,
    models: dict[str, str],
    tokenizer_model: str,
    c: CollectionConfig,
    seed: int,
    first_batch: int,
    run_dir: str,
    store_url: str,
    gold_sha256: str,
) -> StepOutput:
    """Sample the collection's pairs and put the ones people label (all with `annotator:
    people`, a share with `mixed`; plus any gold pairs) into the annotation store as one batch.
    The sampled pairs go to a JSON file the labels step reads back."""
    from tasks.annotation.store import AnnotationStore

    log = get_run_logger().info
    sampled = people.route(
        sample_batches(
            read_dataset(dialogues).to_dicts(),
            models,
            tokenizer_model,
            c,
            seed,
            first_batch,
            log=log,
        ),
        c,
        seed,
    )
    items = people.store_items(sampled, c.people.double_share, seed)
    gold = people.read_gold(c.people.gold_file) if c.people.gold_file else []
    bid = people.batch_id(stage, items + gold)
    store = AnnotationStore(store_url)
    try:
        added = store.add_batch(bid, items + gold, title=people.batch_title(stage))
    finally:
        store.close()
    log(
        f"annotation batch {bid}: {len(items)} pairs for people "
        f"({sum(i['annotators_needed'] == 2 for i in items)} for two annotators), "
        f"{len(gold)} gold, {sum(p['labelled_by'] == 'rule' for p in sampled)} for the rule "
        f"annotator; {added} new in the store {store_url}"
    )
    path = write_artifact(
        json.dumps(sampled, ensure_ascii=False).encode(), Path(run_dir), stage, f"{bid}.json"
    )
    return StepOutput(
        files={"sampled_pairs": str(path)},
        notes={"batch_id": bid},
        stats={
            "people.pairs": float(len(items)),
            "people.double": float(sum(i["annotators_needed"] == 2 for i in items)),
            "people.gold": float(len(gold)),
            "rule.pairs": float(sum(p["labelled_by"] == "rule" for p in sampled)),
        },
    )


@cached_task("labels_to_pairs")
def labels_step(
    stage: str,
    sampled_file: str,
    batch: str,
    store_url: str,
    cfg: RewardConfig,
    c: CollectionConfig,
    toxicity: ToxicityConfig,
    seed: int,
    data_dir: str,
    labels_sha256: str,
    label_files_sha256: dict[str, str] | None,
) -> StepOutput:
    """The store's labels (and the rule annotator's, for `mixed`) -> `preference_pairs` and
    `preference_excluded` rows, through the same judgement path as the rule annotator; a pair
    without a label is excluded as `pairs_unlabelled`. Label quality of the batch: agreement
    between two annotators, gold scores per annotator, and the rule annotator scored against
    people on the same pairs. `labels_sha256` (of the labels) keys the cache; with
    `label_files_sha256` (the reward stage, not a refresh), the configured label files' pairs
    are added as in `collect_step`."""
    from tasks.annotation import quality
    from tasks.annotation.store import AnnotationStore

    log = get_run_logger().info
    sampled = json.loads(Path(sampled_file).read_text())
    store = AnnotationStore(store_url)
    try:
        labels, items = store.current_labels(batch), store.items(batch)
    finally:
        store.close()
    rule = RuleAnnotator(cfg.annotator, make_scorer(toxicity))
    rows, excluded, stats = [], [], {}
    for by, annotator in (("rule", rule), ("people", people.PeopleAnnotator(labels))):
        part = [p for p in sampled if p["labelled_by"] == by]
        if not part:
            continue
        got, dropped, st = annotate_batches(part, annotator, seed, c.max_new_tokens, log=log)
        rows += got
        excluded += dropped
        for k, v in st.items():
            if k != "cutoff_share":
                stats[k] = stats.get(k, 0) + v
        stats[f"{by}.pairs"] = len(got)
    if stats.get("responses"):
        stats["cutoff_share"] = stats["responses_cut_off"] / stats["responses"]
    # label quality: two annotators, gold pairs, and the rule annotator on people's pairs
    by_id = {people.pair_id(p): p for p in sampled if p["labelled_by"] == "people"}
    labelled = [lab for lab in labels if lab["pair_id"] in by_id]
    judged = judge_all(
        rule,
        [by_id[lab["pair_id"]] for lab in labelled],
        [by_id[lab["pair_id"]]["response_a"] for lab in labelled],
        [by_id[lab["pair_id"]]["response_b"] for lab in labelled],
        seed,
    )
    rule_labels = {
        lab["pair_id"]: {
            "preferred": j.preferred,
            "rating": j.rating,
            "safe_a": j.safe_a,
            "safe_b": j.safe_b,
        }
        for lab, j in zip(labelled, judged)
    }
    for name, values in (
        ("agreement", quality.agreement(labels)),
        ("rule_vs_people", quality.rule_vs_people(labels, rule_labels)),
    ):
        stats.update({f"{name}.{k}": v for k, v in values.items()})
    for who, scores in quality.gold_scores(labels, items).items():
        stats.update({f"gold.{who}.{k}": v for k, v in scores.items()})
    stats["people.labels"] = len(labels)
    stats["people.annotators"] = len({lab["annotator"] for lab in labels})
    log(
        f"{stage}: {len(rows)} pairs ({stats.get('people.pairs', 0)} labelled by people), "
        f"{len(excluded)} excluded ({stats.get('excluded.pairs_unlabelled', 0)} unlabelled)"
    )
    quarantined: list[dict] = []
    if label_files_sha256 is not None:
        from_files, quarantined, file_stats = pc.read_label_files(c)
        rows += from_files
        stats.update(file_stats, quarantined=len(quarantined))
    return pairs_output(rows, excluded, quarantined, stats, data_dir)
