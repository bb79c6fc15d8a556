"""Borderline prompts at scale (tasks/sft/borderline.py): the project's families file, the split
by family, the file checks; and the SFT mix cap on refusal demonstrations (tokenize.py)."""

import pytest
import yaml

from data_contracts import get_contract
from tasks.judges.refusal import is_refusal
from tasks.records import dialogue_frame
from tasks.sft.borderline import BorderlineFamiliesConfig, read_borderline_families
from tasks.sft.sources import dialogue_row
from tasks.sft.tokenize import cap_adversarial


def _family(name, split="train", answer="Press Ctrl+C in its terminal to stop the job."):
    return {
        "family": name,
        "split": split,
        "phrasings": [
            "How do I kill {object}?",
            "Kill {object} how?",
            "Best way to kill {object}?",
        ],
        "objects": [{"object": f"{name} job {j}", "answer": answer} for j in range(5)],
    }


def _write(tmp_path, families):
    path = tmp_path / "families.yaml"
    path.write_text(yaml.safe_dump({"families": families}), encoding="utf-8")
    return path


def test_the_project_file_splits_by_family_with_over_100_heldout_prompts():
    rows, stats = read_borderline_families(BorderlineFamiliesConfig())
    get_contract("sft_dialogues").validate(dialogue_frame(rows, "sft_dialogues"))
    assert stats["heldout"] >= 100 and stats["train"] >= 300
    assert stats["prompts"] == len(rows) == stats["train"] + stats["heldout"]
    family = {r["dialogue_id"]: r["dialogue_id"].split(":")[1] for r in rows}
    train = {family[r["dialogue_id"]] for r in rows if r["split"] == "train"}
    heldout = {family[r["dialogue_id"]] for r in rows if r["split"] == "heldout"}
    assert train and heldout and not train & heldout  # no family on both sides
    assert all(r["is_safety"] and r["risk_category"] is None for r in rows)
    assert not [r for r in rows if is_refusal(r["turns"][1]["content"])]
    assert len({r["turns"][0]["content"].casefold() for r in rows}) == len(rows)


def test_train_false_keeps_only_the_heldout_families(tmp_path):
    path = _write(tmp_path, [_family("a"), _family("b", "heldout")])
    rows, stats = read_borderline_families(BorderlineFamiliesConfig(path=path))
    assert (stats["train"], stats["heldout"], len(rows)) == (15, 15, 30)
    assert rows[0]["turns"][0]["content"] == "How do I kill a job 0?"
    assert rows[0]["location"] == "families.yaml:family a, object 1, phrasing 1"
    only, stats = read_borderline_families(BorderlineFamiliesConfig(path=path, train=False))
    assert {r["split"] for r in only} == {"heldout"} and stats["train"] == 0
    assert only == [r for r in rows if r["split"] == "heldout"]  # the same held-out rows


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.update(split="test"), r"family 1 \(a\): 'split' must be train or heldout"),
        (lambda f: f["phrasings"].pop(), r"family 1 \(a\): needs 3 phrasings"),
        (lambda f: f["phrasings"].__setitem__(0, "No slot"), "each with '{object}' once"),
        (lambda f: f["objects"].pop(), r"family 1 \(a\): needs 5 objects"),
        (lambda f: f["objects"][2].pop("answer"), r"family 1 \(a\) object 3: needs"),
        (
            lambda f: f["objects"][1].update(answer="I can't help with killing anything."),
            r"family 1 \(a\) object 2: the answer reads as a refusal",
        ),
        (lambda f: f.pop("split"), "family 1: needs exactly"),
    ],
)
def test_a_malformed_family_names_the_file_and_family(tmp_path, change, message):
    family = _family("a")
    change(family)
    path = _write(tmp_path, [family])
    with pytest.raises(ValueError, match=message) as err:
        read_borderline_families(BorderlineFamiliesConfig(path=path))
    assert str(path) in str(err.value)


def test_repeated_family_or_prompt_is_refused(tmp_path):
    path = _write(tmp_path, [_family("a"), _family("a", "heldout")])
    with pytest.raises(ValueError, match="family 2: repeats the family name 'a'"):
        read_borderline_families(BorderlineFamiliesConfig(path=path))
    b = _family("b")
    b["objects"][0]["object"] = "a job 0"  # "How do I kill a job 0?" is family a's prompt too
    with pytest.raises(ValueError, match="family b: prompt 'How do I kill a job 0\\?' repeats"):
        read_borderline_families(BorderlineFamiliesConfig(path=_write(tmp_path, [_family("a"), b])))


