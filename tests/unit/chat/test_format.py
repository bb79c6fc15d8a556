from collections import Counter

import numpy as np
import pytest
import torch

from models.llama import IGNORE_INDEX as IGN
from tasks.chat.format import (
    MaskStrategy,
    _first_fit,
    example_loss_mask,
    pack_examples,
    prompt_tokens,
    render_chat,
    tokenize_dialogue,
)
from tasks.chat.tokenizer import SentencePieceTokenizer
from tasks.tokenizer.train import TokenizerConfig, train_tokenizer
from tasks.training.data import TokenBatches

torch.set_num_threads(1)

SYSTEM = "You are a helpful assistant."
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]
SYS_BLOCK = "<<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
PROMPT_1 = f"[INST] {SYS_BLOCK}What is the capital of France? [/INST]"
ANSWER_1 = "The capital of France is Paris. "
PROMPT_2 = "[INST] And of Italy? [/INST]"
ANSWER_2 = "Rome is the capital of Italy. "


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    lines = [
        f"{PROMPT_1} {ANSWER_1}",
        f"{PROMPT_2} {ANSWER_2}",
        "Tell me a joke about cats. Why did the cat sit on the computer? To watch the mouse.",
        "The quick brown fox jumps over the lazy dog while the farmer sleeps in the sun.",
        "Paris, Rome, Berlin and Madrid are capitals; France, Italy and Spain are countries.",
    ]
    cfg = TokenizerConfig(vocab_size=400, sample_bytes=1_000_000, num_threads=1)
    path, _ = train_tokenizer(lines * 30, cfg, tmp_path_factory.mktemp("tok") / "tok.model")
    return SentencePieceTokenizer(path)


# --- render_chat: the paper's string form (§3.1) -------------------------------------------------


def test_render_one_turn_with_system():
    assert render_chat(SYSTEM, TURNS[:2]) == (
        "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
        "What is the capital of France? [/INST] The capital of France is Paris. </s>"
    )


def test_render_without_system_has_no_sys_block():
    assert render_chat("", TURNS[:2]) == (
        "<s>[INST] What is the capital of France? [/INST] The capital of France is Paris. </s>"
    )


def test_render_two_and_three_turns_strips_contents_and_keeps_system_in_first_only():
    turns = [
        user("  Hi!\n"),
        assistant("\nHello. "),
        user("Count to 2."),
        assistant("1 2"),
        user("Bye"),
        assistant("  Goodbye.  "),
    ]
    two = (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s>"
        "<s>[INST] Count to 2. [/INST] 1 2 </s>"
    )
    assert render_chat("Be brief.", turns[:4]) == two
    assert render_chat("Be brief.", turns) == two + "<s>[INST] Bye [/INST] Goodbye. </s>"


def test_render_generation_prompt_ends_with_inst_close():
    assert render_chat(SYSTEM, TURNS[:3]) == (
        f"<s>{PROMPT_1} {ANSWER_1}</s><s>[INST] And of Italy? [/INST]"
    )
    assert render_chat("", [user("Hi")]) == "<s>[INST] Hi [/INST]"


@pytest.mark.parametrize(
    "turns",
    [
        [],
        [assistant("Hi")],
        [user("Hi"), user("Hello")],
        [user("Hi"), assistant("Hello"), assistant("Again")],
        [user("Hi"), {"role": "system", "content": "x"}],
        [user("Hi"), assistant("   ")],
    ],
)
def test_bad_dialogues_raise(turns):
    with pytest.raises(ValueError, match="turn"):
        render_chat("", turns)


# --- tokens and labels ---------------------------------------------------------------------------


