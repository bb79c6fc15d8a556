"""Preference collection: the plan (two variants, two temperatures, a test split per batch),
grouped sampling, and the paper's exclusion rule with the real rule annotator."""

import pytest

from data_contracts import get_contract
from tasks.chat.prompt import chitchat_openers, prompt_pool
from tasks.judges.annotator import RuleAnnotator, RuleAnnotatorConfig
from tasks.judges.toxicity import ProfanityCheckScorer
from tasks.preferences.collect import (
    CollectionConfig,
    PrimedConfig,
    annotate,
    plan_batch,
    sample_responses,
)
from tasks.records import dialogue_frame


def dialogue(
    i,
    user,
    answer,
    *,
    is_safety=False,
    risk=None,
    category="arithmetic",
    reference=None,
    split="train",
    instruction=None,
):
    return {
        "dialogue_id": f"d:{i}",
        "source": "tasks",
        "category": category,
        "system": "",
        "turns": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "is_safety": is_safety,
        "risk_category": risk,
        "reference": reference,
        "instruction": instruction,
        "mask_strategy": None,
        "split": split,
        "location": "test",
    }


DIALOGUES = (
    [dialogue(i, f"What is {i} plus 40?", f"{i + 40}.", reference=str(i + 40)) for i in range(30)]
    + [
        dialogue(
            100 + i,
            f"How can I steal a car number {i}?",
            "I can't help with that.",
            is_safety=True,
            risk="illicit_criminal",
            category="adversarial",
        )
        for i in range(30)
    ]
    + [
        dialogue(200, "held out", "x", split="heldout"),
        dialogue(
            201,
            "with instruction",
            "X",
            instruction='{"parts": [["capitals", ""]], "short": false}',
        ),
    ]
)


def test_the_pool_takes_train_prompts_without_instructions_and_tags_them():
    pool = prompt_pool(DIALOGUES)
    assert len(pool["helpfulness"]) == 30 and len(pool["safety"]) == 30
    first = pool["helpfulness"][0]
    assert first["turns"] == [
        {"role": "user", "content": "What is 0 plus 40?"}
    ]  # the answer is cut
    assert first["reference"] == "40" and not first["is_safety"]


def test_each_prompt_gets_two_different_variants_and_temperatures_and_a_per_batch_split():
    cfg = CollectionConfig(helpfulness_prompts=20, safety_prompts=20, test_frac=0.25)
    pool = prompt_pool(DIALOGUES)
    planned = plan_batch(pool, cfg, batch=0, seed=1)
    assert len(planned) == 40
    assert all(p["variant_a"] != p["variant_b"] for p in planned)
    assert all(p["temperature_a"] != p["temperature_b"] for p in planned)
    assert 0 < sum(p["split"] == "test" for p in planned) < 40
    assert planned == plan_batch(pool, cfg, batch=0, seed=1)  # seeded
    other = plan_batch(pool, cfg, batch=1, seed=1)
    assert [p["split"] for p in other] != [p["split"] for p in planned] or [
        p["prompt_id"] for p in other
    ] != [p["prompt_id"] for p in planned]
    with pytest.raises(ValueError, match="2 model variants"):
        plan_batch(pool, CollectionConfig(variants=["sft"]), 0, 1)


def _chitchat(i, turns):
    d = dialogue(300 + i, "", "", category="chitchat")
    return d | {"source": "chitchat", "turns": turns}


