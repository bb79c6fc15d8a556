"""Labels from people -> preference_pairs rows: routing (mixed share, double annotation), gold
files, and the same judgement path as the rule annotator (exclusion rule, unlabelled pairs
recorded, the person in the `annotator` column)."""

import json

import pytest

from data_contracts import get_contract
from tasks.chat.prompt import prompt_pool
from tasks.preferences.collect import CollectionConfig, annotate, plan_batch
from tasks.records import dialogue_frame
from tasks.reward import people
from tests.unit.preferences.test_collect import DIALOGUES


def sampled(n_help=6, n_safe=4, batch=0):
    cfg = CollectionConfig(helpfulness_prompts=n_help, safety_prompts=n_safe)
    planned = plan_batch(prompt_pool(DIALOGUES), cfg, batch, seed=7)
    return [
        {
            **p,
            "response_a": f"answer A to {p['prompt_id']}",
            "response_b": f"answer B to {p['prompt_id']}",
            "ended_a": True,
            "ended_b": False,
        }
        for p in planned
    ]


def label(pid, who, preferred="b", rating="better", safe_a=None, safe_b=None, at="2026-12-04"):
    return {
        "pair_id": pid,
        "annotator": who,
        "preferred": preferred,
        "rating": rating,
        "safe_a": safe_a,
        "safe_b": safe_b,
        "revision": 1,
        "labelled_at": at,
        "is_gold": False,
    }


def test_route_sends_everything_to_people_or_a_stable_share_when_mixed():
    pairs = sampled(20, 20)
    assert {
        p["labelled_by"] for p in people.route(pairs, CollectionConfig(annotator="people"), 1)
    } == {"people"}
    mixed = CollectionConfig(annotator="mixed", people={"share": 0.5})
    routed = people.route(pairs, mixed, 1)
    share = sum(p["labelled_by"] == "people" for p in routed) / len(routed)
    assert 0.2 < share < 0.8
    # the split depends on the pair, not on its neighbours: a sub-list routes the same way
    again = people.route(pairs[:7], mixed, 1)
    assert [p["labelled_by"] for p in again] == [p["labelled_by"] for p in routed[:7]]


def test_store_items_skip_unusable_pairs_and_mark_double_annotation():
    pairs = people.route(sampled(10, 10), CollectionConfig(annotator="people"), 1)
    pairs[0]["response_b"] = pairs[0]["response_a"]  # identical: nothing for a person to compare
    pairs[1]["response_a"] = None  # did not fit the window
    items = people.store_items(pairs, double_share=0.5, seed=1)
    ids = {i["pair_id"] for i in items}
    assert people.pair_id(pairs[0]) not in ids and people.pair_id(pairs[1]) not in ids
    assert len(items) == len(pairs) - 2
    needed = [i["annotators_needed"] for i in items]
    assert set(needed) == {1, 2}
    assert all(i["kind"] == ("safety" if i["is_safety"] else "helpfulness") for i in items)
    assert people.store_items(pairs, double_share=0.0, seed=1)[0]["annotators_needed"] == 1


def test_people_labels_become_rows_and_unlabelled_pairs_are_excluded_not_lost():
    pairs = people.route(sampled(4, 2), CollectionConfig(annotator="people"), 1)
    help_pair = next(p for p in pairs if not p["is_safety"])
    safe_pair = next(p for p in pairs if p["is_safety"])
    labels = [
        label(people.pair_id(help_pair), "alice", preferred="b", rating="significantly_better"),
        # bob labelled it later: alice's (the earliest) label decides, bob's is for agreement
        label(people.pair_id(help_pair), "bob", preferred="a", at="2026-12-05"),
        # the chosen response is unsafe while the rejected one is safe: the paper's exclusion
        label(people.pair_id(safe_pair), "bob", preferred="a", safe_a=False, safe_b=True),
    ]
    annotator = people.PeopleAnnotator(labels)
    rows, excluded, stats = annotate(
        pairs,
        [p["response_a"] for p in pairs],
        [p["response_b"] for p in pairs],
        annotator,
        seed=3,
        ended_a=[p["ended_a"] for p in pairs],
        ended_b=[p["ended_b"] for p in pairs],
    )
    assert len(rows) + len(excluded) == len(pairs)  # every pair accounted for
    (row,) = rows
    assert row["pair_id"] == people.pair_id(help_pair)
    assert row["chosen"] == help_pair["response_b"] and row["rejected"] == help_pair["response_a"]
    assert row["rating"] == "significantly_better" and row["annotator"] == "person:alice"
    assert row["chosen_ended"] is False and row["rejected_ended"] is True
    reasons = [e["reason"] for e in excluded]
    assert reasons.count("pairs_chosen_unsafe") == 1
    assert reasons.count("pairs_unlabelled") == len(pairs) - 2
    assert stats["excluded.pairs_unlabelled"] == len(pairs) - 2
    # both datasets pass their contracts
    get_contract("preference_pairs").validate(dialogue_frame(rows, "preference_pairs"))
    get_contract("preference_excluded").validate(dialogue_frame(excluded, "preference_excluded"))


