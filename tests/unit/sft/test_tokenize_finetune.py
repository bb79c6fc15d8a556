"""Dialogues -> examples (truncation at turn boundaries), and fine-tuning from a checkpoint."""

import copy
import math
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from models.llama import IGNORE_INDEX, Llama, tiny
from tasks.chat.answer import make_answer_fn
from tasks.chat.format import MaskStrategy
from tasks.chat.tokenizer import SentencePieceTokenizer
from tasks.records import dialogue_frame
from tasks.sft.tokenize import tokenize_rows
from tasks.tokenizer.train import TokenizerConfig, train_tokenizer
from tasks.tracking import InMemoryLogger
from tasks.training.finetune import FinetuneConfig, finetune
from tasks.training.model_io import export_model, load_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    text = [
        "What is two plus two? Two plus two is four. What is the capital of France? Paris.",
        "Hello there, how are you today? I am fine, thank you for asking, and you?",
    ]
    cfg = TokenizerConfig(vocab_size=300, sample_bytes=1_000_000, num_threads=1)
    path, _ = train_tokenizer(text * 40, cfg, tmp_path_factory.mktemp("tok") / "tok.model")
    return SentencePieceTokenizer(path)


def row(i, n_turns, split="train", strategy=None, answer="Two plus two is four."):
    turns = []
    for _ in range(n_turns):
        turns += [
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": answer},
        ]
    return {
        "dialogue_id": f"t:{i}",
        "source": "tasks",
        "category": "arithmetic",
        "system": "",
        "turns": turns,
        "is_safety": False,
        "risk_category": None,
        "reference": "4",
        "instruction": None,
        "mask_strategy": strategy,
        "split": split,
        "location": "test",
    }


def test_long_dialogues_keep_the_leading_turns_that_fit(sp):
    one, _, _ = tokenize_rows([row(0, 1)], sp, MaskStrategy.ALL_ASSISTANT, 1000)
    per_turn = one[0]["n_tokens"]
    examples, excluded, stats = tokenize_rows(
        [row(1, 5), row(2, 1, answer="four " * 200)], sp, MaskStrategy.ALL_ASSISTANT, 3 * per_turn
    )
    assert examples[0]["n_tokens"] == 3 * per_turn  # 5 exchanges cut to 3, whole
    assert stats["truncated"] == 1
    assert [(r["dialogue_id"], reason) for r, reason, _ in excluded] == [
        ("t:2", "tokenize_too_long")
    ]
    assert dialogue_frame(examples, "sft_examples").height == 1  # passes the contract


def test_per_dialogue_strategy_overrides_the_default(sp):
    examples, _, _ = tokenize_rows(
        [row(0, 2), row(1, 2, strategy="last_turn")], sp, MaskStrategy.ALL_ASSISTANT, 1000
    )
    all_turns, last_only = examples[0]["n_targets"], examples[1]["n_targets"]
    assert all_turns == 2 * last_only  # same answers; GAtt rows train only the last one


def test_finetune_from_a_checkpoint_learns_the_answers_and_chats(sp, tmp_path):
    torch.manual_seed(0)
    model = Llama(tiny(vocab_size=sp.vocab_size()))
    examples, _, _ = tokenize_rows(
        [row(i, 1) for i in range(24)] + [row(99, 1, split="heldout")],
        sp,
        MaskStrategy.ALL_ASSISTANT,
        64,
    )
    df = dialogue_frame(examples, "sft_examples")
    cfg = FinetuneConfig(
        epochs=8,
        train={
            "batch_size": 4,
            "seq_len": 64,
            "lr": 1e-2,
            "threads": 1,
            "log_every": 5,
            "eval_every": 10,
            "eval_batches": 1,
        },
    )
    logger = InMemoryLogger()
    stats, pack = finetune(
        model,
        df.filter(pl.col("split") == "train"),
        df.filter(pl.col("split") == "heldout"),
        cfg,
        pad_id=0,
        separator=[],
        logger=logger,
        out_dir=tmp_path / "run",
    )
    # 24 examples of ~24 tokens pack into bins of 64; steps follow from the epochs
    assert stats["steps"] == math.ceil(8 * pack["pack.sequences"] / 4)
    val = [v for _, v in logger.metrics["val_loss"]]
    assert val[-1] < 0.5 * val[0]  # it learns the (only) answer
    model_dir = export_model(Path(stats["checkpoint"]), tmp_path / "model")
    chat = make_answer_fn(load_model(model_dir), sp, max_new_tokens=24, temperature=0.0, top_p=1.0)
    answer, too_long = chat(
        [
            ("", row(0, 1)["turns"][:1]),
            ("", [{"role": "user", "content": "What is two plus two? " * 20}]),
        ],
        seed=0,
    )
    assert "four" in answer.lower()
    assert too_long is None  # the prompt leaves no room in the 128-token window


