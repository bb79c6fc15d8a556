"""Synthetic task dialogues: answers are right (recomputed from the question text), check_answer
accepts them and rejects near misses, generation is deterministic, rows satisfy the contract."""

import re

import pytest

from data_contracts.sft_dialogues import CONTRACT
from tasks.judges.answers import check_answer
from tasks.records import dialogue_frame
from tasks.sft.synthetic import (
    FACTS_PATH,
    KINDS,
    TaskDialoguesConfig,
    generate_task_dialogues,
    load_facts,
)

CFG = TaskDialoguesConfig(arithmetic=150, counting=150, conversion=150, facts=150)


@pytest.fixture(scope="module")
def rows():
    return generate_task_dialogues(CFG, seed=7)[0]


def _exchanges(row):
    t = row["turns"]
    return [(t[i]["content"], t[i + 1]["content"]) for i in range(0, len(t), 2)]


def test_counts_turns_and_contract(rows):
    CONTRACT.validate(dialogue_frame(rows, "sft_dialogues"))
    for kind in KINDS:
        of_kind = [r for r in rows if r["category"] == kind]
        assert len(of_kind) == 150
        assert {len(r["turns"]) // 2 for r in of_kind} == {1, 2, 3}  # 1..max_turns exchanges
    assert all(r["source"] == "tasks" and r["reference"] for r in rows)
    assert rows[0]["location"].startswith("generator:arithmetic:seed=7")
    one_turn, _ = generate_task_dialogues(TaskDialoguesConfig(max_turns=1, facts=0), seed=7)
    assert {len(r["turns"]) for r in one_turn} == {2} and {r["category"] for r in one_turn} == {
        "arithmetic",
        "counting",
        "conversion",
    }


def test_every_generated_answer_passes_check_answer(rows):
    for row in rows:
        assert check_answer(row["category"], row["reference"], row["turns"][-1]["content"]), row


_ARITH = re.compile(r"(\d+) (plus|minus|times|\+|-|×) (\d+)")
_OPS = {
    "plus": int.__add__,
    "+": int.__add__,
    "minus": int.__sub__,
    "-": int.__sub__,
    "times": int.__mul__,
    "×": int.__mul__,
}


def test_arithmetic_is_correct(rows):
    arithmetic = [r for r in rows if r["category"] == "arithmetic"]
    for row in arithmetic:
        for question, answer in _exchanges(row):
            a, op, b = _ARITH.search(question).groups()
            result = _OPS[op](int(a), int(b))
            assert result >= 0 and check_answer("arithmetic", str(result), answer), (
                question,
                answer,
            )
        assert row["reference"] == str(result)  # the answer to the last question
    assert {
        m.group(2) for r in arithmetic for q, _ in _exchanges(r) for m in [_ARITH.search(q)]
    } == set(_OPS)


_UNITS = {
    ("kilometer", "meter"): 1000,
    ("meter", "centimeter"): 100,
    ("kilogram", "gram"): 1000,
    ("hour", "minute"): 60,
    ("minute", "second"): 60,
}


def test_counting_and_conversion_are_correct(rows):
    for row in (r for r in rows if r["category"] == "counting"):
        question, answer = _exchanges(row)[-1]
        if m := re.search(
            r'letter "(\w)" appear in "(\w+)"|"(\w)"s are there in the word "(\w+)"', question
        ):
            letter, word = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            expected = word.count(letter)
        elif m := re.search(r'letters (?:are )?in (?:the word )?"(\w+)"', question):
            expected = len(m.group(1))
        else:
            expected = len(re.search(r"(?:list:|buy) ([^?.]+)[?.]", question).group(1).split(", "))
        assert row["reference"] == str(expected), question
    for row in (r for r in rows if r["category"] == "conversion"):
        question, _ = _exchanges(row)[-1]
        m = re.search(r"(\d+) (\w+?)s? (?:to|in) (\w+?)s?\W", question) or re.search(
            r"How many (\w+?)s are in (\d+) (\w+?)s?\?", question
        )
        if m.group(1).isdigit():
            value, src, dst = int(m.group(1)), m.group(2), m.group(3)
        else:
            value, src, dst = int(m.group(2)), m.group(3), m.group(1)
        expected = (
            value * _UNITS[(src, dst)] if (src, dst) in _UNITS else value // _UNITS[(dst, src)]
        )
        assert row["reference"] == str(expected), question


def test_facts_come_from_the_facts_file(rows):
    countries = load_facts(FACTS_PATH)
    assert len(countries) >= 40
    known = (
        {c.capital for c in countries}
        | {c.continent for c in countries}
        | {c.currency for c in countries if c.currency}
    )
    facts = [r for r in rows if r["category"] == "facts"]
    assert {r["reference"] for r in facts} <= known
    by_name = {c.name: c for c in countries}
    for row in facts:
        question, _ = _exchanges(row)[-1]
        if "capital" in question:
            name = re.search(r"capital of (.+)\?", question).group(1)
            assert row["reference"] == by_name[name].capital


def test_deterministic_by_seed():
    a, stats_a = generate_task_dialogues(CFG, seed=1)
    b, stats_b = generate_task_dialogues(CFG, seed=1)
    c, _ = generate_task_dialogues(CFG, seed=2)
    assert a == b and stats_a == stats_b and a != c
    fewer, _ = generate_task_dialogues(CFG.model_copy(update={"arithmetic": 10}), seed=1)
    assert [r for r in fewer if r["category"] == "facts"] == [
        r for r in a if r["category"] == "facts"
    ]


def test_split_by_dialogue_id(rows):
    heldout = sum(r["split"] == "heldout" for r in rows) / len(rows)
    assert 0.05 < heldout < 0.15


@pytest.mark.parametrize(
    "category, reference, answer, ok",
    [
        ("arithmetic", "42", "17 plus 25 is 42.", True),
        ("arithmetic", "42", "The answer is 142.", False),
        ("arithmetic", "42", "It's 4.", False),
        ("arithmetic", "4", "It's 42.", False),
        ("arithmetic", "42", "It's -42.", False),
        ("arithmetic", "42", "About 42.5", False),
        ("arithmetic", "42", "42", True),
        ("conversion", "3000", "3 kilometers is 3,000 meters.", True),
        ("conversion", "3000", "3 kilometers is 30,000 meters.", False),
        ("facts", "Paris", "The capital of France is paris.", True),
        ("facts", "Paris", "Parisian food is great.", False),
        ("facts", "Brasília", "It's Brasilia.", True),
        ("facts", "Buenos Aires", "The capital is Buenos\n Aires.", True),
        ("facts", "real", "Brazil uses the reais.", False),
    ],
)
def test_check_answer(category, reference, answer, ok):
    assert check_answer(category, reference, answer) is ok


def test_load_facts_rejects_a_malformed_file(tmp_path):
    path = tmp_path / "facts.yaml"
    path.write_text("countries:\n  - {name: France, capital: Paris}\n")
    with pytest.raises(ValueError, match="facts.yaml"):
        load_facts(path)
