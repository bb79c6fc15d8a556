import numpy as np
import pytest
import torch

from tasks.chat.format import prompt_tokens
from tasks.chat.tokenizer import SentencePieceTokenizer
from tasks.reward.data import (
    Y_LENGTH,
    Y_MARGIN,
    Y_SAFE,
    EncodedPair,
    PairBatches,
    data_mix,
    encode_pairs,
)
from tasks.tokenizer.train import TokenizerConfig, train_tokenizer

torch.set_num_threads(1)

SYSTEM = "You are a helpful assistant."
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
]
CHOSEN = "Rome is the capital of Italy."
REJECTED = "Paris."


def pair(i, kind="helpfulness", split="train", **extra):
    row = {
        "pair_id": f"{kind}-{split}-{i}",
        "system": SYSTEM,
        "prompt": TURNS,
        "chosen": CHOSEN,
        "rejected": REJECTED,
        "rating": "better",
        "kind": kind,
        "chosen_safe": True,
        "rejected_safe": False,
        "split": split,
    }
    return row | extra


def make_pairs(n_help, n_safety, n_test=5):
    return (
        [pair(i) for i in range(n_help)]
        + [pair(i, "safety") for i in range(n_safety)]
        + [pair(i, kind, "test") for i in range(n_test) for kind in ("helpfulness", "safety")]
    )


def kinds(rows):
    return [r["kind"] for r in rows]


# --- data_mix (RECIPE.md §6) ---------------------------------------------------------------------


def test_helpfulness_mix_adds_an_equal_number_of_safety_pairs():
    mix, stats = data_mix(make_pairs(10, 40), "helpfulness", seed=0)
    assert kinds(mix) == ["helpfulness"] * 10 + ["safety"] * 10  # 10 + 10 of the 40
    assert all(r["split"] == "train" for r in mix)
    assert len({r["pair_id"] for r in mix}) == 20  # without replacement
    assert stats == {
        "pairs": 20,
        "pairs.helpfulness": 10,
        "pairs.safety": 10,
        "wanted.safety": 10,
        "available.safety": 40,
        "skipped_not_train": 10,
    }


def test_safety_mix_is_90_10():
    mix, stats = data_mix(make_pairs(10, 40), "safety", seed=0)
    # round(40 * 0.1 / 0.9) = round(4.44) = 4 helpfulness pairs: 40 / 44 = 91 % safety
    assert kinds(mix) == ["safety"] * 40 + ["helpfulness"] * 4
    assert all(r["split"] == "train" for r in mix)
    assert stats["pairs"] == 44 and stats["pairs.helpfulness"] == 4


def test_mix_is_seeded():
    rows = make_pairs(10, 40)
    ids = [[r["pair_id"] for r in data_mix(rows, "helpfulness", seed=s)[0]] for s in (0, 0, 1)]
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]  # another seed samples other safety pairs
    assert ids[0][:10] == ids[2][:10]  # every helpfulness pair in both


def test_mix_caps_at_what_exists():
    mix, stats = data_mix(make_pairs(10, 3), "helpfulness", seed=0)
    assert kinds(mix) == ["helpfulness"] * 10 + ["safety"] * 3
    assert stats["wanted.safety"] == 10 and stats["available.safety"] == 3
    mix, _ = data_mix(make_pairs(2, 40), "safety", seed=0, safety_share=0.5)  # wants 40, has 2
    assert kinds(mix) == ["safety"] * 40 + ["helpfulness"] * 2


def test_mix_errors():
    with pytest.raises(ValueError, match="no train pairs of kind 'safety'"):
        data_mix(make_pairs(10, 0), "safety", seed=0)
    with pytest.raises(ValueError, match="rm must be"):
        data_mix(make_pairs(10, 10), "harmless", seed=0)
    with pytest.raises(ValueError, match="safety_share"):
        data_mix(make_pairs(10, 10), "safety", seed=0, safety_share=0.0)


# --- encode_pairs: the chat format, prompt left-truncation ---------------------------------------


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    lines = [
        f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{TURNS[0]['content']} [/INST]",
        f"{TURNS[1]['content']}",
        f"[INST] {TURNS[2]['content']} [/INST] {CHOSEN} {REJECTED}",
        "The quick brown fox jumps over the lazy dog while the farmer sleeps in the sun.",
    ]
    cfg = TokenizerConfig(vocab_size=400, sample_bytes=1_000_000, num_threads=1)
    path, _ = train_tokenizer(lines * 30, cfg, tmp_path_factory.mktemp("tok") / "tok.model")
    return SentencePieceTokenizer(path)


