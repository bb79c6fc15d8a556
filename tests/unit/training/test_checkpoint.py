import json
import random
import shutil

import numpy as np
import pytest
import torch

from models.llama import Llama, tiny
from tasks.tracking import InMemoryLogger
from tasks.training.checkpoint import (
    LATEST,
    latest_checkpoint,
    load_weights,
    read_config,
    rng_state,
    save_weights,
    set_rng_state,
)
from tasks.training.data import TokenBatches
from tasks.training.loop import train
from tests.unit.training.train_worker import corpus, make_model, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(max_steps=8, checkpoint_every=4, keep_checkpoints=0)
    model = make_model()
    train(
        model,
        TokenBatches(corpus(), cfg.batch_size, cfg.seq_len, cfg.seed),
        cfg,
        InMemoryLogger(),
        out,
    )
    return out, model, cfg


def test_checkpoint_folder_layout_and_latest_pointer(trained):
    out, _, _ = trained
    ckpt = out / "checkpoints"
    assert (ckpt / LATEST).read_text() == "step-00000008"
    assert latest_checkpoint(ckpt) == ckpt / "step-00000008"
    names = {p.name for p in (ckpt / "step-00000008").iterdir()}
    assert names == {
        "model.safetensors",
        "optimizer.pt",
        "rng-rank0.pt",
        "config.json",
        "trainer_state.json",
    }
    assert not list(ckpt.glob(".tmp-*"))
    assert json.loads((ckpt / "step-00000004" / "trainer_state.json").read_text())["step"] == 4


def test_every_torch_file_loads_with_weights_only(trained):
    folder = latest_checkpoint(trained[0] / "checkpoints")
    for path in folder.glob("*.pt"):
        torch.load(path, weights_only=True)  # raises on any pickled code object
    state = torch.load(folder / "optimizer.pt", weights_only=True)
    assert set(state) == {"optimizer", "scheduler"} and state["scheduler"]["last_epoch"] == 8


def test_weights_and_config_round_trip(trained):
    out, model, cfg = trained
    folder = latest_checkpoint(out / "checkpoints")
    config = read_config(folder)
    assert config["train"] == cfg.model_dump(mode="json")
    fresh = Llama(
        tiny(vocab_size=config["model"]["vocab_size"])
    )  # architecture from the checkpoint
    load_weights(fresh, folder / "model.safetensors")
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name


def test_keep_checkpoints_prunes_old_folders(tmp_path):
    cfg = tiny_config(max_steps=6, checkpoint_every=1, keep_checkpoints=2, eval_every=0)
    train(
        make_model(),
        TokenBatches(corpus(), cfg.batch_size, cfg.seq_len, cfg.seed),
        cfg,
        InMemoryLogger(),
        tmp_path,
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == [
        "step-00000005",
        "step-00000006",
    ]


def test_tied_embeddings_saved_once_and_reshared(tmp_path):
    cfg = tiny()
    cfg.tie_embeddings = True
    model = Llama(cfg)
    save_weights(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file

    assert "output.weight" not in load_file(tmp_path / "m.safetensors")
    fresh = Llama(cfg)
    load_weights(fresh, tmp_path / "m.safetensors")
    assert torch.equal(fresh.output.weight, model.tok_embeddings.weight)
    assert fresh.output.weight is fresh.tok_embeddings.weight


def test_mismatched_weights_are_a_clear_error(tmp_path):
    save_weights(Llama(tiny()), tmp_path / "m.safetensors")
    bigger = tiny()
    bigger.n_layers = 3
    with pytest.raises(ValueError, match="missing"):
        load_weights(Llama(bigger), tmp_path / "m.safetensors")


def test_rng_state_round_trips_through_weights_only(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_a_stale_temp_folder_from_a_killed_save_is_ignored_and_cleaned(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[0], out)
    ckpt = out / "checkpoints"
    stale = ckpt / ".tmp-step-00000012"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a file")
    assert latest_checkpoint(ckpt).name == "step-00000008"
    cfg = tiny_config(max_steps=12, checkpoint_every=4, keep_checkpoints=0)
    stats = train(
        make_model(),
        TokenBatches(corpus(), cfg.batch_size, cfg.seq_len, cfg.seed),
        cfg,
        InMemoryLogger(),
        out,
    )
    assert stats["start_step"] == 8 and latest_checkpoint(ckpt).name == "step-00000012"
    assert not stale.exists()
