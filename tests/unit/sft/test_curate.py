"""Curation rules: each drops what it names and keeps the rest; nothing is lost."""

import pytest

from tasks.judges.toxicity import ProfanityCheckScorer
from tasks.sft.curate import CurationConfig, curate


def dialogue(i, *pairs, source="chitchat", system=""):
    turns = []
    for user, answer in pairs:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {
        "dialogue_id": f"{source}:{i}",
        "source": source,
        "category": "chitchat",
        "system": system,
        "turns": turns,
        "is_safety": False,
        "risk_category": None,
        "reference": "x",
        "instruction": None,
        "mask_strategy": None,
        "split": "train",
        "location": f"test:{i}",
    }


@pytest.fixture(scope="module")
def scorer():
    return ProfanityCheckScorer()


def test_each_rule_names_its_reason_and_accounting_adds_up(scorer):
    rows = [
        dialogue(0, ("hi there", "hello, how are you?")),
        dialogue(1, ("hi there", "x" * 700)),  # too long
        dialogue(2, ("hi there", "k")),  # too short an answer
        dialogue(3, ("HI  there", "Hello, how are you?")),  # duplicate of 0 (case, spaces)
        dialogue(4, ("what do you think of him?", "he is a fucking idiot and a piece of shit")),
        dialogue(
            5, ("tell me a fucking joke", "Why did the chicken cross the road? To get across.")
        ),
    ]
    kept, excluded, stats = curate(
        rows, CurationConfig(max_turn_chars=600, min_answer_chars=2), scorer
    )
    reasons = {row["dialogue_id"]: reason for row, reason, _ in excluded}
    assert reasons == {
        "chitchat:1": "curate_turn_too_long",
        "chitchat:2": "curate_turn_too_short",
        "chitchat:3": "curate_duplicate",
        "chitchat:4": "curate_toxic_response",
    }
    # a toxic *prompt* is not a reason: only answers are checked
    assert [r["dialogue_id"] for r in kept] == ["chitchat:0", "chitchat:5"]
    assert stats["dialogues_in"] == stats["dialogues_kept"] + stats["dialogues_excluded"] == 6
    assert stats["excluded.curate_duplicate"] == 1


def test_long_dialogues_are_cut_to_max_turns_or_dropped():
    row = dialogue(0, *[(f"question {i}", f"answer {i}") for i in range(5)])
    kept, excluded, stats = curate([row], CurationConfig(max_turns=3), None)
    assert len(kept[0]["turns"]) == 6 and kept[0]["turns"][-1]["content"] == "answer 2"
    assert kept[0]["reference"] is None  # the reference answered the (now removed) last turn
    assert stats["dialogues_truncated"] == 1 and stats["toxicity_checked"] == 0
    kept, excluded, _ = curate([row], CurationConfig(max_turns=3, truncate_turns=False), None)
    assert not kept and excluded[0][1] == "curate_too_many_turns"
