"""SLOW (about 1-2 minutes): rejection sampling and safety context distillation answer on two
gloo ranks (`rlhf.rejection.launch`, `distill.launch`; tasks/chat/sharded.py) and write the
datasets a one-process run writes: every sampled answer, score, ended flag and best mark (the
rejection samples, sampled at temperature 1), every greedy answer with and without the
preprompt and the keep decision (distillation), row for row. Real Prefect task runs in a flow,
real tiny models and reward models; each is launched once."""

import dataclasses

import pytest
import torch
from prefect import flow

from models.llama import Llama, tiny
from tasks.distill.config import DistillConfig
from tasks.distill.steps import SAMPLES as DISTILL_SAMPLES
from tasks.distill.steps import distill_data_step
from tasks.distributed.launch import LaunchConfig
from tasks.io import read_dataset, write_dataset
from tasks.records import dialogue_frame
from tasks.rlhf.config import RejectionConfig
from tasks.rlhf.steps import SAMPLES as RS_SAMPLES
from tasks.rlhf.steps import rejection_sample_step
from tasks.training.model_io import save_model_folder
from tests.unit.preferences.test_collect import DIALOGUES
from tests.unit.reward.test_data import sp  # noqa: F401 - the small tokenizer fixture
from tests.unit.rlhf.test_ppo_rerun import ppo_inputs, prompt


def rs_prompt(i: int) -> dict:
    safety = i % 2 == 1
    return prompt(i, safety) | {
        "risk_category": "illicit_criminal" if safety else None,
        "turns": [{"role": "user", "content": f"What is {i} plus 40?"}],
    }


pytestmark = pytest.mark.slow
TWO = LaunchConfig(launcher="torchrun", nproc=2)


@flow
def rejection_flow(inputs: dict, cfg: RejectionConfig, data_dir: str):
    return rejection_sample_step(
        1,
        inputs["start_dir"],
        inputs["rms"],
        [rs_prompt(i) for i in range(7)],
        [],
        inputs["tokenizer_model"],
        64,
        inputs["annotator_cfg"],
        cfg,
        4,
        11,
        data_dir,
        inputs["run_dir"],
    )


@flow
def distill_flow(inputs: dict, dialogues, cfg: DistillConfig, data_dir: str):
    return distill_data_step(
        dialogues,
        inputs["start_dir"],
        inputs["rms"]["safety"],
        inputs["tokenizer_model"],
        cfg,
        64,
        11,
        data_dir,
        inputs["run_dir"],
    )


def test_rejection_samples_from_two_ranks_are_those_of_one_process(tmp_path, sp):  # noqa: F811
    inputs = ppo_inputs(tmp_path, sp)
    cfg = RejectionConfig(k=3, max_new_tokens=6, batch_size=2, temperature=1.0)  # 4 batches of 2
    one = rejection_flow(inputs, cfg, str(tmp_path / "one"))
    two = rejection_flow(inputs, cfg.model_copy(update={"launch": TWO}), str(tmp_path / "two"))
    a, b = (read_dataset(x.outputs[RS_SAMPLES]) for x in (one, two))
    assert a.height == 7 * 3 and a["response"].n_unique() > 7  # sampled, not greedy copies
    assert b.equals(a)  # answers, R_h/R_s/R_c, ended, is_best: row for row, in order
    assert two.stats == one.stats


def test_distillation_answers_from_two_ranks_are_those_of_one_process(tmp_path, sp):  # noqa: F811
    inputs = ppo_inputs(tmp_path, sp)
    torch.manual_seed(0)  # a policy with room for the preprompts (the reward models take 64)
    wide = dataclasses.replace(tiny(vocab_size=sp.vocab_size()), max_seq_len=512)
    inputs["start_dir"] = str(save_model_folder(Llama(wide), tmp_path / "wide", {}))
    dialogues = write_dataset(dialogue_frame(DIALOGUES, "sft_dialogues"), "sft_dialogues", tmp_path)
    cfg = DistillConfig(prompts=9, max_new_tokens=6, batch_size=2)
    one = distill_flow(inputs, dialogues, cfg, str(tmp_path / "one"))
    two = distill_flow(
        inputs, dialogues, cfg.model_copy(update={"launch": TWO}), str(tmp_path / "two")
    )
    a, b = (read_dataset(x.outputs[DISTILL_SAMPLES]) for x in (one, two))
    assert a.height == 9
    assert b.equals(a)  # both answers, both scores, kept and reason, row for row
    assert two.stats == one.stats
