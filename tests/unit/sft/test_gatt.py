import itertools
import random
from collections import Counter

import pytest

from tasks.chat.format import render_chat
from tasks.sft.gatt import build_gatt
from tasks.sft.instructions import (
    KINDS,
    Instruction,
    InstructionSpace,
    Part,
    apply,
    check,
    check_parts,
    instruction_demos,
    sample_instruction,
)
from tasks.sft.multiturn import eval_conversations, multiturn_recall

HOBBY, CAPS, SIGN, PERSONA = (
    Part("hobby", "tennis"),
    Part("capitals"),
    Part("signoff", "Cheers"),
    Part("persona", "Napoleon"),
)
PLAIN = "The capital of France is Paris."
WRONG = "no idea."  # obeys no kind: no hobby, no persona, lowercase, no sign-off


def dialogue(did, users, split="train", system="", is_safety=False):
    turns = [
        t
        for i, u in enumerate(users)
        for t in ({"role": "user", "content": u}, {"role": "assistant", "content": f"orig {i}"})
    ]
    return {
        "dialogue_id": did,
        "source": "chitchat",
        "category": "chitchat",
        "system": system,
        "turns": turns,
        "is_safety": is_safety,
        "risk_category": None,
        "reference": None,
        "instruction": None,
        "mask_strategy": None,
        "split": split,
        "location": f"test:{did}",
    }


# --- 1. checkable instructions -------------------------------------------------------------


@pytest.mark.parametrize("part", [HOBBY, CAPS, SIGN, PERSONA])
def test_apply_makes_a_plain_answer_obey_each_kind(part):
    instr = Instruction((part,))
    assert not check(instr, PLAIN)
    assert check(instr, apply(instr, PLAIN))


@pytest.mark.parametrize("pair", list(itertools.combinations([HOBBY, CAPS, SIGN, PERSONA], 2)))
def test_apply_then_check_holds_for_every_pair(pair):
    instr = Instruction(pair)
    fixed = apply(instr, PLAIN)
    assert check_parts(instr, fixed) == {p.kind: True for p in pair}


@pytest.mark.parametrize(
    "part, answer, ok",
    [
        (HOBBY, "I play TENNIS on sundays.", True),
        (HOBBY, "My tennisball is red.", False),  # whole word only
        (CAPS, "HELLO, 42!", True),
        (CAPS, "HELLO world", False),
        (CAPS, "42", False),  # no letter at all
        (SIGN, "Bye. Cheers!!", True),
        (SIGN, "SEE YOU. CHEERS.", True),  # case-insensitive, so it combines with capitals
        (SIGN, "Cheers, see you tomorrow.", False),  # not at the end
        (PERSONA, "napoleon here, at your service", True),
        (PERSONA, "Hello there.", False),
    ],
)
def test_check_hand_picked_answers(part, answer, ok):
    assert check(Instruction((part,)), answer) is ok


def test_apply_puts_capitals_last_and_handles_letterless_answers():
    both = Instruction((CAPS, PERSONA))
    assert apply(both, "hi.") == "NAPOLEON HERE. HI."  # the added phrase is capitalised too
    caps_sign = Instruction((CAPS, SIGN))
    assert apply(caps_sign, "bye.") == "BYE. CHEERS"
    caps = Instruction((CAPS,))
    assert check(caps, apply(caps, "42"))
    assert apply(Instruction((HOBBY,)), "Tennis is great.") == "Tennis is great."  # already obeyed


def test_text_full_and_short_forms():
    assert Instruction((HOBBY, PERSONA)).text == "You enjoy tennis. Act as Napoleon."
    assert Instruction((HOBBY, PERSONA), short=True).text == "Hobby: tennis Persona: Napoleon"
    assert (
        Instruction((CAPS, SIGN)).text
        == "Always answer in capital letters. End every answer with 'Cheers'."
    )
    assert Instruction((CAPS, SIGN), short=True).text == "Style: capital letters Sign-off: Cheers"


def test_json_round_trip_and_invalid_instructions():
    rng = random.Random(0)
    for _ in range(50):
        instr = sample_instruction(rng)
        assert Instruction.from_json(instr.to_json()) == instr
    with pytest.raises(ValueError):
        Instruction.from_json('{"parts": [["language", "French"]], "short": false}')
    with pytest.raises(ValueError):
        Instruction((HOBBY, Part("hobby", "chess")))


