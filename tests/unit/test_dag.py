import ast
from pathlib import Path

import pytest

from flows.dag import EDGES, STAGES, UnknownTaskError, expand_reruns


def test_rerunning_a_task_forces_its_descendants_only():
    forced = expand_reruns(["corpus.quality"])
    assert {
        "corpus.quality",
        "corpus.exact_dedup",
        "corpus.near_dedup",
        "corpus.weights",
        "corpus.toxicity",
        "tokenizer.train_tokenizer",
    } <= forced
    assert "corpus.ingest" not in forced and "corpus.pii" not in forced


def test_rerunning_a_stage_forces_all_its_tasks_and_downstream_stages():
    forced = expand_reruns(["tokenizer"])
    assert forced == {
        "tokenizer.train_tokenizer",
        "tokenizer.evaluate_tokenizer",
        "pretrain.token_shards",
        "pretrain.train_model",
        "sft.tokenize",
        "sft.train_base",
        "sft.gatt_data",
        "sft.train_gatt",
        "sft.evaluate",
        "sft.register",
        *(n for n in EDGES if n.startswith(("reward.", "rlhf.", "distill."))),
        "evaluate.evaluate_version",
        "evaluate.summarize",
    }
    # SFT's dialogue sources and curation, and the evaluation prompts drawn from them, do not
    # read the corpus: they stay cached
    assert not {"sft.collect_dialogues", "sft.curate", "evaluate.eval_prompts"} & forced
    assert {n for n in EDGES if n.startswith("corpus.")} <= expand_reruns(["corpus"])


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownTaskError, match="corpus.quality"):
        expand_reruns(["corpus.qualty"])


def test_graph_names_match_the_prefect_task_names():
    """Every task in the graph exists as @task(name=...) in its stage's steps module, or is the
    shared registration task (tasks/register.py) that the stage's flow runs under that name."""
    root = Path(__file__).resolve().parents[2]
    declared = set()
    for stage, name in (("sft", "register"), ("distill", "register"), ("rlhf", "register_round")):
        flow_source = (root / "flows" / f"{stage}.py").read_text()
        assert "from tasks.register import register_step" in flow_source
        declared.add(f"{stage}.{name}")
    for stage in STAGES:
        trees = [ast.parse(f.read_text()) for f in sorted((root / "tasks" / stage).glob("*.py"))]
        for node in (n for tree in trees for n in ast.walk(tree)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "cached_task":
                declared.add(f"{stage}.{node.args[0].value}")
    assert declared == set(EDGES)


def test_forcing_one_rlhf_task_reaches_every_later_task_of_the_rounds():
    """Round r reads round r-1's policy, so the rounds' graph has cycles; forcing PPO must still
    reach the next round's refresh and rejection sampling, and stop there."""
    forced = expand_reruns(["rlhf.ppo"])
    assert {
        "rlhf.refresh_reward_models",
        "rlhf.rejection_sample",
        "rlhf.rs_finetune",
        "rlhf.register_round",
        "rlhf.evaluate_rounds",
    } <= forced
    assert not {n for n in forced if not n.startswith(("rlhf.", "distill.", "evaluate."))}


def test_evaluation_prompts_follow_the_curated_dialogues_and_force_every_version():
    assert expand_reruns(["evaluate.eval_prompts"]) == {
        "evaluate.eval_prompts",
        "evaluate.evaluate_version",
        "evaluate.summarize",
    }
    assert "evaluate.eval_prompts" in expand_reruns(["sft.curate"])
