import ast
from pathlib import Path

import pytest

from flows.dag import (
    EDGES,
    ONLY_WITH_BASE,
    SKIPPED_WITH_BASE,
    STAGES,
    UnknownTaskError,
    expand_reruns,
    skipped_tasks,
)


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


# with `base_model` set: the import replaces the tokenizer stage and pretraining


def test_tasks_a_base_model_run_lacks_cannot_be_rerun():
    for name in ("tokenizer", "pretrain.train_model", "tokenizer.train_tokenizer"):
        with pytest.raises(UnknownTaskError) as err:
            expand_reruns([name], base_model=True)
        assert str(err.value).startswith(
            f"--rerun '{name}': this run has no such task (the config sets base_model); "
            f"skipped here: {list(SKIPPED_WITH_BASE)}"
        )
    with pytest.raises(UnknownTaskError, match=r"config sets no base_model\); skipped here"):
        expand_reruns(["pretrain.import_base"], base_model=False)
    # a stage that still has a task keeps it: `--rerun pretrain` forces the import
    assert "pretrain.import_base" in expand_reruns(["pretrain"], base_model=True)


def test_rerunning_the_import_forces_everything_that_reads_the_base_model():
    forced = expand_reruns(["pretrain.import_base"], base_model=True)
    assert forced == {
        "pretrain.import_base",
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
    # the corpus is measured but not read by the import; dialogue curation reads no model
    assert not {n for n in forced if n.startswith(("corpus.", "tokenizer."))}
    assert not {"sft.collect_dialogues", "sft.curate", "evaluate.eval_prompts"} & forced
    assert expand_reruns(["pretrain.import_base"]) == forced  # the graph alone says the same


def test_every_reader_of_the_tokenizer_or_pretrained_model_also_reads_the_import():
    """With a base model the import hands the tokenizer and model to the same tasks that read
    them from the tokenizer stage and pretraining otherwise (flows/pipeline.py passes
    pretrain.tokenizer_model and pretrain.model_dir either way): the graph must say so, or
    `--rerun pretrain.import_base` would leave a task cached on the old base."""
    produced = {"tokenizer.train_tokenizer", "pretrain.train_model"}
    assert set(SKIPPED_WITH_BASE) | set(ONLY_WITH_BASE) <= set(EDGES)
    assert EDGES["pretrain.import_base"] == ()  # it reads files outside the graph only
    readers = {
        name
        for name, parents in EDGES.items()
        if name not in SKIPPED_WITH_BASE and set(parents) & produced
    }
    assert readers == {
        "sft.tokenize",
        "sft.train_base",
        "reward.collect_preferences",
        "reward.queue_for_people",  # samples from the pretrained model like collect_preferences
        "evaluate.evaluate_version",
    }
    for name in readers:
        assert "pretrain.import_base" in EDGES[name], name
    assert skipped_tasks(True) == SKIPPED_WITH_BASE and skipped_tasks(False) == ONLY_WITH_BASE


@pytest.fixture(scope="module")
def gguf_base(tmp_path_factory):
    from tests.helpers.base_checkpoints import random_llama, train_bpe, write_gguf

    tok = train_bpe()
    path = tmp_path_factory.mktemp("base") / "base.gguf"
    return write_gguf(random_llama(tok.get_vocab_size()), tok, path)


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--rerun", "tokenizer"], "--rerun 'tokenizer': this run has no such task"),
        (["--rerun", "pretrain.train_model"], "--rerun 'pretrain.train_model': this run has"),
        (["--stage", "tokenizer"], "sets base_model: there is no tokenizer stage to run"),
    ],
)
def test_the_cli_refuses_what_a_base_model_run_lacks(gguf_base, capsys, extra, expected):
    from flows.__main__ import main

    argv = ["run", "--preset", "tiny", "--set", "base_model.format=gguf"]
    assert main([*argv, "--set", f"base_model.path={gguf_base}", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err


def test_the_cli_refuses_rerunning_the_import_without_a_base_model(capsys):
    from flows.__main__ import main

    assert main(["run", "--preset", "tiny", "--rerun", "pretrain.import_base"]) == 2
    assert "(the config sets no base_model)" in capsys.readouterr().err
