import pytest

from data_contracts import get_contract
from tasks.records import dialogue_frame
from tasks.rlhf.rejection import (
    all_cut_off,
    annotator_agreement,
    best_of_n_curve,
    curve_png,
    cutoff_share,
    mark_best,
    pooled_candidates,
)


def row(prompt_id, sample, r_c, round_=1, origin=None, best=False, is_safety=False, ended=True):
    return {
        "round": round_,
        "prompt_id": prompt_id,
        "system": "",
        "is_safety": is_safety,
        "prompt": [{"role": "user", "content": f"question {prompt_id}"}],
        "category": "task",
        "risk_category": None,
        "reference": None,
        "sample": sample,
        "response": f"{prompt_id}-{sample}",
        "ended": ended,
        "temperature": 1.0,
        "r_h": r_c,
        "r_s": 0.5,
        "r_c": r_c,
        "origin_round": origin or round_,
        "is_best": best,
    }


def test_best_is_the_highest_r_c_per_prompt_with_ties_to_the_earliest_sample():
    rows = mark_best(
        [row("a", 0, 0.2), row("a", 1, 0.9), row("a", 2, 0.9), row("b", 0, 0.7), row("b", 1, 0.1)]
    )
    assert [(r["prompt_id"], r["sample"]) for r in rows if r["is_best"]] == [("a", 1), ("b", 0)]
    # and the rows satisfy the contract's one-best-per-prompt check
    get_contract("rejection_samples").validate(dialogue_frame(rows, "rejection_samples"), "test")


def test_a_cut_off_answer_never_wins_best_of_k():
    # K = 4 per prompt; the cut-off sample has the highest reward of its prompt every time
    rows = mark_best(
        [
            row("a", 0, 0.99, ended=False),
            row("a", 1, 0.30),
            row("a", 2, 0.60),
            row("a", 3, 0.95, ended=False),
            row("b", 0, 0.10),
            row("b", 1, 0.97, ended=False),
        ]
    )
    best = [(r["prompt_id"], r["sample"]) for r in rows if r["is_best"]]
    assert best == [("a", 2), ("b", 0)]  # the best among the answers that ended
    assert all(r["ended"] for r in rows if r["is_best"])
    get_contract("rejection_samples").validate(dialogue_frame(rows, "rejection_samples"), "test")


def test_a_prompt_whose_samples_were_all_cut_off_keeps_its_best_cut_off_one_counted():
    rows = mark_best(
        [row("a", 0, 0.8, ended=False), row("a", 1, 0.9, ended=False), row("b", 0, 0.1)]
    )
    assert [(r["prompt_id"], r["sample"]) for r in rows if r["is_best"]] == [("a", 1), ("b", 0)]
    assert all_cut_off(rows) == ["a"]
    assert cutoff_share(rows) == pytest.approx(2 / 3) and cutoff_share([]) == 0.0
    contract = get_contract("rejection_samples")
    contract.validate(dialogue_frame(rows, "rejection_samples"), "test")
    # the contract refuses a cut-off best next to an ended sample of the same prompt
    bad = [dict(row("c", 0, 0.9, ended=False), is_best=True), row("c", 1, 0.1)]
    with pytest.raises(Exception, match="an ended one when any ended"):
        contract.validate(dialogue_frame(bad, "rejection_samples"), "test")


def test_contract_rejects_two_bests_for_one_prompt_and_an_r_c_from_nowhere():
    contract = get_contract("rejection_samples")
    two = [row("a", 0, 0.5, best=True), row("a", 1, 0.4, best=True)]
    with pytest.raises(Exception, match="exactly one best"):
        contract.validate(dialogue_frame(two, "rejection_samples"), "test")
    odd = [dict(row("a", 0, 0.5, best=True), r_c=0.42)]
    with pytest.raises(Exception, match="r_c must equal"):
        contract.validate(dialogue_frame(odd, "rejection_samples"), "test")


def test_fig7_curve_max_grows_with_n_while_median_is_the_median_of_the_first_n():
    # prompt a: 0.1, 0.5, 0.9 ; prompt b: 0.3, 0.3, 0.6
    rows = [row("a", k, v) for k, v in enumerate([0.1, 0.5, 0.9])] + [
        row("b", k, v) for k, v in enumerate([0.3, 0.3, 0.6])
    ]
    curve = best_of_n_curve(rows)
    assert [c["n"] for c in curve] == [1, 2, 3]
    assert [c["max"] for c in curve] == pytest.approx(
        [(0.1 + 0.3) / 2, (0.5 + 0.3) / 2, (0.9 + 0.6) / 2]
    )
    assert [c["median"] for c in curve] == pytest.approx(
        [(0.1 + 0.3) / 2, (0.3 + 0.3) / 2, (0.5 + 0.3) / 2]
    )
    assert curve_png({"V1": curve}).startswith(b"\x89PNG")


