"""Averaging round models (`rlhf.average_last`): the mean of the weights, tensor by tensor, in
each tensor's own dtype; a folder that does not fit is refused with its path; the averaged
weights load as a model; the averaged version is the run's final one unless distilled."""

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from models.llama import Llama, LlamaConfig, tiny
from tasks import promotion
from tasks.rlhf.average import average_weights
from tasks.rlhf.config import RlhfConfig
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.model_io import load_model, save_model_folder
from tasks.versions import AVERAGED_VERSION


def _folder(tmp_path, name, seed, config=None, dtype=torch.float32):
    torch.manual_seed(seed)
    model = Llama(config or tiny()).to(dtype)
    return save_model_folder(model, tmp_path / name, {})


def test_the_mean_of_two_folders_tensor_by_tensor(tmp_path):
    a, b = _folder(tmp_path, "a", 1), _folder(tmp_path, "b", 2)
    wa, wb = load_file(str(a / MODEL_FILE)), load_file(str(b / MODEL_FILE))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # two different models
    mean = average_weights([a, b])
    assert mean.keys() == wa.keys()
    for k in wa:
        assert mean[k].dtype == torch.float32
        assert torch.allclose(mean[k], (wa[k] + wb[k]) / 2, atol=1e-7), k
    # three folders: the uniform mean, not a running pairwise one
    c = _folder(tmp_path, "c", 3)
    wc = load_file(str(c / MODEL_FILE))
    three = average_weights([a, b, c])
    k = next(iter(wa))
    assert torch.allclose(three[k], (wa[k] + wb[k] + wc[k]) / 3, atol=1e-6)


def test_bf16_weights_stay_bf16_and_the_average_loads_as_a_model(tmp_path):
    a = _folder(tmp_path, "a", 1, dtype=torch.bfloat16)
    b = _folder(tmp_path, "b", 2, dtype=torch.bfloat16)
    mean = average_weights([a, b])
    assert {t.dtype for t in mean.values()} == {torch.bfloat16}
    same = average_weights([a, a])  # the mean of a model with itself is the model
    wa = load_file(str(a / MODEL_FILE))
    assert all(torch.equal(same[k], wa[k]) for k in wa)
    out = tmp_path / "avg"
    out.mkdir()
    (out / "config.json").write_text((a / "config.json").read_text())
    from safetensors.torch import save_file

    save_file(mean, str(out / MODEL_FILE))
    model = load_model(out)
    tokens = torch.randint(0, tiny().vocab_size, (1, 8))
    assert torch.isfinite(model(tokens)[0].float()).all()


def test_folders_that_do_not_fit_are_refused_with_their_path(tmp_path):
    a = _folder(tmp_path, "a", 1)
    wider = _folder(tmp_path, "wide", 2, LlamaConfig(**{**tiny().to_dict(), "dim": 128}))
    with pytest.raises(ValueError, match=r"wide/config.json: model config differs"):
        average_weights([a, wider])
    with pytest.raises(ValueError, match="at least two model folders"):
        average_weights([a])
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match=r"hf/config.json: no `model` entry"):
        average_weights([a, hf])
    # same config, a tensor stored in another dtype
    half = _folder(tmp_path, "half", 3, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"half/model.safetensors: tensor .* is torch.bfloat16"):
        average_weights([a, half])


def test_average_last_is_within_the_rounds_and_the_average_is_the_final_version():
    assert RlhfConfig(rounds=3, average_last=3).averaged_rounds == 3
    # fewer rounds than average_last (a preset run with --set rlhf.rounds=1): all of them
    assert RlhfConfig(rounds=3, average_last=4).averaged_rounds == 3
    assert RlhfConfig(rounds=1, ppo_from=1, average_last=2).averaged_rounds == 1
    with pytest.raises(ValidationError):
        RlhfConfig(average_last=0)
    versions = ["pretrained", "sft", "rlhf-v1", "rlhf-v2", AVERAGED_VERSION]
    assert promotion.final_version(versions) == AVERAGED_VERSION
    assert promotion.final_version([*versions, "distilled"]) == "distilled"