def test_sampling_is_seeded_and_never_repeats_a_kind():
    draw = lambda seed: [sample_instruction(random.Random(seed)) for _ in range(1)]  # noqa: E731
    assert draw(3) == draw(3)
    rng = random.Random(1)
    samples = [sample_instruction(rng) for _ in range(2000)]
    kinds = [tuple(p.kind for p in s.parts) for s in samples]
    assert all(len(set(k)) == len(k) and 1 <= len(k) <= 2 for k in kinds)
    assert {frozenset(k) for k in kinds} >= {frozenset({"capitals", "signoff"})} | {
        frozenset({k}) for k in KINDS
    }
    assert 0.45 < sum(s.short for s in samples) / len(samples) < 0.55
    assert not any(sample_instruction(rng, shorten_prob=0.0).short for _ in range(100))
    assert all(len(sample_instruction(rng, max_parts=1).parts) == 1 for _ in range(100))


# --- 2. instruction demonstrations ---------------------------------------------------------


def test_instruction_demos_are_single_turn_and_obey():
    pool = [dialogue(f"d{i}", [f"question {i}?", "more?"]) for i in range(20)]
    pool += [dialogue("h0", ["held?"], split="heldout"), dialogue("s0", ["bad?"], is_safety=True)]
    rows, stats = instruction_demos(pool, n=12, seed=5, shorten_prob=0.5)
    assert len(rows) == stats["rows"] == 12 and stats["pool"] == 20
    assert stats["placed_system"] + stats["placed_user"] == 12
    assert stats["placed_system"] > 0 and stats["placed_user"] > 0
    for r in rows:
        orig = r["dialogue_id"].removeprefix("instructions:")
        assert orig.startswith("d") and orig in r["location"]
        instr = Instruction.from_json(r["instruction"])
        user, answer = r["turns"][0]["content"], r["turns"][1]["content"]
        assert len(r["turns"]) == 2 and check(instr, answer)
        assert (r["system"] == instr.text) != (user == f"{instr.text} question {orig[1:]}?")
        assert (r["source"], r["category"], r["split"]) == ("instructions", "instruction", "train")
    assert instruction_demos(pool, n=12, seed=5, shorten_prob=0.5)[0] == rows


# --- 3. Ghost Attention --------------------------------------------------------------------


def scripted(table, seen):
    """answer_fn returning, per exact last user message, the next scripted answer."""
    queues = {k: list(v) for k, v in table.items()}

    def answer_fn(contexts, seed):
        seen.append(([c for c in contexts], seed))
        return [queues[turns[-1]["content"]].pop(0) for _, turns in contexts]

    return answer_fn


def test_gatt_hand_checked_example():
    seed = 11
    rng = random.Random(seed)  # build_gatt's documented draw order: one instruction per dialogue
    inst1, inst2 = sample_instruction(rng, 0.5), sample_instruction(rng, 0.5)
    good = lambda instr, a: apply(instr, a)  # noqa: E731
    d1 = dialogue("d1", ["Hi!", "What is 2+2?", "And 3+3?"])
    d2 = dialogue("d2", ["Hello?", "Bye?"])
    table = {
        f"{inst1.text} Hi!": [good(inst1, "hello.")],
        f"{inst1.text} What is 2+2?": [good(inst1, "four.")],
        f"{inst1.text} And 3+3?": [WRONG],
        f"{inst2.text} Hello?": [WRONG],
    }
    seen = []
    examples, excluded, stats = build_gatt(
        [d1, d2, dialogue("d3", ["one turn only"])],
        scripted(table, seen),
        seed=seed,
        samples_per_turn=1,
    )
    # the model saw the instruction in front of EVERY user message, and its kept answers as history
    for contexts, _ in seen:
        for system, turns in contexts:
            users = [t["content"] for t in turns if t["role"] == "user"]
            instr = inst1 if users[0].endswith(" Hi!") else inst2
            assert system == "" and all(u.startswith(instr.text + " ") for u in users)
    assert seen[2][0][0][1][1]["content"] == good(inst1, "hello.")
    ex1 = [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": good(inst1, "hello.")},
    ]
    ex2 = ex1 + [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": good(inst1, "four.")},
    ]
    assert [e["turns"] for e in examples] == [ex1, ex2]
    assert [e["dialogue_id"] for e in examples] == ["gatt:d1:1", "gatt:d1:2"]
    for e in examples:
        assert e["system"] == inst1.text
        assert (e["mask_strategy"], e["source"], e["category"]) == ("last_turn", "gatt", "gatt")
        assert e["instruction"] == inst1.to_json()
    [(row, reason, detail)] = excluded
    assert row is d2 and reason == "gatt_instruction_unmet"
    assert "turn 1" in detail and inst2.text in detail
    assert stats["dialogues"] == 2 and stats["skipped_single_turn"] == 1
    assert stats["dialogues_kept"] == 1 and stats["examples"] == 2
    assert (stats["turns_sampled"], stats["turns_satisfied"]) == (4, 2)  # d1: 3 turns, d2: 1