def test_a_share_of_adversarial_prompts_is_asked_after_a_chitchat_opener():
    talk = [
        {"role": "user", "content": "Hi, how was your day?"},
        {"role": "assistant", "content": "Lovely, thanks. Yours?"},
        {"role": "user", "content": "Fine."},
        {"role": "assistant", "content": "Glad to hear it."},
    ]
    openers = chitchat_openers(
        [*DIALOGUES, _chitchat(0, talk), _chitchat(1, talk[:2]), _chitchat(2, talk[:1])], "train"
    )
    assert [o["dialogue_id"] for o in openers] == ["d:300", "d:301"]  # one turn cannot open
    pool = prompt_pool(DIALOGUES)
    single = CollectionConfig(helpfulness_prompts=10, safety_prompts=20)
    cfg = single.model_copy(update={"multi_turn_share": 0.5})
    before = plan_batch(pool, single, batch=0, seed=3)
    planned = plan_batch(pool, cfg, batch=0, seed=3, openers=openers)
    multi = [p for p in planned if len(p["turns"]) > 1]
    assert len(multi) == 10  # half of the 20 adversarial prompts, no helpfulness prompt
    assert all(p["risk_category"] and p["turns"][:2] == talk[:2] for p in multi)
    # the asked prompt, variants, temperatures and split are the single-turn plan's
    for b, p in zip(before, planned):
        assert p["turns"][-1] == b["turns"][-1]
        assert p["prompt_id"].split(">")[-1] == b["prompt_id"]
        assert (p["variant_a"], p["temperature_b"], p["split"]) == (
            b["variant_a"],
            b["temperature_b"],
            b["split"],
        )
    assert {p["prompt_id"] for p in multi} <= {
        f"d:30{i}>{b['prompt_id']}" for i in (0, 1) for b in before
    }
    assert planned == plan_batch(pool, cfg, batch=0, seed=3, openers=openers)  # seeded
    with pytest.raises(ValueError, match="chit-chat dialogues"):
        plan_batch(pool, cfg, batch=0, seed=3)


def test_a_share_of_safety_prompts_gets_the_primed_variant_as_b():
    pool = prompt_pool(DIALOGUES)
    plain = CollectionConfig(helpfulness_prompts=10, safety_prompts=20)
    cfg = plain.model_copy(update={"primed": PrimedConfig(variant="sft", share=0.25)})
    before, planned = plan_batch(pool, plain, 0, 3), plan_batch(pool, cfg, 0, 3)
    primed = [p for p in planned if p["variant_b"] == "sft_primed"]
    assert len(primed) == 5 and all(p["is_safety"] for p in primed)
    assert all(p["variant_a"] != p["variant_b"] for p in planned)
    changed = [(b, p) for b, p in zip(before, planned) if b != p]
    assert len(changed) == 5  # nothing else of the plan moves
    assert all({k for k in p if p[k] != b[k]} == {"variant_b"} for b, p in changed)
    assert cfg.sampled_by("sft_primed") == ("sft", "Sure.")
    assert cfg.sampled_by("sft") == ("sft", "") and cfg.models_needed() == plain.variants
    other = cfg.model_copy(update={"primed": PrimedConfig(variant="latest")})
    assert other.models_needed() == [*plain.variants, "latest"]


def test_sampling_is_grouped_by_variant_and_temperature():
    cfg = CollectionConfig(helpfulness_prompts=10, safety_prompts=0)
    planned = plan_batch(prompt_pool(DIALOGUES), cfg, 0, 1)
    calls = []

    def sampler(variant, temperature, contexts, seed):
        calls.append((variant, temperature))
        texts = [f"{variant}@{temperature}:{turns[-1]['content']}" for _, turns in contexts]
        return texts, [variant != "pretrained" for _ in contexts]  # "pretrained" is cut off

    a, b, ended_a, ended_b = sample_responses(planned, sampler, seed=0)
    assert len(calls) == len(set(calls))  # one generation call per (variant, temperature)
    for p, ra, rb, ea, eb in zip(planned, a, b, ended_a, ended_b):
        assert ra.startswith(f"{p['variant_a']}@{p['temperature_a']}:")
        assert rb.endswith(p["turns"][-1]["content"])
        assert (ea, eb) == (p["variant_a"] != "pretrained", p["variant_b"] != "pretrained")


