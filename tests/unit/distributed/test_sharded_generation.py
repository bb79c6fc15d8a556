"""SLOW (about a minute): answering on N ranks (tasks/chat/sharded.py) gives the answers of one
process. Whole generation batches of the one-process order go to the ranks, so greedy answers
(and sampled ones: the generator is seeded per batch) are identical, in input order, with the
contexts that do not fit left None; and the preference collection's sampled responses are the
same from one launch of 2 gloo ranks as from one process."""

import json

import pytest
import torch

from models.llama import Llama, tiny
from tasks.chat.answer import make_answer_status_fn
from tasks.chat.sharded import (
    AnswerJob,
    _answer_units,
    answer_jobs,
    assemble,
    plan_units,
    sharded_answers,
)
from tasks.distributed.launch import LaunchConfig
from tasks.preferences.collect import CollectionConfig, PrimedConfig
from tasks.reward.collection import sample_batches
from tasks.training.model_io import load_model, save_model_folder
from tests.unit.preferences.test_collect import DIALOGUES
from tests.unit.reward.test_data import sp  # noqa: F401 - the small tokenizer fixture

pytestmark = pytest.mark.slow
TWO = LaunchConfig(launcher="torchrun", nproc=2)
NONE = LaunchConfig()
BATCH = 3  # 10 contexts that fit -> batches of 3, 3, 3, 1: two per rank, of unequal widths


def _model_folder(tmp_path, name: str, vocab: int, seed: int) -> str:
    torch.manual_seed(seed)
    return str(save_model_folder(Llama(tiny(vocab)), tmp_path / name, {}))  # max_seq_len 128


def _contexts() -> list[tuple[str, list[dict]]]:
    words = "the quick brown fox jumps over the lazy dog while the farmer sleeps".split()
    contexts = [
        ("", [{"role": "user", "content": " ".join(words[: 1 + (i * 5) % 12])}]) for i in range(10)
    ]
    contexts.insert(4, ("", [{"role": "user", "content": " ".join(["word"] * 200)}]))  # too long
    contexts[7] = ("Be brief.", contexts[7][1])  # a system prompt: a longer prompt in its batch
    return contexts


def test_ranks_in_any_number_answer_like_one_process_in_process(tmp_path, sp):  # noqa: F811
    """The sharding itself, without a launcher: 3 simulated ranks' batches put back together."""
    folder = _model_folder(tmp_path, "m", sp.vocab_size(), 0)
    contexts = _contexts()
    one = make_answer_status_fn(load_model(folder), sp, 12, 0.0, 1.0, BATCH)(contexts, 5)
    job = AnswerJob(
        model_dir=folder,
        contexts=contexts,
        max_new_tokens=12,
        temperature=0.0,
        top_p=1.0,
        seed=5,
        batch_size=BATCH,
    )
    units = plan_units([job], sp)
    assert [start for _, start, _ in units] == [0, 3, 6, 9]
    assert 4 not in {i for _, _, indices in units for i in indices}  # did not fit: no batch
    answered = [
        u
        for r in (2, 0, 1)  # shards arrive in any order
        for u in _answer_units([job], units[r::3], sp, torch.device("cpu"))
    ]
    got = assemble([job], units, answered)[0]
    assert (got["answers"], got["ended"]) == one
    with pytest.raises(AssertionError, match="not the planned"):
        assemble([job], units, answered[1:])  # a lost batch is never silently None