def test_labels_token_by_token_for_both_strategies(sp):
    bos, eos = sp.bos_id(), sp.eos_id()
    p1, a1, p2, a2 = (sp.encode(t) for t in (PROMPT_1, ANSWER_1, PROMPT_2, ANSWER_2))
    expected_tokens = [bos, *p1, *a1, eos, bos, *p2, *a2, eos]
    ign = lambda n: [IGN] * n  # noqa: E731
    expected = {
        MaskStrategy.ALL_ASSISTANT: ign(1 + len(p1)) + a1 + [eos] + ign(1 + len(p2)) + a2 + [eos],
        MaskStrategy.LAST_TURN: ign(1 + len(p1) + len(a1) + 1 + 1 + len(p2)) + a2 + [eos],
    }
    for strategy, labels in expected.items():
        tokens, got = tokenize_dialogue(sp, SYSTEM, TURNS, strategy)
        assert tokens == expected_tokens
        assert got == labels
    assert tokenize_dialogue(sp, SYSTEM, TURNS, "last_turn")[1] == expected[MaskStrategy.LAST_TURN]


def test_tokens_match_metas_joint_encoding(sp):
    # Meta's chat_completion encodes f"[INST] {user} [/INST] {answer} " in one call per turn.
    bos, eos = sp.bos_id(), sp.eos_id()
    meta = [
        bos,
        *sp.encode(f"{PROMPT_1} {ANSWER_1}"),
        eos,
        bos,
        *sp.encode(f"{PROMPT_2} {ANSWER_2}"),
        eos,
    ]
    assert tokenize_dialogue(sp, SYSTEM, TURNS, "all_assistant")[0] == meta


def test_decoding_each_turn_reproduces_render_chat(sp):
    for system in (SYSTEM, ""):
        tokens, labels = tokenize_dialogue(sp, system, TURNS, "all_assistant")
        starts = [i for i, t in enumerate(tokens) if t == sp.bos_id()] + [len(tokens)]
        assert len(starts) == 3 and all(tokens[e - 1] == sp.eos_id() for e in starts[1:])
        turns_text = [sp.decode(tokens[s + 1 : e - 1]) for s, e in zip(starts, starts[1:])]
        assert "".join(f"<s>{t}</s>" for t in turns_text) == render_chat(system, TURNS)
        # the answer targets alone decode to the answer text, " " included
        first = [t for t, lab in zip(tokens[: starts[1] - 1], labels) if lab != IGN]
        assert sp.decode(first) == ANSWER_1


def test_contents_are_stripped_before_encoding(sp):
    padded = [{"role": t["role"], "content": f"  {t['content']}\n "} for t in TURNS]
    assert tokenize_dialogue(sp, SYSTEM, padded, "all_assistant") == tokenize_dialogue(
        sp, SYSTEM, TURNS, "all_assistant"
    )


def test_prompt_tokens_is_a_prefix_up_to_the_last_inst_close(sp):
    full, _ = tokenize_dialogue(sp, SYSTEM, TURNS, "all_assistant")
    prompt = prompt_tokens(sp, SYSTEM, TURNS[:3])
    answer = [*sp.encode(ANSWER_2), sp.eos_id()]
    assert full == prompt + answer
    assert sp.decode(prompt[prompt.index(sp.bos_id(), 1) + 1 :]) == PROMPT_2
    first = prompt_tokens(sp, SYSTEM, TURNS[:1])
    assert first == [sp.bos_id(), *sp.encode(PROMPT_1)] and full[: len(first)] == first


def test_wrong_ending_or_strategy_raises(sp):
    with pytest.raises(ValueError, match="end with the assistant"):
        tokenize_dialogue(sp, SYSTEM, TURNS[:3], "all_assistant")
    with pytest.raises(ValueError, match="end with a user turn"):
        prompt_tokens(sp, SYSTEM, TURNS)
    with pytest.raises(ValueError, match="unknown mask strategy"):
        tokenize_dialogue(sp, SYSTEM, TURNS, "everything")


# --- packing -------------------------------------------------------------------------------------

BOS, EOS, PAD, SEP = 1, 2, 0, 7