def test_fig7_ignores_pooled_rows_from_earlier_rounds():
    rows = [
        row("a", 0, 0.2, round_=2),
        row("a", 1, 0.4, round_=2),
        row("a", 0, 0.99, round_=2, origin=1),
    ]
    assert [c["max"] for c in best_of_n_curve(rows)] == pytest.approx([0.2, 0.4])


def test_pooling_starts_at_rs_pool_from_and_keeps_only_earlier_bests_of_sampled_prompts():
    earlier = [
        row("a", 0, 0.9, round_=1, best=True),
        row("a", 1, 0.1, round_=1),
        row("b", 2, 0.8, round_=1, best=True),
        row("a", 0, 0.9, round_=2, origin=1, best=True),  # round 2 kept round 1's text
        row("a", 1, 0.3, round_=2),
    ]
    assert pooled_candidates(3, earlier, {"a"}, rs_pool_from=4) == []
    pooled = pooled_candidates(3, earlier, {"a"}, rs_pool_from=3)
    # round 1's best of "a" once (round 2's best is the same text), nothing of "b" (not sampled)
    assert [(r["prompt_id"], r["origin_round"], r["sample"], r["round"]) for r in pooled] == [
        ("a", 1, 0, 3)
    ]
    fresh = [row("a", k, v, round_=3) for k, v in enumerate([0.5, 0.95])]
    best = [
        r for r in mark_best(fresh + [dict(p, r_c=0.7, r_h=0.7) for p in pooled]) if r["is_best"]
    ]
    assert [(r["origin_round"], r["sample"]) for r in best] == [(3, 1)]
    best = [
        r
        for r in mark_best(fresh[:1] + [dict(p, r_c=0.7, r_h=0.7) for p in pooled])
        if r["is_best"]
    ]
    assert [(r["origin_round"], r["sample"]) for r in best] == [(1, 0)]


def test_annotator_agreement_tells_a_pick_the_judge_finds_worse_than_a_random_sample():
    # prompt a: the RMs pick the sample the annotator scores lowest; prompt b: its highest
    rows = mark_best(
        [row("a", 0, 0.9), row("a", 1, 0.5), row("a", 2, 0.1)]
        + [row("b", 0, 0.2), row("b", 1, 0.8)]
    )
    scores = [0.2, 0.5, 0.8, 0.3, 0.7]
    got = annotator_agreement(rows, scores)
    assert got["helpfulness.prompts"] == 2
    assert got["helpfulness.pick"] == pytest.approx((0.2 + 0.7) / 2)
    assert got["helpfulness.sample"] == pytest.approx((0.5 + 0.5) / 2)
    assert got["helpfulness.best"] == pytest.approx((0.8 + 0.7) / 2)
    # a: 3 pairs, all ordered against the annotator; b: 1 pair, ordered with it
    assert got["helpfulness.concordance"] == pytest.approx(1 / 4)
    assert not any(k.startswith("safety.") for k in got)


def test_annotator_agreement_splits_by_axis_and_skips_pairs_the_annotator_ties():
    rows = mark_best(
        [row("s", 0, 0.3, is_safety=True), row("s", 1, 0.6, is_safety=True)]
        + [row("h", 0, 0.4), row("h", 1, 0.6), row("h", 2, 0.6)]
    )
    got = annotator_agreement(rows, [0.9, 0.4, 0.5, 0.5, 0.5])
    assert got["safety.pick"] == pytest.approx(0.4) and got["safety.best"] == pytest.approx(0.9)
    assert got["safety.concordance"] == 0.0
    assert "helpfulness.concordance" not in got  # every pair tied by the annotator
    assert got["helpfulness.pick"] == got["helpfulness.sample"] == pytest.approx(0.5)


def test_annotator_agreement_counts_a_pooled_best_as_the_pick_but_not_as_a_sample():
    rows = mark_best(
        [row("a", 0, 0.3, round_=3), row("a", 1, 0.4, round_=3), row("a", 5, 0.9, 3, origin=2)]
    )
    got = annotator_agreement(rows, [0.2, 0.4, 1.0])
    assert got["helpfulness.pick"] == pytest.approx(1.0)  # the earlier round's answer won
    assert got["helpfulness.sample"] == pytest.approx(0.3)  # this round's two samples
    assert got["helpfulness.concordance"] == 1.0
    with pytest.raises(ValueError, match="3 rows"):
        annotator_agreement(rows, [0.1])
