"""rounds.prompt_sets: the RLHF prompt sets, and what the gated reward scores borderline with."""

from __future__ import annotations

import numpy as np
import torch

from models.ppo import gated_reward
from tasks.rlhf.config import RlhfConfig
from tasks.rlhf.rounds import prompt_sets


def _dialogue(i: int, split: str, kind: str) -> dict:
    return {
        "dialogue_id": f"{kind}:{split}:{i}",
        "system": "",
        "turns": [
            {"role": "user", "content": f"{kind} {i}"},
            {"role": "assistant", "content": "a"},
        ],
        "is_safety": kind != "helpful",
        "category": kind,
        "risk_category": "illicit_criminal" if kind == "adversarial" else None,
        "source": kind,
        "reference": None,
        "split": split,
        "instruction": None,
    }


def _dialogues() -> list[dict]:
    return [
        _dialogue(i, split, kind)
        for split in ("train", "heldout")
        for kind in ("helpful", "adversarial", "borderline")
        for i in range(12)
    ]


def test_borderline_prompts_are_scored_by_the_helpfulness_rm_only_when_asked():
    counts = {"prompts": {"helpfulness": 4, "safety": 8}}
    cfg = RlhfConfig(rejection=counts, evaluation=counts)
    paper = prompt_sets(_dialogues(), cfg, seed=3)
    ours = prompt_sets(
        _dialogues(), cfg.model_copy(update={"borderline_reward": "helpfulness"}), seed=3
    )
    for name in ("rs", "ppo", "validation", "eval"):
        assert [p["prompt_id"] for p in ours[name]] == [p["prompt_id"] for p in paper[name]]
        for a, b in zip(paper[name], ours[name]):
            assert a["is_safety"] == (a["category"] != "helpful")  # the paper's tags as drawn
            assert b["is_safety"] == (b["category"] == "adversarial")  # borderline untagged
            assert {**b, "is_safety": a["is_safety"]} == a  # nothing else changes
    borderline = [p for p in ours["rs"] if p["category"] == "borderline"]
    assert borderline  # the draw has some, so the gate below is exercised
    r_h, r_s = torch.tensor([0.9, 0.9]), torch.tensor([0.3, 0.1])
    # untagged, R_c is R_h unless the Safety RM calls the answer unsafe (R_s < 0.15)
    untagged = torch.tensor([borderline[0]["is_safety"]] * 2)
    assert np.allclose(gated_reward(r_h, r_s, untagged).numpy(), [0.9, 0.1])
    tagged = torch.tensor([True, True])
    assert np.allclose(gated_reward(r_h, r_s, tagged).numpy(), [0.3, 0.1])


def _chitchat(i: int, split: str) -> dict:
    turns = [
        {"role": "user", "content": f"hello {split} {i}"},
        {"role": "assistant", "content": f"hi {split} {i}"},
        {"role": "user", "content": "and then?"},
        {"role": "assistant", "content": "then this."},
    ]
    return {
        **_dialogue(i, split, "helpful"),
        "dialogue_id": f"chat:{split}:{i}",
        "source": "chitchat",
        "category": "chitchat",
        "turns": turns,
    }


def test_multi_turn_share_asks_that_share_of_adversarial_prompts_after_a_train_opener():
    dialogues = _dialogues() + [_chitchat(i, s) for s in ("train", "heldout") for i in range(5)]
    counts = {"prompts": {"helpfulness": 4, "safety": 8}}
    small = counts["prompts"]
    cfg = RlhfConfig(
        rejection=counts, evaluation=counts, ppo_prompts=small, validation_prompts=small
    )
    plain = prompt_sets(dialogues, cfg, seed=3)
    openers = {
        d["dialogue_id"]: d
        for d in dialogues
        if d["split"] == "train" and d["source"] == "chitchat"
    }
    for share in (0.5, 1.0):
        mixed = prompt_sets(dialogues, cfg.model_copy(update={"multi_turn_share": share}), seed=3)
        assert mixed["eval"] == plain["eval"]  # held-out prompts stay first turns
        for name in ("rs", "ppo", "validation"):
            assert len(mixed[name]) == len(plain[name])
            adversarial = [p for p in plain[name] if p["category"] == "adversarial"]
            wrapped = 0
            for a, b in zip(plain[name], mixed[name]):
                if a == b:
                    continue
                wrapped += 1
                assert a["category"] == "adversarial"  # only adversarial prompts are wrapped
                opener_id, prompt_id = b["prompt_id"].split(">")
                assert prompt_id == a["prompt_id"] and opener_id in openers  # train openers only
                assert b["turns"] == [*openers[opener_id]["turns"][:2], *a["turns"]]
                assert {**b, "turns": a["turns"], "prompt_id": a["prompt_id"]} == a
            assert wrapped == round(share * len(adversarial)) > 0
    assert prompt_sets(
        dialogues, cfg.model_copy(update={"multi_turn_share": 0.5}), seed=3
    ) == prompt_sets(dialogues, cfg.model_copy(update={"multi_turn_share": 0.5}), seed=3)


def test_multi_turn_borderline_share_wraps_borderline_prompts_and_keeps_the_adversarial_draw():
    dialogues = _dialogues() + [_chitchat(i, s) for s in ("train", "heldout") for i in range(5)]
    small = {"helpfulness": 4, "safety": 8}
    cfg = RlhfConfig(
        rejection={"prompts": small},
        evaluation={"prompts": small},
        ppo_prompts=small,
        validation_prompts=small,
        multi_turn_share=0.5,
    )
    adversarial_only = prompt_sets(dialogues, cfg, seed=5)
    both = prompt_sets(
        dialogues, cfg.model_copy(update={"multi_turn_borderline_share": 1.0}), seed=5
    )
    for name in ("rs", "ppo", "validation"):
        for a, b in zip(adversarial_only[name], both[name]):
            if a["category"] == "borderline":
                assert b["prompt_id"].endswith(">" + a["prompt_id"]) and len(b["turns"]) == 3
                assert b["turns"][-1] == a["turns"][-1]
            else:  # the adversarial prompts are wrapped exactly as without the borderline share
                assert b == a
    assert both["eval"] == adversarial_only["eval"]