def synthetic_examples(n, seed=0):
    """Example i: <s>, prompt ids 1000+i, answer ids 2000+i, </s>; targets = answer + </s>."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        plen, alen = int(rng.integers(1, 8)), int(rng.integers(1, 12))
        tokens = [BOS] + [1000 + i] * plen + [2000 + i] * alen + [EOS]
        out.append((tokens, [IGN] * (1 + plen) + [2000 + i] * alen + [EOS]))
    return out


def recover(packed, seq_len, separator):
    """Split each bin back into (tokens, mask) examples; checks separators on the way."""
    found = []
    for b in range(packed.stats["bins"]):
        toks = packed.tokens[b * seq_len : (b + 1) * seq_len]
        mask = packed.loss_mask[b * seq_len : (b + 1) * seq_len]
        used = int(np.flatnonzero(toks != PAD)[-1]) + 1
        assert not mask[used:].any()
        starts = list(np.flatnonzero(toks[:used] == BOS))
        for k, s in enumerate(starts):
            end = starts[k + 1] - len(separator) if k + 1 < len(starts) else used
            if k + 1 < len(starts):  # a separator sits between consecutive examples, mask 0
                assert list(toks[end : starts[k + 1]]) == list(separator)
                assert not mask[end : starts[k + 1]].any()
            found.append((toks[s:end].tolist(), mask[s:end].tolist()))
    return found


@pytest.mark.parametrize("separator", [(), (SEP,)])
def test_every_example_is_packed_whole_exactly_once(separator):
    examples, seq_len = synthetic_examples(40), 32
    packed = pack_examples(examples, seq_len, PAD, separator=separator, seed=3)
    found = recover(packed, seq_len, separator)
    expected = [(t, example_loss_mask(lab).tolist()) for t, lab in examples]
    assert sorted(found) == sorted(expected)  # a split example would not match any original
    assert packed.tokens.shape == packed.loss_mask.shape == (packed.stats["bins"] * seq_len + 1,)
    assert packed.tokens.dtype == np.int32 and packed.loss_mask.dtype == np.uint8
    n_tokens = sum(len(t) for t, _ in examples)
    n_sep = len(separator) * (len(examples) - packed.stats["bins"])
    assert packed.stats["separator_tokens"] == n_sep
    assert packed.stats["fill"] == pytest.approx(
        np.count_nonzero(packed.tokens[:-1] != PAD) / (packed.stats["bins"] * seq_len)
    )
    bin_tokens = packed.stats["bins"] * seq_len
    assert packed.stats["fill"] == pytest.approx((n_tokens + n_sep) / bin_tokens)
    assert packed.stats["target_tokens"] == sum(lab != IGN for _, labs in examples for lab in labs)
    assert packed.stats["max_examples_per_bin"] > 1
    # every bin starts with <s> (mask 0) and the array ends with one pad (mask 0)
    assert (packed.tokens[:-1:seq_len] == BOS).all() and not packed.loss_mask[::seq_len].any()
    assert packed.tokens[-1] == PAD


@pytest.mark.parametrize("separator", [(), (EOS,)])
def test_segments_number_each_example_with_its_separator_and_each_pad_run(separator):
    examples, seq_len = synthetic_examples(25), 32
    packed = pack_examples(examples, seq_len, PAD, separator=separator, seed=3)
    seg, tokens = packed.segments, packed.tokens
    assert seg.shape == tokens.shape and (np.diff(seg) >= 0).all()  # ids only grow
    starts = np.flatnonzero(np.diff(seg, prepend=-1))
    # an example's segment opens with its <s>; a pad run's with a pad
    assert set(tokens[starts].tolist()) <= {BOS, PAD}
    example_starts = starts[tokens[starts] == BOS]
    assert len(example_starts) == len(examples)
    bounds = [*starts, len(seg)]
    for a, b in zip(bounds, bounds[1:]):
        body = tokens[a:b]
        if body[0] == BOS:  # the example whole, then its separator if another example follows
            end = int(np.flatnonzero(body == EOS)[0]) + 1
            assert body[end:].tolist() in ([], list(separator))
            assert (b - a) - end in (0, len(separator))
        else:
            assert (body == PAD).all()
        assert a // seq_len == (b - 1) // seq_len  # no segment crosses a bin
    assert seg[-1] != seg[-2]  # the trailing pad belongs to no bin's example


def test_first_fit_places_each_example_in_the_first_bin_with_room():
    lengths = np.array([6, 6, 3, 4])
    assert _first_fit(lengths, 10, 0) == [[0, 2], [1, 3]]
    assert _first_fit(lengths, 10, 1) == [[0, 2], [1], [3]]  # 6 + 1 + 4 > 10


def test_packing_is_seeded():
    examples = synthetic_examples(40)
    a, b = (pack_examples(examples, 32, PAD, seed=5) for _ in range(2))
    c = pack_examples(examples, 32, PAD, seed=6)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.loss_mask, b.loss_mask)
    assert not np.array_equal(a.tokens, c.tokens)


def test_too_long_or_malformed_examples_raise():
    examples = synthetic_examples(5)
    long = ([BOS] + [5] * 40 + [EOS], [IGN] * 41 + [EOS])
    with pytest.raises(ValueError, match="example 3 has 42 tokens > seq_len 32"):
        pack_examples(examples[:3] + [long] + examples[3:], 32, PAD)
    with pytest.raises(ValueError, match="example 0: its first token"):
        pack_examples([([BOS, 5, EOS], [BOS, 5, EOS])], 32, PAD)
    with pytest.raises(ValueError, match="labels must equal tokens"):
        pack_examples([([BOS, 5, EOS], [IGN, 6, EOS])], 32, PAD)
    with pytest.raises(ValueError, match="no examples"):
        pack_examples([], 32, PAD)


@pytest.mark.parametrize("separator", [(), (EOS,)])
def test_token_batches_train_exactly_the_examples_targets(sp, separator):
    dialogues = [(SYSTEM, TURNS), ("", TURNS), ("", TURNS[2:]), (SYSTEM, TURNS[:2])]
    real = [tokenize_dialogue(sp, s, t, strat) for s, t in dialogues for strat in MaskStrategy]
    examples, seq_len = real + synthetic_examples(30), 96
    packed = pack_examples(examples, seq_len, PAD, separator=separator, seed=1)
    batches = TokenBatches(packed.tokens, 1, seq_len, loss_mask=packed.loss_mask, order="epochs")
    assert batches.windows_per_epoch == packed.stats["bins"]
    ys = [batches.batch(i)[1] for i in range(packed.stats["bins"])]  # one epoch: each bin once
    y = torch.cat(ys).flatten()
    assert all(int(w[0, -1]) == IGN for w in ys)  # the next bin's <s> is never trained
    targets = Counter(int(t) for t in y[y != IGN])
    expected = Counter(lab for _, labs in examples for lab in labs if lab != IGN)
    assert targets == expected and sum(targets.values()) == packed.stats["target_tokens"]


def test_a_cut_off_answer_is_trained_without_its_closing_eos(sp):
    """Rejection sampling's best answer can be cut off (all K were): its example must not teach
    the model to stop mid-sentence, so the target ends where the answer was cut."""
    from tasks.training.finetune import answer_examples

    row = {
        "system": "",
        "prompt": [{"role": "user", "content": "Name a colour."}],
        "response": "Blue is a colour that many",
    }
    rows = [{**row, "ended": True}, {**row, "ended": False}]
    frame, stats = answer_examples(rows, sp, 256, "response", "ended")
    ended, cut = frame.to_dicts()
    assert ended["tokens"][-1] == sp.eos_id() and ended["labels"][-1] == sp.eos_id()
    assert cut["tokens"] == ended["tokens"][:-1] and cut["labels"] == ended["labels"][:-1]
    assert sp.eos_id() not in cut["tokens"]
    assert stats["cut_off_targets"] == 1 and stats["examples"] == 2
    # without the flag every answer counts as ended, as before
    frame, stats = answer_examples(rows, sp, 256, "response")
    assert all(r["tokens"][-1] == sp.eos_id() for r in frame.to_dicts())
    assert stats["cut_off_targets"] == 0
