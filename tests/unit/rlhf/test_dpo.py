"""DPO (models/dpo.py, tasks/rlhf/dpo.py): the loss by hand, log 2 where policy = reference,
the response-only log-probs, and a toy preference task through the shared training loop where
the chosen responses' log-probability ratio rises and the rejected ones' falls."""

import math

import numpy as np
import pytest
import torch

from models.dpo import DpoPolicy, dpo_loss, response_logprobs, response_mask
from models.llama import Llama, tiny
from tasks.reward.data import EncodedPair
from tasks.rlhf.dpo import DpoBatches, DPOConfig, dpo_rows, dpo_train, reference_logprobs
from tasks.tracking import InMemoryLogger


def test_dpo_loss_by_hand_with_and_without_margin():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.0])
    rc, rr = torch.tensor([-3.5, -5.0]), torch.tensor([-3.5, -4.5])
    beta = 0.5
    # pair 0: 0.5 * ((-3 + 3.5) - (-4 + 3.5)) = 0.5; pair 1: 0.5 * (0 - 0.5) = -0.25
    want = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(0.25)))) / 2
    assert dpo_loss(pc, pr, rc, rr, beta).item() == pytest.approx(want, rel=1e-6)
    m = torch.tensor([1.0, 0.0])
    want_m = (-math.log(1 / (1 + math.exp(0.5))) - math.log(1 / (1 + math.exp(0.25)))) / 2
    assert dpo_loss(pc, pr, rc, rr, beta, m).item() == pytest.approx(want_m, rel=1e-6)


def test_response_logprobs_count_only_response_tokens():
    torch.manual_seed(0)
    model = Llama(tiny(40)).eval()
    tokens = torch.tensor([[1, 5, 6, 10, 11, 2, 0, 0]])
    prompt, length = torch.tensor([3.0]), torch.tensor([6.0])
    mask = response_mask(tokens, prompt, length)
    assert mask.tolist() == [[False, False, False, True, True, True, False, False]]
    with torch.no_grad():
        logits, _ = model(tokens)
        logp = torch.log_softmax(logits, -1)
        want = sum(logp[0, t - 1, tokens[0, t]].item() for t in (3, 4, 5))
        got = response_logprobs(model, tokens, prompt, length)
    assert got.item() == pytest.approx(want, rel=1e-5)


def toy_pairs(n: int = 24) -> list[EncodedPair]:
    """Prompt "<s> q_i [/INST]", chosen "10 11 </s>", rejected "20 21 </s>": a preference a
    tiny model can learn."""
    pairs = []
    for i in range(n):
        prompt = [1, 30 + (i % 8), 3]
        pairs.append(
            EncodedPair(
                pair_id=f"p{i}",
                chosen=prompt + [10, 11, 2],
                rejected=prompt + [20, 21, 2],
                margin=0.0,
                chosen_safe=-1,
                rejected_safe=-1,
                rating="better",
                kind="helpfulness",
                prompt_len=len(prompt),
            )
        )
    return pairs


def test_loss_is_log2_when_policy_equals_reference():
    torch.manual_seed(0)
    reference = Llama(tiny(40)).eval()
    pairs = toy_pairs(4)
    ref_c, ref_r = reference_logprobs(reference, pairs, 8, 0)
    x, y = DpoBatches(pairs, ref_c, ref_r, 4, 8).batch(0)
    policy = DpoPolicy.from_llama(reference, beta=0.1, use_margin=False).eval()
    with torch.no_grad():
        _, loss = policy(x, y)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    # a plain forward is still a Llama (generation and evaluation use it)
    logits, none = policy(x)
    assert none is None and logits.shape == (8, 8, 40)


def test_dpo_on_a_toy_preference_task_raises_the_chosen_log_ratio(tmp_path):
    torch.manual_seed(0)
    reference = Llama(tiny(40)).eval()
    pairs = toy_pairs()
    cfg = DPOConfig(
        beta=0.5,
        training={
            "epochs": 3,
            "warmup_ratio": 0.0,
            "train": {"lr": 3e-3, "batch_size": 8, "seq_len": 8, "log_every": 1, "threads": 2},
        },
    )
    logger = InMemoryLogger()
    policy, stats = dpo_train(reference, pairs, cfg, 0, logger, tmp_path / "dpo")
    assert stats["dpo.logratio_chosen"] > stats["dpo.logratio_rejected"]
    assert stats["dpo.reward_margin"] > 0.5 and stats["dpo.reward_accuracy"] == 1.0
    losses = [v for k, steps in logger.metrics.items() if k == "loss" for _, v in steps]
    assert losses[-1] < math.log(2) - 0.1  # from log 2 at the reference, down
    # the trained weights load into a plain Llama (checkpoints export as any policy)
    plain = Llama(reference.config)
    plain.load_state_dict(policy.state_dict())
    ref_c, _ = reference_logprobs(reference, pairs[:2], 8, 0)
    new_c, _ = reference_logprobs(plain, pairs[:2], 8, 0)
    assert np.all(new_c > ref_c)


def test_dpo_rows_keep_a_seeded_share_of_the_safety_pairs_and_every_helpfulness_pair():
    rows = [
        {"pair_id": f"{kind}{i}", "kind": kind, "split": split}
        for i in range(40)
        for kind, split in (("helpfulness", "train"), ("safety", "train"), ("safety", "test"))
    ]
    every = dpo_rows(rows, DPOConfig(), seed=1)
    assert len(every) == 80 and all(r["split"] == "train" for r in every)
    quarter = dpo_rows(rows, DPOConfig(safety_share=0.25), seed=1)
    safety = [r["pair_id"] for r in quarter if r["kind"] == "safety"]
    assert len(safety) == 10 and sum(r["kind"] == "helpfulness" for r in quarter) == 40
    assert [r["pair_id"] for r in quarter] == [r["pair_id"] for r in every if r in quarter]
    again = dpo_rows(rows, DPOConfig(safety_share=0.25), seed=1)
    other = dpo_rows(rows, DPOConfig(safety_share=0.25), seed=2)
    assert again == quarter and {r["pair_id"] for r in other} != {r["pair_id"] for r in quarter}
    assert len(dpo_rows(rows[:3], DPOConfig(safety_share=0.01), seed=1)) == 2  # keeps 1 of 1
    only_help = dpo_rows(rows, DPOConfig(kinds=["helpfulness"], safety_share=0.5), seed=1)
    assert {r["kind"] for r in only_help} == {"helpfulness"}
    with pytest.raises(ValueError):
        DPOConfig(safety_share=0)
