"""Model folders: what a stage registers and the next stage loads.

A model folder holds `model.safetensors` and `config.json` ({"model": LlamaConfig fields, ...});
a reward model's folder also holds `reward_head.json`. `load_model` and `load_reward_model` also
read a Hugging Face export of such a folder (hf_export.py: what a registered version holds), told
apart by its config.json. Checkpoints (checkpoint.py) hold more
(optimizer, RNG, trainer state); `export_model` copies a checkpoint's weights and config out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from models.llama import Llama, LlamaConfig
from models.reward import RewardModel
from tasks.io import atomic_write_bytes, atomic_write_file
from tasks.training.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    load_weights,
    read_config,
    save_weights,
)
from tasks.training.hf_export import HEAD_FILE, is_hf_folder, load_hf_folder


def export_model(checkpoint: Path, folder: Path) -> Path:
    """The weights and config of a checkpoint, without optimizer state: what gets registered."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (checkpoint / name).exists():
            raise FileNotFoundError(f"{checkpoint / name} is missing: cannot export the model")
        shutil.copyfile(checkpoint / name, folder / name)
    return folder


def save_model_folder(model, folder: Path, extra: dict) -> Path:
    """Weights + config (what `load_model` reads) of a model trained outside the shared loop."""
    return write_model_folder(
        folder, model.state_dict(), {"model": model.config.to_dict(), **extra}
    )


def write_model_folder(folder: Path, state: dict[str, torch.Tensor], config: dict) -> Path:
    """A model folder from a state dict and its config.json content ({"model": LlamaConfig
    fields, ...}), each file written atomically: a reader sees the old file or the new one."""
    folder = Path(folder)
    atomic_write_file(folder / MODEL_FILE, lambda tmp: save_weights(None, tmp, state))
    atomic_write_bytes(folder / CONFIG_FILE, json.dumps(config, indent=2, default=str).encode())
    return folder


def load_model(model_dir: Path) -> Llama:
    """The Llama in a model folder (weights + the config stored beside them) or in a Hugging
    Face export of one, in eval mode."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{model_dir / CONFIG_FILE} is missing: not a model folder")
    if is_hf_folder(model_dir):
        model = load_hf_folder(model_dir)
        if not isinstance(model, Llama):
            raise ValueError(f"{model_dir} holds a reward model, not a language model")
        return model
    model = Llama(LlamaConfig(**read_config(model_dir)["model"]))
    load_weights(model, model_dir / MODEL_FILE)
    return model.eval()


def load_reward_model(folder: Path) -> RewardModel:
    """A reward model saved by `train_reward_model` (weights + config + reward_head.json), or
    its Hugging Face export."""
    folder = Path(folder)
    if not (folder / HEAD_FILE).exists():
        raise FileNotFoundError(f"{folder / HEAD_FILE} is missing: not a reward model folder")
    if is_hf_folder(folder):
        model = load_hf_folder(folder)
        if not isinstance(model, RewardModel):
            raise ValueError(f"{folder} holds a language model, not a reward model")
        return model
    model = RewardModel(LlamaConfig(**read_config(folder)["model"]))
    load_weights(model, folder / MODEL_FILE)
    return model.eval()
