"""SLOW (about a minute): the launcher for distributed steps, for real under torchrun with two
gloo ranks on CPU: rank 0's result comes back and the ranks' output streams into the log; a
failing rank fails the step with its own error and no rank hangs; and a reward model trained
on two ranks with the same global batch ends with the weights of the one-process run."""

import os
import time
import uuid
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tasks.distributed.launch import LaunchConfig, RankFailed, run_ranks
from tasks.io import write_dataset
from tasks.judges.annotator import RuleAnnotator, RuleAnnotatorConfig
from tasks.judges.toxicity import ProfanityCheckScorer
from tasks.preferences.collect import annotate
from tasks.records import dialogue_frame
from tasks.reward.config import RewardModelConfig
from tasks.reward.steps import PAIRS, train_reward_model
from tasks.tracking import tracking_uri
from tasks.training.checkpoint import load_weights
from tasks.training.model_io import save_model_folder
from tests.unit.reward.test_data import sp  # noqa: F401 - the small tokenizer fixture
from tests.unit.reward.test_people import sampled

pytestmark = pytest.mark.slow
TWO = LaunchConfig(launcher="torchrun", nproc=2)


def test_rank0_result_comes_back_and_output_is_streamed(tmp_path):
    lines = []
    got = run_ranks(
        "tests.unit.distributed.rank_work:ranks_sum", {"value": 10}, TWO, tmp_path, lines.append
    )
    assert got["world"] == 2 and got["rank"] == 0
    assert got["sum"] == (0 + 10) + (1 + 10)
    assert any("rank 1 of 2: sum 21.0" in line for line in lines)  # rank 1's print reached us


def test_a_failing_rank_fails_the_step_with_its_error_and_nothing_hangs(tmp_path):
    started = time.monotonic()
    with pytest.raises(
        RankFailed, match=r"rank 1 of 2 failed .*ValueError: rank 1 found a broken shard"
    ):
        run_ranks(
            "tests.unit.distributed.rank_work:one_rank_fails",
            {"bad_rank": 1},
            TWO,
            tmp_path,
            lambda _: None,
        )
    assert time.monotonic() - started < 120  # rank 0 was stopped, not left in its all_reduce


def _pairs_manifest(tmp_path):
    pairs = sampled(12, 8)
    annotator = RuleAnnotator(RuleAnnotatorConfig(), ProfanityCheckScorer())
    rows, _, _ = annotate(
        pairs,
        [f"The answer to {p['prompt_id']} is {i}." for i, p in enumerate(pairs)],
        [f"I do not know {i}." for i, _ in enumerate(pairs)],
        annotator,
        seed=3,
    )
    return write_dataset(dialogue_frame(rows, PAIRS), PAIRS, tmp_path / "data")


def _sft_folder(tmp_path, vocab: int) -> str:
    from models.llama import Llama, tiny

    torch.manual_seed(0)
    return str(save_model_folder(Llama(tiny(vocab)), tmp_path / "sft", {}))


def _train(tmp_path, name, sp_path, pairs, sft, batch_size, launch):
    run_dir = tmp_path / name
    client = MlflowClient(tracking_uri(run_dir))
    run = client.create_run(client.create_experiment(f"{name}-{uuid.uuid4().hex}"))
    cfg = RewardModelConfig(
        registered_model="test-rm",
        training={
            "max_steps": 4,
            "warmup_ratio": 0.0,
            "train": {
                "batch_size": batch_size,
                "seq_len": 96,
                "lr": 1e-3,
                "threads": 1,
                "log_every": 1,
                "checkpoint_every": 0,
                "eval_every": 0,
            },
            "launch": launch,
        },
    )
    stats, folder = train_reward_model(
        pairs, "helpfulness", cfg, sft, sp_path, 0.9, 1234, str(run_dir), run.info.run_id, "rm"
    )
    return stats, folder, run.info.run_id, client.get_run(run.info.run_id).data.params