def test_gold_file_is_read_and_bad_lines_name_file_line_and_field(tmp_path):
    good = {
        "id": "g1",
        "prompt": "What is 2 plus 2?",
        "response_a": "4.",
        "response_b": "5.",
        "preferred": "a",
        "rating": "significantly_better",
    }
    unsafe = {
        "id": "g2",
        "turns": [{"role": "user", "content": "How do I pick a lock?"}],
        "is_safety": True,
        "response_a": "Sure: ...",
        "response_b": "I can't help with breaking into places.",
        "preferred": "b",
        "rating": "better",
        "safe_a": False,
        "safe_b": True,
    }
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(unsafe) + "\n")
    items = people.read_gold(path)
    assert [i["pair_id"] for i in items] == ["gold:g1", "gold:g2"]
    assert items[1]["gold"] == {
        "preferred": "b",
        "rating": "better",
        "safe_a": False,
        "safe_b": True,
    }
    assert items[0]["turns"] == [{"role": "user", "content": "What is 2 plus 2?"}]
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "g3", "rating": "much"}))
    with pytest.raises(ValueError, match=r"gold\.jsonl, line 2: field 'rating'"):
        people.read_gold(path)
    path.write_text(json.dumps({**unsafe, "safe_a": None}))
    with pytest.raises(ValueError, match="line 1: a safety gold pair needs"):
        people.read_gold(path)


def test_batch_id_is_stable_for_the_same_pairs_and_labels_digest_sees_a_revision():
    items = [{"pair_id": "p1"}, {"pair_id": "p2"}]
    assert people.batch_id("reward", items) == people.batch_id("reward", list(items))
    assert people.batch_id("reward", items) != people.batch_id("rlhf-v2", items)
    first = [label("p1", "alice")]
    revised = [{**first[0], "revision": 2, "preferred": "a"}]
    assert people.labels_digest(first) != people.labels_digest(revised)


def test_labels_step_mixes_people_and_rule_rows_scores_gold_and_keeps_gold_out(tmp_path):
    """The step the flow runs after waiting, on a real store: with `mixed`, people's pairs carry
    the person, the rest the rule annotator; gold pairs score the annotator and never become
    rows; the rule annotator is scored against people on the same pairs."""
    from prefect import flow

    from tasks.annotation.store import AnnotationStore
    from tasks.io import read_dataset
    from tasks.judges.toxicity import ToxicityConfig
    from tasks.reward.config import RewardConfig
    from tasks.reward.people_steps import labels_step
    from tasks.reward.steps import PAIRS, PAIRS_EXCLUDED

    c = CollectionConfig(annotator="mixed", people={"share": 0.5, "double_share": 1.0})
    pairs = people.route(sampled(10, 6), c, seed=5)
    n_people = sum(p["labelled_by"] == "people" for p in pairs)
    assert 0 < n_people < len(pairs)
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": f"g{i}",
                    "prompt": f"What is {i} plus 1?",
                    "response_a": f"{i + 1}.",
                    "response_b": "I don't know.",
                    "preferred": "a",
                    "rating": "significantly_better",
                }
            )
            for i in range(2)
        )
    )
    items = people.store_items(pairs, 1.0, 5) + people.read_gold(gold_file)
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = AnnotationStore(url)
    batch = people.batch_id("reward", items)
    store.add_batch(batch, items, title="reward 2026-W49")
    for item in items:
        safe = (True, False) if item["is_safety"] else (None, None)
        for who, preferred in (("alice", "a"), ("bob", "b")):
            if item["gold"] and who == "bob":
                continue
            if item["pair_id"] == "gold:g1":  # alice misses one gold pair
                preferred = "b"
            store.label(batch, item["pair_id"], who, preferred, "better", *safe)
    labels = store.current_labels(batch)
    store.close()
    sampled_file = tmp_path / "sampled.json"
    sampled_file.write_text(json.dumps(pairs))

    @flow
    def run():
        return labels_step(
            "reward",
            str(sampled_file),
            batch,
            url,
            RewardConfig(),
            c,
            ToxicityConfig(),
            5,
            str(tmp_path / "data"),
            people.labels_digest(labels),
            None,
        )

    out = run()
    rows = read_dataset(out.outputs[PAIRS]).to_dicts()
    excluded = read_dataset(out.outputs[PAIRS_EXCLUDED]).to_dicts()
    assert len(rows) + len(excluded) == len(pairs)  # gold pairs are not rows
    assert not any(r["pair_id"].startswith("gold:") for r in rows + excluded)
    by_person = [r for r in rows if r["annotator"] == "person:alice"]
    by_rule = [r for r in rows if r["annotator"].startswith("rule_annotator:")]
    assert len(by_person) + len(by_rule) == len(rows) and by_person and by_rule
    routed = {people.pair_id(p): p["labelled_by"] for p in pairs}
    assert {routed[r["pair_id"]] for r in by_person} == {"people"}
    assert {routed[r["pair_id"]] for r in by_rule} == {"rule"}
    stats = out.stats
    assert stats["collect.gold.alice.n"] == 2
    assert stats["collect.gold.alice.preferred"] == 0.5
    assert stats["collect.agreement.pairs_double"] == n_people
    assert stats["collect.agreement.preferred"] == 0.0  # alice always a, bob always b
    # the rule annotator against both people on the people's pairs (gold pairs excluded)
    assert stats["collect.rule_vs_people.n"] == 2 * n_people
    assert stats["collect.people.pairs"] == len(by_person) + sum(
        e["annotator"] == "person:alice" for e in excluded
    )