def test_sft_defaults_fill_keys_a_preset_leaves_out():
    cfg = FinetuneConfig(train={"batch_size": 2, "seq_len": 32})
    assert cfg.train.lr == 2e-5 and cfg.train.weight_decay == 0.1  # paper §3.1, not pretraining's
    resolved = cfg.resolve(n_sequences=101)
    assert resolved.max_steps == 101 and resolved.warmup_steps == 3  # 2 epochs / batch 2; 3 %
    assert FinetuneConfig(max_steps=7).resolve(10_000).max_steps == 7
    assert IGNORE_INDEX == -100


def test_block_diagonal_packing_scores_each_example_as_if_it_were_alone(sp, tmp_path):
    """sft.format.packing: block_diagonal. The validation loss of packed held-out examples is
    exactly the loss of each example run alone; causal packing lets later examples see earlier
    ones in their bin, so its loss differs."""
    from tasks.training.finetune import loss_alone, packed

    torch.manual_seed(0)
    model = Llama(tiny(vocab_size=sp.vocab_size()))
    answers = ["Two plus two is four.", "Four.", "It is four, of course.", "The sum is 4."]
    rows = [row(i, 1 + i % 2, answer=answers[i % 4]) for i in range(8)]
    rows += [row(50 + i, 1, "heldout", answer=answers[i % 4]) for i in range(6)]
    df = dialogue_frame(tokenize_rows(rows, sp, MaskStrategy.ALL_ASSISTANT, 128)[0], "sft_examples")
    train_df, val_df = (df.filter(pl.col("split") == s) for s in ("train", "heldout"))
    bins = packed(val_df, 128, 0, [], seed=0).stats["bins"]
    assert bins < val_df.height  # several examples share a bin

    # the exact loss: every held-out example alone, its target tokens summed
    total = count = 0.0
    with torch.no_grad():
        for tokens, labels in zip(val_df["tokens"].to_list(), val_df["labels"].to_list()):
            logits, _ = model(torch.tensor([tokens[:-1]]))
            target = torch.tensor(labels[1:])
            keep = target != IGNORE_INDEX
            total += float(F.cross_entropy(logits[0][keep], target[keep], reduction="sum"))
            count += float(keep.sum())
    alone = total / count

    def val_loss(block_diagonal):
        logger = InMemoryLogger()
        cfg = FinetuneConfig(
            max_steps=1,
            train={
                "batch_size": bins,  # one window per bin: the validation windows are the bins
                "seq_len": 128,
                "lr": 1e-12,
                "threads": 1,
                "eval_every": 1,
                "eval_batches": 1,
            },
        )
        finetune(
            copy.deepcopy(model).train(),
            train_df,
            val_df,
            cfg,
            pad_id=0,
            separator=[],
            logger=logger,
            out_dir=tmp_path / f"bd{block_diagonal}",
            block_diagonal=block_diagonal,
        )
        return logger.metrics["val_loss"][-1][1]

    got = loss_alone(model, val_df, 128, batch_size=2)  # what the SFT step logs
    assert got["heldout_loss_alone"] == pytest.approx(alone, rel=1e-4)
    assert got["heldout_target_tokens"] == count
    assert val_loss(True) == pytest.approx(alone, rel=1e-4)
    assert abs(val_loss(False) - alone) > 1e-3