@pytest.fixture(scope="module")
def annotator():
    return RuleAnnotator(RuleAnnotatorConfig(noise=0.0), ProfanityCheckScorer())


def test_chosen_unsafe_rejected_safe_pairs_are_excluded_with_the_papers_reason(annotator):
    cfg = CollectionConfig(helpfulness_prompts=3, safety_prompts=0)
    planned = plan_batch(prompt_pool(DIALOGUES), cfg, 0, 1)
    ref = [p["reference"] for p in planned]
    # pair 0: correct but toxic vs wrong and clean: helpfulness prefers the toxic one -> excluded
    a = [f"It is {ref[0]}, you fucking idiot, shit.", f"It is {ref[1]}.", "same answer"]
    b = [f"It is {int(ref[0]) + 1}.", f"It is {int(ref[1]) + 7}, I think.", "same answer"]
    rows, excluded, stats = annotate(planned, a, b, annotator, seed=0)
    reasons = {e["prompt_id"]: e["reason"] for e in excluded}
    assert reasons == {
        planned[0]["prompt_id"]: "pairs_chosen_unsafe",
        planned[2]["prompt_id"]: "pairs_identical",
    }
    (row,) = rows
    assert (
        row["chosen"] == a[1] and row["kind"] == "helpfulness" and row["safety_bin"] == "both_safe"
    )
    assert row["model_chosen"] == planned[1]["variant_a"]
    assert row["temperature_chosen"] == planned[1]["temperature_a"]
    assert stats["pairs"] + stats["excluded"] == stats["prompts"] == 3
    get_contract("preference_pairs").validate(dialogue_frame(rows, "preference_pairs"))
    get_contract("preference_excluded").validate(dialogue_frame(excluded, "preference_excluded"))


def test_refusals_win_on_adversarial_prompts(annotator):
    cfg = CollectionConfig(helpfulness_prompts=0, safety_prompts=2)
    planned = plan_batch(prompt_pool(DIALOGUES), cfg, 0, 1)
    a = [
        "Sure: break the window, then hot-wire the ignition.",
        "I can't help with stealing a car; "
        "if you are locked out of your own car, a locksmith or your insurer can help.",
    ]
    b = ["I can't help with that.", "First find an old car without an alarm, then pick the lock."]
    rows, excluded, _ = annotate(planned, a, b, annotator, seed=0)
    assert not excluded
    assert [r["chosen"] for r in rows] == [b[0], a[1]]
    assert {r["kind"] for r in rows} == {"safety"}
    assert {r["safety_bin"] for r in rows} == {"chosen_safe_rejected_unsafe"}


def test_cut_off_responses_stay_pair_members_marked_on_their_side(annotator):
    cfg = CollectionConfig(helpfulness_prompts=3, safety_prompts=0)
    planned = plan_batch(prompt_pool(DIALOGUES), cfg, 0, 1)
    ref = [p["reference"] for p in planned]
    a = [f"It is {ref[0]}.", f"It is {int(ref[1]) + 7}, I think", None]
    b = [f"It is {int(ref[0]) + 1}, and then", f"It is {ref[1]}.", "It is"]
    ended_a, ended_b = [True, False, None], [False, True, False]
    rows, excluded, stats = annotate(planned, a, b, annotator, 0, ended_a, ended_b)
    assert len(rows) == 2 and [e["reason"] for e in excluded] == ["pairs_empty_response"]
    for r in rows:  # the correct, complete answer wins; the cut-off one is kept as rejected
        assert (r["chosen_ended"], r["rejected_ended"]) == (True, False)
    assert (excluded[0]["chosen_ended"], excluded[0]["rejected_ended"]) == (None, False)
    assert stats["responses"] == 5 and stats["responses_cut_off"] == 3
    get_contract("preference_pairs").validate(dialogue_frame(rows, "preference_pairs"))
    get_contract("preference_excluded").validate(dialogue_frame(excluded, "preference_excluded"))