def test_gatt_retries_with_a_new_seed_until_an_answer_obeys():
    inst = sample_instruction(random.Random(0), 0.5)
    table = {
        f"{inst.text} a?": [WRONG, apply(inst, "yes.")],
        f"{inst.text} b?": [apply(inst, "no.")],
    }
    seen = []
    source = dialogue("d", ["a?", "b?"], system="Be brief.")
    examples, excluded, stats = build_gatt(
        [source], scripted(table, seen), seed=0, samples_per_turn=2
    )
    assert not excluded and len(examples) == 2
    assert examples[0]["system"] == f"Be brief.\n{inst.text}"  # appended to the source's system
    assert seen[0][0][0][0] == "Be brief."  # sampled with the source's system prompt
    assert examples[1]["turns"][1]["content"] == apply(inst, "yes.")
    assert seen[0][1] != seen[1][1]  # the second try used another seed
    assert stats["tries"] == 3


def test_gatt_stops_when_the_context_no_longer_fits():
    inst = sample_instruction(random.Random(0), 0.5)
    table = {f"{inst.text} a?": [apply(inst, "yes.")], f"{inst.text} b?": [None]}
    examples, excluded, _ = build_gatt([dialogue("d", ["a?", "b?"])], scripted(table, []), seed=0)
    assert [e["dialogue_id"] for e in examples] == ["gatt:d:1"] and not excluded
    table = {f"{inst.text} a?": [None]}
    examples, excluded, stats = build_gatt(
        [dialogue("d", ["a?", "b?"])], scripted(table, []), seed=0
    )
    assert not examples and excluded[0][1] == "gatt_context_too_long"
    assert stats["excluded_gatt_context_too_long"] == 1


def test_gatt_batches_and_caps_turns():
    dialogues = [dialogue(f"d{i}", [f"q{i}.{t}" for t in range(5)]) for i in range(5)]
    rng = random.Random(4)
    instrs = [sample_instruction(rng, 0.5) for _ in dialogues]
    calls = []

    def obey(contexts, seed):
        calls.append(len(contexts))
        last = [turns[-1]["content"] for _, turns in contexts]
        return [apply(next(i for i in instrs if u.startswith(i.text + " ")), "ok.") for u in last]

    examples, _, stats = build_gatt(dialogues, obey, seed=4, max_turns=3, batch_size=2)
    assert len(examples) == 15 and stats["dialogues_all_turns"] == 5  # 5 dialogues x 3 prefixes
    assert max(len(e["turns"]) for e in examples) == 6
    assert calls == [2, 2, 1] * 3  # 5 dialogues per turn, in batches of 2, for 3 turns


# --- 4. multi-turn evaluation --------------------------------------------------------------


def test_eval_conversations_concatenate_held_out_user_turns():
    dialogues = [
        dialogue(f"h{i}", [f"h{i}.{t}" for t in range(i % 3 + 1)], split="heldout")
        for i in range(6)
    ] + [dialogue("t0", ["train?"])]
    convs = eval_conversations(dialogues, n=4, user_turns=5, seed=2, shorten_prob=0.5)
    assert len(convs) == 4 and all(len(c["users"]) == 5 for c in convs)
    assert all(u.startswith("h") for c in convs for u in c["users"])
    assert any(len(c["sources"]) > 1 for c in convs)
    assert convs == eval_conversations(dialogues, n=4, user_turns=5, seed=2, shorten_prob=0.5)
    with pytest.raises(ValueError, match="held-out"):
        eval_conversations(dialogues[-1:], n=1, user_turns=2, seed=0, shorten_prob=0.5)