def test_reward_model_on_two_ranks_matches_one_rank_with_the_same_global_batch(tmp_path, sp):  # noqa: F811
    pairs = _pairs_manifest(tmp_path)
    sft = _sft_folder(tmp_path, sp.vocab_size())
    one_stats, one_folder, one_run, one_params = _train(tmp_path, "one", sp.path, pairs, sft, 4, {})
    two_stats, two_folder, two_run, two_params = _train(
        tmp_path, "two", sp.path, pairs, sft, 2, {"launcher": "torchrun", "nproc": 2}
    )
    assert one_stats["rm.steps"] == two_stats["rm.steps"] == 4
    assert two_stats["rm.train_loss"] == pytest.approx(one_stats["rm.train_loss"], rel=1e-4)
    # the same global batch: the step-by-step loss curves logged to MLflow agree
    histories = [
        [
            m.value
            for m in MlflowClient(tracking_uri(tmp_path / name)).get_metric_history(run, "rm/loss")
        ]
        for name, run in (("one", one_run), ("two", two_run))
    ]
    assert len(histories[0]) == 4
    assert histories[1] == pytest.approx(histories[0], rel=1e-4)
    assert two_params["rm/world_size"] == "2" and one_params["rm/world_size"] == "1"
    from models.llama import tiny
    from models.reward import RewardModel

    a, b = RewardModel(tiny(sp.vocab_size())), RewardModel(tiny(sp.vocab_size()))
    load_weights(a, Path(one_folder) / "model.safetensors")
    load_weights(b, Path(two_folder) / "model.safetensors")
    # atol 1e-5: the pairwise loss gives score_head.bias no gradient (it cancels between chosen
    # and rejected), so that ~1e-6 parameter moves by rounding alone, and on a CPU with AMX its
    # two-rank and one-rank values differed by 1.5e-6; the weights themselves are ~0.07 in size
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def _examples_manifest(tmp_path, sp, n=60):  # noqa: F811
    """sft_examples of varying length (so the ranks hold different numbers of target tokens)."""
    import polars as pl

    from tasks.chat.format import MaskStrategy, tokenize_dialogue

    rows = []
    for i in range(n):
        turns = [
            {"role": "user", "content": f"What is the capital of France? {i}"},
            {"role": "assistant", "content": "The capital of France is Paris. " * (1 + i % 4)},
        ]
        tokens, labels = tokenize_dialogue(sp, "", turns, MaskStrategy.LAST_TURN)
        rows.append(
            {
                "dialogue_id": f"d{i}",
                "source": "test",
                "category": "facts",
                "split": "heldout" if i % 10 == 0 else "train",
                "tokens": tokens,
                "labels": labels,
                "n_tokens": len(tokens),
                "n_targets": sum(t != -100 for t in labels),
            }
        )
    frame = pl.DataFrame(rows).with_columns(
        pl.col("tokens").cast(pl.List(pl.Int32)), pl.col("labels").cast(pl.List(pl.Int32))
    )
    return write_dataset(frame, "sft_examples", tmp_path / "data")


