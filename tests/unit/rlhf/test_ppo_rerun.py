"""`--rerun rlhf.ppo` trains PPO again into a fresh folder and keeps the previous model aside
(tasks/training/rerun.py), as the other training tasks do. A real Prefect task run of ppo_step on
tiny models (one iteration), a real MLflow run; only the sizes are small."""

import dataclasses
import json
import logging
from pathlib import Path

import torch
from prefect import flow

from models.llama import Llama, tiny
from models.reward import RewardModel
from tasks.judges.annotator import RuleAnnotatorConfig
from tasks.judges.toxicity import ToxicityConfig
from tasks.rlhf.ppo import PPOConfig
from tasks.rlhf.ppo_steps import ppo_step
from tasks.tracking import open_run
from tasks.training.model_io import HEAD_FILE, save_model_folder
from tasks.training.rerun import SET_ASIDE

torch.set_num_threads(1)


def prompt(i: int, safety: bool) -> dict:
    return {
        "prompt_id": f"p{i}",
        "system": "",
        "is_safety": safety,
        "category": "open_qa",
        "risk_category": "violence" if safety else None,
        "reference": None,
        "source": "test",
        "turns": [{"role": "user", "content": "What is the capital of France?"}],
    }


def ppo_inputs(tmp_path, sp) -> dict:
    tokenizer = tmp_path / "tok.model"
    tokenizer.write_bytes(sp.processor.serialized_model_proto())
    cfg = dataclasses.replace(tiny(vocab_size=sp.vocab_size()), max_seq_len=64)
    torch.manual_seed(0)
    start = save_model_folder(Llama(cfg), tmp_path / "start", {})
    rms = {}
    for kind in ("helpfulness", "safety"):
        rms[kind] = str(save_model_folder(RewardModel(cfg), tmp_path / f"rm-{kind}", {}))
        (tmp_path / f"rm-{kind}" / HEAD_FILE).write_text(json.dumps({"head": "reward", "rm": kind}))
    run = open_run(tmp_path, "test", "rlhf", {"stage": "rlhf"})
    return dict(
        round_=1,
        start_dir=str(start),
        rms=rms,
        prompts=[prompt(i, i % 2 == 1) for i in range(4)],
        validation=[prompt(9, False)],
        tokenizer_model=str(tokenizer),
        rm_seq_len=64,
        annotator_cfg=RuleAnnotatorConfig(),
        toxicity=ToxicityConfig(),
        seed=0,
        ppo=PPOConfig(
            iterations=1, batch_size=2, minibatch_size=2, max_new_tokens=4, lr=1e-3, threads=1
        ),
        run_dir=str(tmp_path),
        mlflow_run_id=run.run_id,
    )


@flow
def run_ppo(inputs: dict, forced: bool):
    return (ppo_step.with_options(refresh_cache=True) if forced else ppo_step)(**inputs)


def test_a_forced_ppo_run_trains_again_and_sets_the_old_model_aside(tmp_path, sp, caplog):
    inputs = ppo_inputs(tmp_path, sp)
    first = run_ppo(inputs, forced=False)
    model_dir = Path(first.models["model"])
    old_files = sorted(p.name for p in model_dir.iterdir())
    with caplog.at_level(logging.INFO):
        forced = run_ppo(inputs, forced=True)
    assert Path(forced.models["model"]) == model_dir  # same inputs, same folder
    assert sorted(p.name for p in model_dir.iterdir()) == old_files  # trained and saved again
    # without set_aside_if_forced the forced run overwrote the old model in place
    (aside,) = model_dir.parent.parent.glob(f"v1-ppo-*{SET_ASIDE}*")
    assert aside.name.startswith(model_dir.parent.name)
    assert sorted(p.name for p in (aside / "model").iterdir()) == old_files  # the old model, kept
    assert "forced re-run (--rerun)" in caplog.text and aside.name in caplog.text
