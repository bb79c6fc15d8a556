"""Model folders as Hugging Face folders, and back.

`export_hf_folder(model_dir, tokenizer_path, out_dir)` turns one of our model folders
(model_io.py: model.safetensors + config.json {"model": ...}) into a folder transformers loads as
is: config.json, model.safetensors (Hugging Face names, models/hf.py's table),
generation_config.json and the tokenizer files with the Llama 2 chat template
(tasks/chat/hf_export.py).

- A language model exports as `LlamaForCausalLM`.
- A reward model (reward_head.json present) exports as `LlamaForSequenceClassification` with
  num_labels 1: `score.weight` is our head's weight. Hugging Face's score layer has no bias and
  ours has one, so the bias is stored as `score_bias` in config.json (and the folder keeps
  reward_head.json): reward = logits[:, 0] + score_bias, read by transformers at the last token
  that is not `pad_token_id` (a pad distinct from EOS, so an answer's EOS is that token).

`is_hf_folder` / `load_hf_folder` read such a folder back as our `Llama` or `RewardModel`
(model_io.load_model and load_reward_model call them), so a registered version serves the recipe.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from models.hf import hf_config, hf_name, our_config, our_name
from models.llama import Llama, LlamaConfig
from models.reward import RewardModel
from tasks.chat.hf_export import export_tokenizer
from tasks.training.checkpoint import CONFIG_FILE, MODEL_FILE, read_config

HEAD_FILE = "reward_head.json"  # marks a model folder (ours or exported) as a reward model
CAUSAL_LM, SEQUENCE_CLASSIFIER = "LlamaForCausalLM", "LlamaForSequenceClassification"
SCORE_HEAD = ("score_head.weight", "score_head.bias")  # ours; Hugging Face: score.weight


def _hf_state(state: dict[str, torch.Tensor], reward: bool) -> tuple[dict, float | None]:
    """Our tensors under Hugging Face names; for a reward model also the head's bias."""
    out, bias = {}, None
    for name, tensor in state.items():
        if name == SCORE_HEAD[0]:
            out["score.weight"] = tensor
        elif name == SCORE_HEAD[1]:
            bias = float(tensor.reshape(-1)[0])
        else:  # the trunk (and a language model's output layer)
            out[hf_name(name)] = tensor
    if reward and bias is None:
        raise ValueError("reward model weights have no score_head.bias")
    return {k: v.contiguous() for k, v in out.items()}, bias


def export_hf_folder(
    model_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path
) -> Path:
    """Write `model_dir` (our model folder) with the tokenizer at `tokenizer_path` as a Hugging
    Face folder at `out_dir` (replaced whole: written beside it, then renamed)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} is missing: not a model folder")
    folder_config = read_config(model_dir)
    if "model" not in folder_config:
        raise ValueError(f"{model_dir / CONFIG_FILE} has no 'model' section: not our model folder")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_export(model_dir, folder_config, tokenizer_path, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _write_export(model_dir: Path, folder_config: dict, tokenizer_path, tmp: Path) -> None:
    """The export's files into the empty folder `tmp`."""
    from safetensors.torch import load_file, save_file
    from transformers import GenerationConfig

    cfg = LlamaConfig(**folder_config["model"])
    reward = (model_dir / HEAD_FILE).is_file()
    ids = export_tokenizer(tokenizer_path, tmp)
    too_big = {k: v for k, v in ids.items() if v >= cfg.vocab_size}
    if too_big:
        raise ValueError(
            f"{tokenizer_path}: token ids {too_big} lie outside the model's vocabulary "
            f"({cfg.vocab_size} in {model_dir / CONFIG_FILE}): not this model's tokenizer"
        )
    state, bias = _hf_state(load_file(str(model_dir / MODEL_FILE)), reward)
    save_file(state, str(tmp / MODEL_FILE), metadata={"format": "pt"})
    hf_cfg = hf_config(cfg, ids["bos"], ids["eos"], ids["pad"])
    hf_cfg.architectures = [SEQUENCE_CLASSIFIER if reward else CAUSAL_LM]
    hf_cfg.recipe_folder = {k: v for k, v in folder_config.items() if k != "model"}
    dtype = next(iter(state.values())).dtype
    hf_cfg.dtype = str(dtype).removeprefix("torch.")
    if reward:
        hf_cfg.num_labels = 1
        hf_cfg.score_bias = bias
        shutil.copyfile(model_dir / HEAD_FILE, tmp / HEAD_FILE)
    else:
        GenerationConfig(
            bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"]
        ).save_pretrained(str(tmp))
    hf_cfg.save_pretrained(str(tmp))


def is_hf_folder(folder: str | Path) -> bool:
    """True for a Hugging Face model folder (its config.json names the architectures)."""
    config = Path(folder) / CONFIG_FILE
    return config.is_file() and "architectures" in json.loads(config.read_text())


def load_hf_folder(folder: str | Path) -> Llama | RewardModel:
    """Our model from a Hugging Face Llama folder: a `RewardModel` for a sequence classifier,
    a `Llama` for a causal LM; float32 like `load_model` (the weights are cast)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    raw = json.loads((folder / CONFIG_FILE).read_text())
    arch = (raw.get("architectures") or [None])[0]
    if arch not in (CAUSAL_LM, SEQUENCE_CLASSIFIER):
        raise ValueError(
            f"{folder / CONFIG_FILE}: architecture {arch!r} is not one the recipe reads "
            f"({CAUSAL_LM} or {SEQUENCE_CLASSIFIER})"
        )
    if raw.get("recipe_config"):
        cfg = LlamaConfig(**raw["recipe_config"])
    else:
        from transformers import LlamaConfig as HFLlamaConfig

        cfg = our_config(HFLlamaConfig.from_dict(raw))
    reward = arch == SEQUENCE_CLASSIFIER
    state = {}
    for name, tensor in load_file(str(folder / MODEL_FILE)).items():
        state[SCORE_HEAD[0] if name == "score.weight" else our_name(name)] = tensor
    if reward:
        state[SCORE_HEAD[1]] = torch.tensor([float(raw.get("score_bias", 0.0))])
        model = RewardModel(cfg)
    else:
        model = Llama(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"output.weight"} if cfg.tie_embeddings and not reward else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{folder / MODEL_FILE}: weights do not fit the model: missing "
            f"{sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}"
        )
    return model.eval()