def test_sft_on_two_ranks_matches_one_rank_with_the_same_global_batch(tmp_path, sp):  # noqa: F811
    from tasks.sft.config import SftConfig
    from tasks.sft.steps import _finetune
    from tasks.training.finetune import FinetuneConfig

    examples = _examples_manifest(tmp_path, sp)
    init = _sft_folder(tmp_path, sp.vocab_size())
    results = {}
    for name, batch, launch in (("one", 4, {}), ("two", 2, {"launcher": "torchrun", "nproc": 2})):
        run_dir = tmp_path / name
        client = MlflowClient(tracking_uri(run_dir))
        run = client.create_run(client.create_experiment(f"{name}-{uuid.uuid4().hex}"))
        ft = FinetuneConfig(
            epochs=1,
            max_steps=4,
            warmup_ratio=0.0,
            train={
                "batch_size": batch,
                "seq_len": 64,
                "lr": 1e-3,
                "threads": 1,
                "log_every": 1,
                "eval_every": 2,
                "eval_batches": 2,
                "checkpoint_every": 0,
            },
            launch=launch,
        )
        stats, _, folder = _finetune(
            examples, init, ft, SftConfig(), sp.path, str(run_dir), run.info.run_id, "base"
        )
        history = client.get_metric_history(run.info.run_id, "base/loss")
        results[name] = (stats, folder, [m.value for m in history])
    (one, one_dir, one_loss), (two, two_dir, two_loss) = results["one"], results["two"]
    assert len(one_loss) == 4
    # token-weighted across ranks: the global batch's mean over target tokens, as one rank has it
    assert two_loss == pytest.approx(one_loss, rel=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    from models.llama import Llama, tiny

    a, b = Llama(tiny(sp.vocab_size())), Llama(tiny(sp.vocab_size()))
    load_weights(a, Path(one_dir) / "model.safetensors")
    load_weights(b, Path(two_dir) / "model.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def test_rejection_sampling_finetune_on_two_ranks_matches_one_rank(tmp_path, sp):  # noqa: F811
    """`finetune_on` (rejection-sampling and distillation fine-tuning) launched on two ranks:
    the same losses and weights as one rank at the same global batch."""
    from tasks.chat.config import FormatConfig
    from tasks.io import read_dataset
    from tasks.training.finetune import FinetuneConfig, finetune_on

    examples = read_dataset(_examples_manifest(tmp_path, sp)).select("tokens", "labels")
    init = _sft_folder(tmp_path, sp.vocab_size())
    got = {}
    for name, batch, launch in (("one", 4, {}), ("two", 2, {"launcher": "torchrun", "nproc": 2})):
        run_dir = tmp_path / name
        client = MlflowClient(tracking_uri(run_dir))
        run = client.create_run(client.create_experiment(f"{name}-{uuid.uuid4().hex}"))
        ft = FinetuneConfig(
            epochs=1,
            max_steps=3,
            warmup_ratio=0.0,
            train={
                "batch_size": batch,
                "seq_len": 64,
                "lr": 1e-3,
                "threads": 1,
                "log_every": 1,
                "eval_every": 0,
                "checkpoint_every": 0,
            },
            launch=launch,
        )
        from tasks.tracking import PrefixedLogger, attach_run

        logger = PrefixedLogger(attach_run(run_dir, run.info.run_id), "rs_finetune/")
        stats, folder = finetune_on(
            examples,
            init,
            ft,
            FormatConfig(),
            sp,
            run_dir / "out",
            logger,
            tracking=(str(run_dir), run.info.run_id, "rs_finetune/"),
        )
        history = client.get_metric_history(run.info.run_id, "rs_finetune/loss")
        got[name] = (stats, folder, [m.value for m in history])
    assert len(got["one"][2]) == 3
    assert got["two"][2] == pytest.approx(got["one"][2], rel=1e-4)
    from models.llama import Llama, tiny

    a, b = Llama(tiny(sp.vocab_size())), Llama(tiny(sp.vocab_size()))
    load_weights(a, Path(got["one"][1]) / "model.safetensors")
    load_weights(b, Path(got["two"][1]) / "model.safetensors")
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=n)


def test_dpo_on_two_ranks_matches_one_rank(tmp_path, sp):  # noqa: F811
    """A DPO round step on two ranks: the same step losses, implicit-reward metrics and weights
    as one rank at the same global batch (the reference log-probs are computed on every rank)."""
    from tasks.rlhf.dpo import DPOConfig
    from tasks.rlhf.dpo_steps import dpo_round

    pairs = _pairs_manifest(tmp_path)
    start = _sft_folder(tmp_path, sp.vocab_size())
    got = {}
    for name, batch, launch in (("one", 4, {}), ("two", 2, {"launcher": "torchrun", "nproc": 2})):
        run_dir = tmp_path / name
        client = MlflowClient(tracking_uri(run_dir))
        run = client.create_run(client.create_experiment(f"{name}-{uuid.uuid4().hex}"))
        dpo = DPOConfig(
            beta=0.2,
            training={
                "max_steps": 3,
                "warmup_ratio": 0.0,
                "train": {
                    "batch_size": batch,
                    "seq_len": 96,
                    "lr": 1e-3,
                    "threads": 1,
                    "log_every": 1,
                    "eval_every": 0,
                    "checkpoint_every": 0,
                },
                "launch": launch,
            },
        )
        args = dict(
            round_=3,
            start_dir=start,
            pairs=pairs,
            tokenizer_model=sp.path,
            dpo=dpo,
            run_dir=str(run_dir),
            mlflow_run_id=run.info.run_id,
            out_dir=str(run_dir / "dpo"),
        )
        if launch:
            args.update(pairs=pairs.model_dump(mode="json"), dpo=dpo.model_dump(mode="json"))
            stats, folder, n = run_ranks(
                "tasks.rlhf.dpo_steps:dpo_round", args, dpo.training.launch, run_dir / "launch"
            )
        else:
            stats, folder, n = dpo_round(**args)
        history = client.get_metric_history(run.info.run_id, "v3_dpo/loss")
        got[name] = (stats, folder, [m.value for m in history])
    (one, one_dir, one_loss), (two, two_dir, two_loss) = got["one"], got["two"]
    assert len(one_loss) == 3 and two_loss == pytest.approx(one_loss, rel=1e-4)
    for key in ("dpo.reward_margin", "dpo.reward_accuracy", "dpo.logratio_chosen"):
        assert two[key] == pytest.approx(one[key], rel=1e-3, abs=1e-6), key
    from tasks.training.model_io import load_model

    a, b = load_model(Path(one_dir)).state_dict(), load_model(Path(two_dir)).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_a_one_process_group_does_not_make_later_steps_think_they_are_ranks():
    """A step that forms a group of one in the task's process (the DeepSpeed engine, sharded
    answering with one rank) must leave RANK unset: a later step of that process configured for
    2 ranks would otherwise run in-process, on half its global batch, without a word."""
    import subprocess
    import sys

    code = (
        "import os\n"
        "from tasks.training.engines import init_distributed\n"
        "from tasks.distributed.launch import LaunchConfig, start_ranks_here\n"
        "print(init_distributed())\n"
        "print('RANK' in os.environ, 'WORLD_SIZE' in os.environ)\n"
        "print(start_ranks_here(LaunchConfig(launcher='torchrun', nproc=2)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(0,", "1)", "False", "False", "True"]
