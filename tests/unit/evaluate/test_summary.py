import pytest

from data_contracts import get_contract
from tasks.evaluate.summary import summary_table
from tasks.records import dialogue_frame


def row(
    version,
    order,
    suite,
    prompt_id,
    *,
    v_rm=None,
    v_ann=None,
    refusal=False,
    tox=0.0,
    truthful=None,
    r_h=0.5,
    score=0.5,
    risk=None,
    ended=True,
):
    adversarial = suite in ("adversarial", "multi_turn", "red_team")
    return {
        "version": version,
        "order": order,
        "suite": suite,
        "prompt_id": prompt_id,
        "category": "c",
        "risk_category": risk if adversarial else None,
        "answer": "a",
        "ended": ended,
        "r_h": r_h,
        "r_s": 0.5,
        "violation_rm": v_rm if adversarial else None,
        "violation_annotator": v_ann if adversarial else None,
        "refusal": refusal,
        "toxicity": tox,
        "truthful": truthful,
        "annotator_score": score,
    }


def test_summary_rates_by_hand_and_red_team_carry_over():
    rows = []
    for version, order in (("sft", 0), ("rlhf-v1", 1)):
        fixed = version == "rlhf-v1"
        rows += [
            row(
                version,
                order,
                "adversarial",
                "a1",
                v_rm=True,
                v_ann=not fixed,
                risk="illicit_criminal",
            ),
            row(
                version, order, "adversarial", "a2", v_rm=False, v_ann=False, risk="hateful_harmful"
            ),
            row(version, order, "red_team", "r1", v_rm=True, v_ann=True, risk="illicit_criminal"),
            row(
                version,
                order,
                "red_team",
                "r2",
                v_rm=True,
                v_ann=not fixed,
                risk="illicit_criminal",
            ),
            row(version, order, "borderline", "b1", refusal=fixed),
            row(
                version,
                order,
                "helpfulness",
                "h1",
                r_h=0.9 if fixed else 0.5,
                score=0.2 if fixed else 0.5,
            ),
            row(version, order, "helpfulness", "h2", r_h=0.5, score=0.5),
            row(version, order, "realtoxicity", "t1", tox=0.7),
            row(version, order, "realtoxicity", "t2", tox=0.1),
            row(version, order, "truthfulqa", "q1", truthful=fixed),
        ]
    frame = dialogue_frame(rows, "eval_results")
    get_contract("eval_results").validate(frame, "test")
    table, by_cat, red = summary_table(frame)
    sft, v1 = table.row(0, named=True), table.row(1, named=True)
    assert table["version"].to_list() == ["sft", "rlhf-v1"]
    assert (sft["violation_rm_%"], sft["violation_annotator_%"]) == (50.0, 50.0)
    assert v1["violation_annotator_%"] == 0.0 and v1["red_team_violation_%"] == 50.0
    assert (sft["false_refusal_borderline_%"], v1["false_refusal_borderline_%"]) == (0.0, 100.0)
    assert v1["toxic_%"] == 50.0 and (sft["truthful_%"], v1["truthful_%"]) == (0.0, 100.0)
    assert v1["mean_r_h"] == pytest.approx(0.7)
    # h1: RM prefers v1 (win), annotator prefers SFT (loss); h2 ties -> 75 % and 25 %
    assert (v1["win_vs_sft_rm_%"], v1["win_vs_sft_annotator_%"]) == (75.0, 25.0)
    assert sft["multi_turn_violation_rm_%"] is None  # no multi-turn prompt: not measured, not 0
    cats = {
        (r["version"], r["risk_category"]): r["violation_annotator_%"] for r in by_cat.to_dicts()
    }
    assert (
        cats[("sft", "illicit_criminal")] == 100.0 and cats[("rlhf-v1", "illicit_criminal")] == 0.0
    )
    red = red.to_dicts()
    assert red[0]["share_fixed_%"] is None  # nothing before SFT
    assert (
        red[1]["violating_prompts"],
        red[1]["previous_violations_now_safe"],
        red[1]["share_fixed_%"],
    ) == (1, 1, 50.0)


def test_contract_wants_violation_judgements_exactly_on_adversarial_suites():
    bad = [dict(row("sft", 0, "helpfulness", "h1"), violation_rm=True, violation_annotator=False)]
    with pytest.raises(Exception, match="adversarial suites"):
        get_contract("eval_results").validate(dialogue_frame(bad, "eval_results"), "test")
    missing = [
        dict(row("sft", 0, "adversarial", "a1", v_rm=True, v_ann=True), violation_annotator=None)
    ]
    with pytest.raises(Exception, match="adversarial suites"):
        get_contract("eval_results").validate(dialogue_frame(missing, "eval_results"), "test")


def test_cut_off_share_per_version_over_all_suites():
    rows = [
        row("sft", 0, "helpfulness", "h1", ended=False),
        row("sft", 0, "borderline", "b1"),
        row("sft", 0, "adversarial", "a1", v_rm=False, v_ann=False, risk="illicit_criminal"),
        row("sft", 0, "truthfulqa", "t1", truthful=True, ended=False),
        row("rlhf-v1", 1, "helpfulness", "h1"),
        row("rlhf-v1", 1, "borderline", "b1"),
    ]
    frame = dialogue_frame(rows, "eval_results")
    get_contract("eval_results").validate(frame, "test")
    table = summary_table(frame)[0]
    assert table["cut_off_%"].to_list() == [50.0, 0.0]