def test_greedy_and_sampled_answers_on_two_ranks_are_those_of_one_process(tmp_path, sp):  # noqa: F811
    folder = _model_folder(tmp_path, "m", sp.vocab_size(), 0)
    contexts = _contexts()
    jobs = [
        AnswerJob(
            model_dir=folder,
            contexts=contexts,
            max_new_tokens=12,
            temperature=t,
            top_p=0.9,
            seed=5,
            batch_size=BATCH,
        )
        for t in (0.0, 1.0)
    ]
    one = answer_jobs(jobs, sp.path, NONE, tmp_path / "one")
    lines = []
    two = answer_jobs(jobs, sp.path, TWO, tmp_path / "two", lines.append)
    for (texts, ended), (two_texts, two_ended) in zip(one, two):
        assert two_texts == texts and two_ended == ended  # exact strings and flags, in order
        assert texts[4] is None and ended[4] is None  # too long for the window
        assert all(isinstance(t, str) for i, t in enumerate(texts) if i != 4)
    assert one[0][0] != one[1][0]  # the sampled job is not the greedy one again
    # 2 batches per rank for each job; each rank's shard on disk; the ranks' logs streamed
    shards = [json.loads((tmp_path / "two" / f"answers-rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(len(s) for s in shards) == [4, 4]
    assert {(u["job"], u["start"]) for s in shards for u in s} == {
        (j, s) for j in (0, 1) for s in (0, 3, 6, 9)
    }
    assert any("rank 1 of 2: 4 of 8 generation batches" in line for line in lines)
    # the one-job form, without a launcher: the same greedy answers
    assert sharded_answers(
        folder, sp.path, contexts, 12, 0.0, 0.9, 5, NONE, tmp_path / "x", batch_size=BATCH
    ) == tuple(one[0])


def _two_models(tmp_path, tokenizer):
    """The two collection variants, two differently initialised tiny models."""
    return {
        "sft": _model_folder(tmp_path, "sft", tokenizer.vocab_size(), 1),
        "base": _model_folder(tmp_path, "base", tokenizer.vocab_size(), 2),
    }


def _collection(**fields) -> CollectionConfig:
    """Two variants, a greedy and a sampled group, 8 new tokens; `fields` set the rest."""
    return CollectionConfig(
        variants=["sft", "base"], temperatures=[0.0, 1.0], max_new_tokens=8, **fields
    )


def _one_process_and_two_ranks(models, tokenizer, cfg, log=lambda _: None):
    """sample_batches' pairs in this process, and again on two ranks (the ranks' log to `log`)."""
    one = sample_batches(DIALOGUES, models, tokenizer.path, cfg, seed=3, log=lambda _: None)
    two = sample_batches(
        DIALOGUES, models, tokenizer.path, cfg.model_copy(update={"launch": TWO}), seed=3, log=log
    )
    return one, two


def test_preference_sampling_on_two_ranks_gives_the_same_responses(tmp_path, sp):  # noqa: F811
    models = _two_models(tmp_path, sp)
    cfg = _collection(batches=2, helpfulness_prompts=5, safety_prompts=4)
    lines = []
    one, two = _one_process_and_two_ranks(models, sp, cfg, log=lines.append)
    assert len(one) == 18 and {p["batch"] for p in one} == {0, 1}
    assert all(isinstance(p["response_a"], str) and isinstance(p["response_b"], str) for p in one)
    assert two == one  # every planned field, response and ended flag, in order
    assert sum("launching tasks.chat.sharded:answer_shard" in line for line in lines) == 1


def test_primed_responses_start_with_their_text_on_one_process_and_two_ranks(tmp_path, sp):  # noqa: F811
    models = _two_models(tmp_path, sp)
    cfg = _collection(
        batches=1,
        helpfulness_prompts=3,
        safety_prompts=6,
        primed=PrimedConfig(variant="sft", text="Sure.", share=0.5),
    )
    one, two = _one_process_and_two_ranks(models, sp, cfg)
    primed = [p for p in one if p["variant_b"] == "sft_primed"]
    assert len(primed) == 3
    assert all(p["response_b"].startswith("Sure.") for p in primed)
    assert not any(p["response_b"].startswith("Sure.") for p in one if p not in primed)
    assert two == one
    with pytest.raises(ValueError, match=r"\['latest'\] have no model"):
        sample_batches(
            DIALOGUES,
            models,
            sp.path,
            cfg.model_copy(update={"primed": PrimedConfig(variant="latest")}),
            seed=3,
        )
