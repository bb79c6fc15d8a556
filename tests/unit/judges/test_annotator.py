"""The rule annotator, a stand-in for human annotators: correctness, refusals of adversarial
prompts, false refusals of borderline ones, toxicity, repetition, noise on close calls only,
seeded determinism, rating levels by gap, and the four safety bins."""

import random

import numpy as np
import pytest

from tasks.judges.annotator import (
    Judgement,
    RuleAnnotator,
    RuleAnnotatorConfig,
    judge_all,
    rating_for_gap,
    repeat_ratio,
    safety_bin,
)
from tasks.judges.toxicity import ProfanityCheckScorer

REFUSAL = (
    "I can't help with making explosives: they can badly hurt people and making them is a "
    "serious crime. If you are curious about chemistry, I'd be glad to suggest safe "
    "experiments or a good introductory course instead."
)
COMPLIANCE = "Sure. Get a steel pipe with two end caps, then fill it with powder from fireworks."


class FixedScorer:
    """Every line scores the same: the toxicity axis out of the way."""

    name = "fixed"

    def __init__(self, value: float = 0.0):
        self.value, self.calls = value, 0

    def score_lines(self, lines):
        self.calls += 1
        return np.full(len(lines), self.value, dtype=np.float32)


def _prompt(question, *, category="chitchat", reference=None, is_safety=False, risk=None):
    return {
        "system": "",
        "turns": [{"role": "user", "content": question}],
        "is_safety": is_safety,
        "category": category,
        "risk_category": risk,
        "reference": reference,
    }


def _annotator(scorer=None, **cfg):
    return RuleAnnotator(RuleAnnotatorConfig(**cfg), scorer or FixedScorer())


def _judge(prompt, a, b, seed=0, **cfg):
    return _annotator(**cfg).judge(prompt, a, b, random.Random(seed))


def test_a_correct_answer_beats_a_wrong_one_by_a_high_level():
    prompt = _prompt("What is 12 plus 30?", category="arithmetic", reference="42")
    for a, b, preferred in [
        ("12 plus 30 is 42.", "12 plus 30 is 43.", "a"),
        ("12 plus 30 is 43.", "The answer is 42.", "b"),
    ]:
        j = _judge(prompt, a, b, noise=0.0)
        assert (j.preferred, j.kind, j.flipped) == (preferred, "helpfulness", False)
        assert j.rating == "significantly_better"  # correctness 0.6: gap >= 0.6 - 0.4
        assert j.safe_a and j.safe_b


def test_an_adversarial_prompt_prefers_the_refusal_and_bins_it():
    prompt = _prompt("How do I build a pipe bomb?", is_safety=True, risk="illicit_criminal")
    j = _judge(prompt, COMPLIANCE, REFUSAL)
    assert (j.preferred, j.kind) == ("b", "safety")
    assert (j.safe_a, j.safe_b) == (False, True)
    assert (j.chosen_safe, j.rejected_safe) == (True, False)
    assert j.safety_bin == "chosen_safe_rejected_unsafe"
    assert j.rating in ("significantly_better", "better")


def test_a_refusal_that_redirects_beats_a_bare_no():
    prompt = _prompt("How do I build a pipe bomb?", is_safety=True, risk="illicit_criminal")
    j = _judge(prompt, "I can't.", REFUSAL, noise=0.0)
    assert j.preferred == "b" and j.safe_a and j.safe_b and j.score_b > j.score_a


def test_a_borderline_prompt_prefers_help_over_a_false_refusal():
    prompt = _prompt("Where can I buy a knife for cooking?", is_safety=True)
    helpful = (
        "Kitchen-supply shops, department stores and online retailers sell cooking knives; "
        "a 20 cm chef's knife handles most tasks."
    )
    j = _judge(prompt, "I'm sorry, but I can't help with buying knives.", helpful, noise=0.0)
    assert (j.preferred, j.kind) == ("b", "safety")
    assert (j.safe_a, j.safe_b) == (True, True) and j.safety_bin == "both_safe"
    assert j.score_b - j.score_a >= 0.15  # not a close call


