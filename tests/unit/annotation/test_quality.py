"""Label-quality metrics on a small made-up set, every number worked out by hand."""

import pytest

from tasks.annotation.quality import agreement, gold_scores, rule_vs_people


def lab(pair_id, annotator, preferred, rating, safe_a=None, safe_b=None):
    return {
        "pair_id": pair_id,
        "annotator": annotator,
        "preferred": preferred,
        "rating": rating,
        "safe_a": safe_a,
        "safe_b": safe_b,
        "is_safety": pair_id in ("p3", "p4"),
    }


# p1, p2 helpfulness; p3, p4 safety; p5 labelled once (not a double pair). carol on p4 is a
# third person: agreement takes the first two by id (alice, bob).
LABELS = [
    lab("p1", "alice", "a", "better"),
    lab("p1", "bob", "a", "better"),  # same response, same level
    lab("p2", "alice", "a", "significantly_better"),
    lab("p2", "bob", "a", "better"),  # same response, other level
    lab("p3", "alice", "b", "slightly_better", safe_a=False, safe_b=True),
    lab("p3", "bob", "a", "slightly_better", safe_a=False, safe_b=False),  # other response
    lab("p4", "alice", "b", "better", safe_a=True, safe_b=True),
    lab("p4", "bob", "b", "better", safe_a=True, safe_b=True),
    lab("p4", "carol", "a", "better", safe_a=True, safe_b=False),
    lab("p5", "alice", "a", "better"),
]


def test_agreement_by_hand():
    got = agreement(LABELS)
    assert got == pytest.approx(
        {
            "pairs_double": 4,  # p1..p4
            "preferred": 3 / 4,  # p1, p2, p4
            "rating_exact": 2 / 4,  # p1, p4
            # alice's level -> bob agrees: better p1 yes, p4 yes; significantly p2 no;
            # slightly p3 no; negligibly: no data, no key
            "by_level.better": 1.0,
            "by_level.significantly_better": 0.0,
            "by_level.slightly_better": 0.0,
            # per response over p3, p4: p3a F/F yes, p3b T/F no, p4a T/T yes, p4b T/T yes
            "safety": 3 / 4,
            "safety.safe": 2 / 3,  # alice safe: p3b no, p4a yes, p4b yes
            "safety.unsafe": 1.0,  # alice unsafe: p3a yes
        }
    )


def test_agreement_without_double_pairs_has_no_shares():
    assert agreement([lab("p5", "alice", "a", "better")]) == {"pairs_double": 0.0}
    assert agreement([]) == {"pairs_double": 0.0}


def test_gold_scores_by_hand():
    items = [
        {"pair_id": "p1", "gold": None},
        {
            "pair_id": "p2",
            "gold": {"preferred": "a", "rating": "better", "safe_a": None, "safe_b": None},
        },
        {
            "pair_id": "p4",
            "gold": {"preferred": "b", "rating": "better", "safe_a": True, "safe_b": False},
        },
    ]
    assert gold_scores(LABELS, items) == (  # halves: exact in floating point
        {
            # p2: a yes / level no; p4: b yes / level yes; safety p4: a T=T yes, b T!=F no
            "alice": {"n": 2, "preferred": 1.0, "rating": 0.5, "safety": 0.5},
            # p2: yes / yes; p4: yes / yes; safety as alice's
            "bob": {"n": 2, "preferred": 1.0, "rating": 1.0, "safety": 0.5},
            # p4: a, not b (so the level does not count either); safety T=T, F=F
            "carol": {"n": 1, "preferred": 0.0, "rating": 0.0, "safety": 1.0},
        }
    )
    assert gold_scores(LABELS, [{"pair_id": "p1", "gold": None}]) == {}


def test_rule_vs_people_by_hand():
    rule = {
        "p1": {"preferred": "a", "rating": "significantly_better", "safe_a": None, "safe_b": None},
        "p3": {"preferred": "b", "rating": "slightly_better", "safe_a": False, "safe_b": True},
        "p9": {"preferred": "a", "rating": "better", "safe_a": None, "safe_b": None},  # no people
    }
    assert rule_vs_people(LABELS, rule) == pytest.approx(
        {
            "n": 4,  # alice and bob on p1 and p3
            "preferred": 3 / 4,  # p1 both, p3 alice
            "rating_exact": 1 / 4,  # p3 alice only (p1: other level)
            "safety": 3 / 4,  # p3 alice F=F, T=T; bob F=F, F!=T
        }
    )
    assert rule_vs_people(LABELS, {}) == {"n": 0.0}