def recall_fn(obey_until=99, none_from=99, seen=None):
    """Obeys the system-prompt instruction up to turn `obey_until`; None from `none_from` on."""

    def answer_fn(contexts, seed):
        out = []
        for system, turns in contexts:
            turn = len(turns) // 2 + 1
            if seen is not None:
                seen.append((system, [t["content"] for t in turns if t["role"] == "user"]))
            instr = INSTRUCTIONS[system]
            out.append(
                None if turn >= none_from else apply(instr, "ok.") if turn <= obey_until else WRONG
            )
        return out

    return answer_fn


INSTRUCTIONS = {i.text: i for i in (Instruction((HOBBY,)), Instruction((CAPS, SIGN), short=True))}
CONVS = [
    {"id": f"c{k}", "instruction": instr.to_json(), "users": [f"u{t}" for t in range(1, 7)]}
    for k, instr in enumerate(INSTRUCTIONS.values())
]


def test_recall_is_one_when_the_model_always_obeys_and_the_instruction_is_system_only():
    seen = []
    table, transcripts = multiturn_recall(CONVS, recall_fn(seen=seen), turns=(1, 2, 4, 6), seed=0)
    assert [(r["turn"], r["evaluated"], r["recall"]) for r in table] == [
        (1, 2, 1.0),
        (2, 2, 1.0),
        (4, 2, 1.0),
        (6, 2, 1.0),
    ]
    for system, users in seen:
        assert system in INSTRUCTIONS
        assert users == [f"u{t}" for t in range(1, len(users) + 1)]  # no instruction in user turns
    assert all(x["satisfied"] for tr in transcripts for x in tr["turns"])


def test_recall_drops_when_the_model_forgets_after_turn_one():
    table, transcripts = multiturn_recall(CONVS, recall_fn(obey_until=1), turns=(1, 2, 4), seed=0)
    assert [r["recall"] for r in table] == [1.0, 0.0, 0.0]
    assert transcripts[1]["turns"][1]["parts"] == {"capitals": False, "signoff": False}


def test_recall_counts_only_turns_reached():
    table, transcripts = multiturn_recall(
        CONVS, recall_fn(none_from=3), turns=(1, 2, 4, 6), seed=0, batch_size=1
    )
    assert [r["evaluated"] for r in table] == [2, 2, 0, 0]
    assert [r["recall"] for r in table] == [1.0, 1.0, None, None]
    assert all(tr["stopped_at"] == 3 for tr in transcripts)
    short = [dict(CONVS[0], users=["u1", "u2"])]
    table, _ = multiturn_recall(short, recall_fn(), turns=(2, 4), seed=0)
    assert [r["evaluated"] for r in table] == [1, 0]
    assert Counter(r["satisfied"] for r in table) == Counter({1: 1, 0: 1})


def test_an_empty_answer_is_evaluated_unsatisfied_and_ends_its_conversation():
    """A tiny model may stop at once; the blank answer must not be fed back as a chat turn."""

    def answer_fn(contexts, seed):
        out = []
        for system, turns in contexts:
            render_chat(system, turns)  # raises on a blank turn, as the real tokenizer path does
            turn = len(turns) // 2 + 1
            out.append(
                ""
                if turn == 2 and system == Instruction.from_json(CONVS[0]["instruction"]).text
                else apply(INSTRUCTIONS[system], "ok.")
            )
        return out

    table, transcripts = multiturn_recall(CONVS, answer_fn, turns=(1, 2, 3), seed=0)
    assert [(r["evaluated"], r["satisfied"]) for r in table] == [(2, 2), (2, 1), (1, 1)]
    assert (transcripts[0]["stopped_at"], transcripts[0]["stop_reason"]) == (3, "empty_answer")
    assert (transcripts[1]["stopped_at"], transcripts[1]["stop_reason"]) == (None, None)


def test_an_instruction_space_narrows_what_is_drawn():
    space = InstructionSpace(
        kinds=("hobby", "persona"), hobbies=("tennis",), personas=("Mozart",), max_parts=1
    )
    rng = random.Random(0)
    drawn = [sample_instruction(rng, 0.5, space=space) for _ in range(50)]
    assert {len(i.parts) for i in drawn} == {1}
    assert {(p.kind, p.value) for i in drawn for p in i.parts} == {
        ("hobby", "tennis"),
        ("persona", "Mozart"),
    }
    with pytest.raises(ValueError):
        InstructionSpace(kinds=("dance",))


def test_hobby_phrase_takes_the_right_article():
    hobby = Instruction((Part("hobby", "astronomy"),))
    assert apply(hobby, "Hi.").startswith("Speaking as an astronomy lover:")