def test_encode_is_prompt_tokens_then_sft_answer(sp):
    rows = [pair(0), pair(1, chosen_safe=None)]
    encoded, excluded, stats = encode_pairs(rows, sp, seq_len=512, margins=[2 / 3, 0.0])
    prompt = prompt_tokens(sp, SYSTEM, TURNS)
    first = encoded[0]
    assert first.chosen == prompt + sp.encode(f"{CHOSEN} ") + [sp.eos_id()]
    assert first.rejected == prompt + sp.encode(f"{REJECTED} ") + [sp.eos_id()]
    assert first.chosen[-1] == sp.eos_id() and first.prompt_len == len(prompt)
    assert sp.decode(first.chosen[len(prompt) :]) == f"{CHOSEN} "  # the SFT answer text
    assert (first.margin, first.chosen_safe, first.rejected_safe) == (2 / 3, 1, 0)
    assert (first.pair_id, first.rating, first.kind) == (
        "helpfulness-train-0",
        "better",
        "helpfulness",
    )
    assert (encoded[1].margin, encoded[1].chosen_safe) == (0.0, -1)  # unknown safety label
    assert excluded == []
    (padded,), _, _ = encode_pairs([pair(0, chosen=f"  {CHOSEN}\n")], sp, 512, margins=[0])
    assert padded.chosen == first.chosen  # stripped like SFT answers
    assert stats["pairs"] == 2 and stats["truncated"] == 0 and stats["excluded"] == 0


def test_long_prompt_loses_its_oldest_tokens_not_the_response(sp):
    prompt = prompt_tokens(sp, SYSTEM, TURNS)
    chosen = sp.encode(f"{CHOSEN} ") + [sp.eos_id()]
    rejected = sp.encode(f"{REJECTED} ") + [sp.eos_id()]
    seq_len = 2 * len(chosen)  # the longer response takes half; the prompt gets the other half
    assert len(prompt) > seq_len - len(chosen)  # the prompt must be cut
    (enc,), _, stats = encode_pairs([pair(0)], sp, seq_len, margins=[1.0])
    kept = seq_len - len(chosen)
    assert len(enc.chosen) == seq_len and enc.prompt_len == kept
    assert enc.chosen[0] == sp.bos_id()  # <s> stays first
    assert enc.chosen[1:kept] == prompt[len(prompt) - (kept - 1) :]  # the newest prompt tokens
    assert enc.chosen[kept:] == chosen and enc.rejected[kept:] == rejected  # responses intact
    assert enc.rejected[:kept] == enc.chosen[:kept]  # both compared in the same context
    assert stats["truncated"] == 1


def test_response_longer_than_half_the_sequence_is_excluded(sp):
    n_chosen = len(sp.encode(f"{CHOSEN} ")) + 1
    rows = [pair(0), pair(1, chosen=REJECTED, rejected=CHOSEN)]
    kept, excluded, _ = encode_pairs(rows, sp, 2 * n_chosen, margins=[0, 0])
    assert len(kept) == 2  # exactly seq_len // 2 still fits
    kept, excluded, stats = encode_pairs(
        rows + [pair(2, chosen="Hi.", rejected="Ok.")], sp, 2 * n_chosen - 1, margins=[0, 0, 0]
    )
    assert [p.pair_id for p in kept] == ["helpfulness-train-2"]
    assert [(r["pair_id"], reason) for r, reason, _ in excluded] == [
        ("helpfulness-train-0", "reward_too_long"),
        ("helpfulness-train-1", "reward_too_long"),
    ]
    assert excluded[0][2].startswith(f"the chosen response is {n_chosen} tokens")
    assert excluded[1][2].startswith(f"the rejected response is {n_chosen} tokens")
    assert stats["excluded"] == 2 and stats["excluded.reward_too_long"] == 2


def test_encode_needs_one_margin_per_row(sp):
    with pytest.raises(ValueError, match="1 margins for 2 rows"):
        encode_pairs([pair(0), pair(1)], sp, 64, margins=[1.0])


# --- PairBatches ---------------------------------------------------------------------------------


