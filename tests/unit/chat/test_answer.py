"""make_answer_status_fn: the answers of make_answer_fn, and whether each ended at EOS."""

import dataclasses

import torch

from models.generation import ended_at_eos, generate
from models.llama import Llama, tiny
from tasks.chat.answer import cutoff_share, make_answer_fn, make_answer_status_fn
from tasks.chat.format import prompt_tokens, tokenize_dialogue
from tests.unit.reward.test_data import SYSTEM, TURNS, sp  # noqa: F401

torch.set_num_threads(1)


def test_ended_at_eos_reads_the_last_token():
    rows = [[5, 6, 2], [5, 6, 7], [2], []]
    assert ended_at_eos(rows, 2) == [True, False, True, False]
    assert ended_at_eos(rows, None) == [False] * 4  # no EOS id: nothing can end


def test_cutoff_share_counts_only_generated_answers():
    assert cutoff_share([True, False, None, False]) == 2 / 3
    assert cutoff_share([None, None]) is None and cutoff_share([]) is None


def test_answer_status_agrees_with_generate_and_keeps_the_old_call_form(sp):  # noqa: F811
    torch.manual_seed(0)
    model = Llama(dataclasses.replace(tiny(vocab_size=sp.vocab_size()), max_seq_len=256)).eval()
    long_user = " ".join(["word"] * 400)  # does not fit 256 tokens with the answer
    contexts = [
        (SYSTEM, TURNS[:1]),
        ("", TURNS[2:3]),
        ("", [{"role": "user", "content": long_user}]),
    ]
    texts, ended = make_answer_status_fn(model, sp, 6, 0.0, 1.0)(contexts, seed=1)
    assert texts[2] is None and ended[2] is None  # too long: neither text nor status
    rows = generate(
        model,
        [prompt_tokens(sp, s, t) for s, t in contexts[:2]],
        6,
        temperature=0.0,
        eos_id=sp.eos_id(),
        seed=1,
    )
    assert ended[:2] == ended_at_eos(rows, sp.eos_id())
    assert all(len(r) == 6 for r, e in zip(rows, ended) if not e)  # cut off: the full budget
    assert make_answer_fn(model, sp, 6, 0.0, 1.0)(contexts, seed=1) == texts


def test_a_given_prefix_starts_every_answer_and_the_model_continues_from_it(sp):  # noqa: F811
    torch.manual_seed(0)
    model = Llama(dataclasses.replace(tiny(vocab_size=sp.vocab_size()), max_seq_len=256)).eval()
    contexts = [(SYSTEM, TURNS[:1]), ("", TURNS[2:3])]
    texts, ended = make_answer_status_fn(model, sp, 6, 0.0, 1.0, prefix="Sure.")(contexts, 1)
    assert all(t.startswith("Sure.") for t in texts)
    # the prefix is encoded as the start of a training answer that begins with it
    answer = {"role": "assistant", "content": "Sure. It is four."}
    tokens, _ = tokenize_dialogue(sp, SYSTEM, [*TURNS[:1], answer], "last_turn")
    primed = prompt_tokens(sp, SYSTEM, TURNS[:1], prefix="Sure.")
    assert tokens[: len(primed)] == primed
    assert len(primed) > len(prompt_tokens(sp, SYSTEM, TURNS[:1]))
    # what follows the prefix is what generate continues with from those tokens
    rows = generate(model, [primed], 6, temperature=0.0, eos_id=sp.eos_id(), seed=1)
    head = primed[len(prompt_tokens(sp, SYSTEM, TURNS[:1])) :]
    assert texts[0] == sp.decode(head + [t for t in rows[0] if t != sp.eos_id()]).strip()
    assert ended[0] == ended_at_eos(rows, sp.eos_id())[0]
    assert make_answer_status_fn(model, sp, 6, 0.0, 1.0, prefix="  ")(contexts, 1) == (
        make_answer_status_fn(model, sp, 6, 0.0, 1.0)(contexts, 1)
    )  # a blank prefix is no prefix