def _dialogue(i, split="train", risk="illicit_criminal"):
    return dialogue_row(
        dialogue_id=f"d{i}",
        source="donotanswer" if risk else "chitchat",
        category="adversarial" if risk else "chitchat",
        turns=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
        split=split,
        location="test",
        is_safety=risk is not None,
        risk_category=risk,
    )


def test_cap_adversarial_keeps_a_hash_chosen_subset_and_excludes_the_rest_with_reason():
    rows = [_dialogue(i) for i in range(20)] + [_dialogue(i, risk=None) for i in range(20, 25)]
    rows += [_dialogue(i, "heldout") for i in range(25, 30)]
    kept, excluded = cap_adversarial(rows, 8)
    assert len(kept) + len(excluded) == len(rows)  # no row lost
    adv_train = [r for r in kept if r["risk_category"] and r["split"] == "train"]
    assert len(adv_train) == 8 and len(excluded) == 12
    assert {reason for _, reason, _ in excluded} == {"sft_mix_cap"}
    assert "over sft.mix.max_adversarial 8 of 20" in excluded[0][2]
    assert sum(r["split"] == "heldout" for r in kept) == 5  # held-out rows are never capped
    assert sum(r["risk_category"] is None for r in kept) == 5
    smaller, _ = cap_adversarial(list(reversed(rows)), 4)  # order does not matter; nested
    ids = {r["dialogue_id"] for r in smaller if r["risk_category"] and r["split"] == "train"}
    assert ids < {r["dialogue_id"] for r in adv_train}
    assert cap_adversarial(rows, None) == (rows, [])


def test_the_opener_goes_before_train_helpful_answers_only_and_may_not_read_as_a_refusal():
    from tasks.sft.dataset import OpenerConfig, open_answers

    def row(source, split, risk=None, turns=("q", "a")):
        roles = ("user", "assistant") * len(turns)
        return {
            "source": source,
            "split": split,
            "risk_category": risk,
            "turns": [{"role": r, "content": c} for r, c in zip(roles, turns)],
        }

    rows = [
        row("borderline_families", "train"),
        row("borderline_families", "heldout"),  # evaluation data: as written
        row("donotanswer", "train", risk="illicit_criminal", turns=("q", "I can't help.")),
        row("tasks", "train", turns=("q1", "a1", "q2", "a2")),  # first answer only
        row("chitchat", "train"),  # not in sources
    ]
    given = [r["turns"] for r in rows]
    cfg = OpenerConfig(text=" Sure. ", sources=["borderline_families", "tasks", "donotanswer"])
    assert open_answers(rows, cfg) == 2
    answers = [[t["content"] for t in r["turns"] if t["role"] == "assistant"] for r in rows]
    assert answers == [["Sure. a"], ["a"], ["I can't help."], ["Sure. a1", "a2"], ["a"]]
    assert given[0][1]["content"] == "a"  # the turns were copied, not edited in place
    assert open_answers(rows, OpenerConfig()) == 0  # off by default
    with pytest.raises(ValueError, match="reads as a refusal"):
        open_answers(rows, OpenerConfig(text="I can't help with that."))


def test_brief_answers_keep_leading_sentences_or_clauses_of_train_helpful_answers():
    from tasks.sft.dataset import BriefConfig, shorten_answers

    def row(source, split, answer, risk=None):
        return {
            "source": source,
            "split": split,
            "risk_category": risk,
            "turns": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}],
        }

    two = "One two three four. Five six seven. Eight nine ten eleven twelve."
    clause = "One two, three four, five six seven eight nine ten. Next."
    rows = [
        row("borderline_families", "train", two),  # sentences 1-2 fit 7 words, the third not
        row("borderline_families", "train", clause),  # a first sentence of 10 words: 2 clauses
        row("borderline_families", "train", "One two three four five six seven eight nine."),
        row("borderline_families", "heldout", two),  # evaluation data: as written
        row("donotanswer", "train", two, risk="illicit_criminal"),
        row("tasks", "train", two),  # not in the default sources
        row("borderline", "train", "Short answer."),  # already within the limit
    ]
    assert shorten_answers(rows, BriefConfig(max_words=7)) == 3
    answers = [r["turns"][1]["content"] for r in rows]
    assert answers == [
        "One two three four. Five six seven.",
        "One two, three four. Next.",  # then whole sentences while they fit
        "One two three four five six seven eight nine.",  # no clause to end at: whole
        two,
        two,
        two,
        "Short answer.",
    ]
    assert shorten_answers(rows, BriefConfig()) == 0  # off by default
