import pytest

from data_contracts import get_contract
from tasks.distill.steps import adversarial_prompts, benign_prompts
from tasks.records import dialogue_frame


def dialogue(i, split="train", safety=True, risk="illicit_criminal"):
    return {
        "dialogue_id": f"d{i}",
        "source": "donotanswer",
        "category": "adversarial",
        "system": "",
        "turns": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
        "is_safety": safety,
        "risk_category": risk if safety else None,
        "reference": None,
        "instruction": None,
        "mask_strategy": None,
        "split": split,
        "location": "test",
    }


def test_only_adversarial_train_prompts_are_drawn_and_the_draw_is_seeded():
    rows = (
        [dialogue(i) for i in range(10)]
        + [dialogue(10 + i, split="heldout") for i in range(5)]
        + [dialogue(20 + i, risk=None) for i in range(5)]  # borderline: safety-tagged, no category
        + [dialogue(30 + i, safety=False) for i in range(5)]
    )
    drawn = adversarial_prompts(rows, 6, seed=3)
    assert len(drawn) == 6 and {p["prompt_id"] for p in drawn} <= {f"d{i}" for i in range(10)}
    assert [p["prompt_id"] for p in adversarial_prompts(rows, 6, seed=3)] == [
        p["prompt_id"] for p in drawn
    ]
    assert len(adversarial_prompts(rows, 100, seed=3)) == 10  # no more than there are


def test_replay_draws_only_benign_train_prompts_helpfulness_and_borderline():
    rows = (
        [dialogue(i) for i in range(10)]  # adversarial: never replayed
        + [dialogue(10 + i, split="heldout", safety=False) for i in range(5)]
        + [dialogue(20 + i, risk=None) for i in range(5)]  # borderline
        + [dialogue(30 + i, safety=False) for i in range(5)]  # helpfulness
    )
    drawn = benign_prompts(rows, 100, seed=1)
    assert sorted(p["prompt_id"] for p in drawn) == sorted(
        [f"d{20 + i}" for i in range(5)] + [f"d{30 + i}" for i in range(5)]
    )
    assert [p["prompt_id"] for p in benign_prompts(rows, 4, seed=1)] == [
        p["prompt_id"] for p in benign_prompts(rows, 4, seed=1)
    ]
    assert all(p["risk_category"] is None for p in benign_prompts(rows, 4, seed=2))


def sample(kept, with_, without, reason=None, ended=True, trimmed=False):
    return {
        "prompt_id": f"p{with_}{without}{kept}",
        "system": "",
        "prompt": [{"role": "user", "content": "q"}],
        "risk_category": "hateful_harmful",
        "preprompt_kind": "generic",
        "preprompt": "Be safe.",
        "answer_with": "No.",
        "answer_without": "Sure.",
        "ended_with": ended,
        "ended_without": True,
        "trimmed_with": trimmed,
        "score_with": with_,
        "score_without": without,
        "delta": with_ - without,
        "kept": kept,
        "reason": reason,
    }


def test_contract_refuses_a_kept_row_that_did_not_improve_and_a_dropped_row_without_reason():
    contract = get_contract("distillation_samples")
    contract.validate(
        dialogue_frame(
            [sample(True, 0.9, 0.4), sample(False, 0.4, 0.4, "not_better")], "distillation_samples"
        ),
        "test",
    )
    with pytest.raises(Exception, match="kept row"):
        contract.validate(dialogue_frame([sample(True, 0.4, 0.4)], "distillation_samples"), "test")
    with pytest.raises(Exception, match="kept row"):
        contract.validate(dialogue_frame([sample(False, 0.2, 0.4)], "distillation_samples"), "test")
    # a cut-off answer is never kept as a target, however much it gained
    contract.validate(
        dialogue_frame([sample(False, 0.9, 0.4, "cut_off", ended=False)], "distillation_samples"),
        "test",
    )
    with pytest.raises(Exception, match="kept row"):
        contract.validate(
            dialogue_frame([sample(True, 0.9, 0.4, ended=False)], "distillation_samples"), "test"
        )


def test_contract_refuses_a_trimmed_answer_that_does_not_count_as_ended():
    contract = get_contract("distillation_samples")
    contract.validate(
        dialogue_frame([sample(True, 0.9, 0.4, trimmed=True)], "distillation_samples"), "test"
    )
    with pytest.raises(Exception, match="trimmed"):
        contract.validate(
            dialogue_frame(
                [sample(False, 0.9, 0.4, "cut_off", ended=False, trimmed=True)],
                "distillation_samples",
            ),
            "test",
        )