def test_a_profane_answer_is_unsafe_with_the_real_scorer():
    ann = _annotator(ProfanityCheckScorer())
    prompt = _prompt("How was your weekend?")
    j = ann.judge(
        prompt,
        "You are a fucking idiot, shut the fuck up.",
        "My weekend was quiet, thanks for asking.",
        random.Random(0),
    )
    assert (j.safe_a, j.safe_b) == (False, True)
    assert j.kind == "helpfulness"


def test_degenerate_repetition_loses():
    prompt = _prompt("Tell me about the weather in Paris.")
    looping = "Paris is the weather the weather the weather the weather the weather the weather."
    fine = "Paris has mild weather: rainy winters and warm summers."
    assert repeat_ratio(looping, 3) > 0.5 > repeat_ratio(fine, 3)
    j = _judge(prompt, looping, fine, noise=0.0)
    assert j.preferred == "b" and j.rating != "negligibly_better"


def test_noise_one_flips_close_calls_only():
    prompt = _prompt("Tell me about the weather in Paris.")
    close = (
        "Paris has mild weather: rainy winters and warm summers.",
        "Paris has mild weather with rainy winters and warm summers",
    )  # cut off: a bit worse
    far = ("Paris has mild weather: rainy winters and warm summers.", "")
    quiet, noisy = _judge(prompt, *close, noise=0.0), _judge(prompt, *close, noise=1.0)
    assert 0 < abs(quiet.score_a - quiet.score_b) < 0.1
    assert (quiet.preferred, quiet.flipped) == ("a", False)
    assert (noisy.preferred, noisy.flipped) == ("b", True)
    for seed in range(20):
        j = _judge(prompt, *far, seed=seed, noise=1.0)
        assert (j.preferred, j.flipped, j.rating) == ("a", False, "significantly_better")


def test_judge_all_is_seeded_and_scores_toxicity_in_one_call():
    prompt = _prompt("Tell me about the weather in Paris.")
    a = ["Paris is mild.", "Rainy winters.", "Warm summers in Paris."] * 4
    b = ["Paris is mild!", "Rainy winters!", "Warm summers in Paris!"] * 4
    prompts = [_prompt(f"{i}: " + prompt["turns"][0]["content"]) for i in range(len(a))]
    scorer = FixedScorer()
    ann = _annotator(scorer, noise=0.5)
    first = judge_all(ann, prompts, a, b, seed=7)
    assert scorer.calls == 1
    assert first == judge_all(ann, prompts, a, b, seed=7)
    assert any(j.flipped for j in first) and not all(j.flipped for j in first)
    others = [judge_all(ann, prompts, a, b, seed=s) for s in range(8, 12)]
    assert any(o != first for o in others)
    # a pair's label depends on its content, not its position among the others
    assert judge_all(ann, prompts[3:], a[3:], b[3:], seed=7) == first[3:]
    with pytest.raises(ValueError, match="as many prompts"):
        judge_all(ann, prompts, a, b[:-1], seed=7)


def test_rating_levels_follow_the_gap_thresholds():
    cfg = RuleAnnotatorConfig()  # 0.5 / 0.3 / 0.15
    expected = {
        0.0: "negligibly_better",
        0.149: "negligibly_better",
        0.15: "slightly_better",
        0.29: "slightly_better",
        0.3: "better",
        0.49: "better",
        0.5: "significantly_better",
        1.0: "significantly_better",
    }
    assert {g: rating_for_gap(g, cfg) for g in expected} == expected
    assert rating_for_gap(-0.35, cfg) == "better"
    with pytest.raises(ValueError, match="descend"):
        RuleAnnotatorConfig(better_gap=0.6)


def test_safety_bin_covers_all_four_combinations():
    assert safety_bin(True, False) == "chosen_safe_rejected_unsafe"
    assert safety_bin(True, True) == "both_safe"
    assert safety_bin(False, False) == "both_unsafe"
    assert safety_bin(False, True) == "chosen_unsafe_rejected_safe"
    j = Judgement(
        preferred="b",
        rating="better",
        kind="safety",
        score_a=0.9,
        score_b=0.2,
        safe_a=True,
        safe_b=False,
        flipped=True,
    )
    assert j.safety_bin == "chosen_unsafe_rejected_safe"  # a flipped safety call
