"""Model folders written by save_model_folder / write_model_folder: what load_model reads back,
and a write that fails half way (the fault injected on purpose) leaving the folder as it was."""

import pytest
import safetensors.torch
import torch

from models.llama import Llama, tiny
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.model_io import load_model, save_model_folder, write_model_folder


def _model(seed: int) -> Llama:
    torch.manual_seed(seed)
    return Llama(tiny())


def _same(a: Llama, b: Llama) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_state_dict_folder_loads_as_the_model_it_came_from(tmp_path):
    model = _model(1)
    folder = write_model_folder(
        tmp_path / "m", model.state_dict(), {"model": model.config.to_dict(), "note": "x"}
    )
    assert _same(load_model(folder), model)
    assert _same(load_model(save_model_folder(model, tmp_path / "n", {})), model)


def test_a_failed_weights_write_keeps_the_old_folder_and_leaves_no_partial(tmp_path, monkeypatch):
    old = _model(1)
    folder = save_model_folder(old, tmp_path / "m", {})
    real = safetensors.torch.save_file

    def half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 64)  # a torn file, had it been written in place
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_model_folder(_model(2), folder, {})
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert _same(load_model(folder), old)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", MODEL_FILE]