def encoded(n):
    """Pair i: chosen [100 + i] * (i % 3 + 2) tokens, rejected [200 + i] * (i % 2 + 1)."""
    return [
        EncodedPair(
            pair_id=f"p{i}",
            chosen=[100 + i] * (i % 3 + 2),
            rejected=[200 + i] * (i % 2 + 1),
            margin=i / 10,
            chosen_safe=i % 2,
            rejected_safe=-1 if i == 0 else 0,
            rating="better",
            kind="safety",
        )
        for i in range(n)
    ]


def test_batch_layout_chosen_rows_first():
    pairs = encoded(7)
    data = PairBatches(pairs, batch_size=3, seq_len=6, pad_id=9, seed=0)
    x, y = data.batch(0)
    assert x.shape == (6, 6) and x.dtype == torch.long
    assert y.shape == (6, 3) and y.dtype == torch.float32
    for row, i in enumerate(data.pair_indices(0).tolist()):
        p = pairs[i]
        for r, seq, safe in (
            (row, p.chosen, p.chosen_safe),
            (row + 3, p.rejected, p.rejected_safe),
        ):
            assert x[r, : len(seq)].tolist() == seq
            assert (x[r, len(seq) :] == 9).all()  # right padding
            assert y[r, Y_LENGTH] == len(seq)
            assert y[r, Y_MARGIN] == pytest.approx(i / 10)  # the pair's margin on both rows
            assert y[r, Y_SAFE] == safe


def test_every_pair_once_per_epoch():
    pairs = encoded(7)
    data = PairBatches(pairs, batch_size=3, seq_len=6, seed=3)
    assert data.steps_per_epoch == 3  # ceil(7 / 3)
    seen = [int(x[r, 0]) - 100 for k in range(5) for x in [data.batch(k)[0]] for r in range(3)]
    assert sorted(seen[:7]) == list(range(7))  # epoch 0: samples 0..6
    assert sorted(seen[7:14]) == list(range(7))  # epoch 1, starting inside batch 2
    assert seen[:7] != seen[7:14]  # a fresh permutation per epoch


def test_batches_depend_on_seed_and_index_only():
    pairs = encoded(7)
    a = PairBatches(pairs, batch_size=3, seq_len=6, seed=1)
    for k in range(4):
        a.batch(k)
    b = PairBatches(pairs, batch_size=3, seq_len=6, seed=1)
    for got, want in zip(a.batch(4), b.batch(4)):  # no state carried from earlier batches
        assert torch.equal(got, want)
    other = PairBatches(pairs, batch_size=3, seq_len=6, seed=2)
    assert [a.pair_indices(k).tolist() for k in range(3)] != [
        other.pair_indices(k).tolist() for k in range(3)
    ]


def test_pair_batches_errors():
    with pytest.raises(ValueError, match="no pairs"):
        PairBatches([], batch_size=2, seq_len=8)
    with pytest.raises(ValueError, match="longer than seq_len 3"):
        PairBatches(encoded(3), batch_size=2, seq_len=3)


def test_a_batch_larger_than_the_pairs_wraps_into_the_next_epoch():
    x, y = PairBatches(encoded(1), batch_size=2, seq_len=4).batch(0)  # one pair, twice
    assert np.array_equal(
        y.numpy(), np.array([[2, 0, 0], [2, 0, 0], [1, 0, -1], [1, 0, -1]], dtype=np.float32)
    )


def test_helpfulness_mix_with_benign_other_pairs_never_takes_an_adversarial_pair():
    # 20 safety pairs: 12 adversarial (a refusal wins them), 8 borderline (the helpful answer wins)
    rows = make_pairs(10, 0) + [
        pair(i, "safety", risk_category="illicit_criminal" if i < 12 else None) for i in range(20)
    ]
    mix, stats = data_mix(rows, "helpfulness", seed=0, other_pairs="benign")
    safety = [r for r in mix if r["kind"] == "safety"]
    assert len(safety) == 8 and all(r["risk_category"] is None for r in safety)
    assert stats["available.safety"] == 8
    mix, _ = data_mix(rows, "helpfulness", seed=0, other_pairs="all")
    assert sum(r["kind"] == "safety" for r in mix) == 10  # an equal number, any prompt
    mix, stats = data_mix(rows, "helpfulness", seed=0, other_pairs="none")
    assert kinds(mix) == ["helpfulness"] * 10 and stats["pairs.safety"] == 0
    with pytest.raises(ValueError, match="other_pairs"):
        data_mix(rows, "helpfulness", seed=0, other_pairs="some")
