"""Detoxify backend of the toxicity scorer: the real `detoxify.Detoxify` class, offline.

Loads a local checkpoint in Detoxify's own format (or a file from a user's Detoxify/torch-hub
cache folder); nothing is downloaded. Kept apart from toxicity.py so the embedded default does
not pull in torch and transformers.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import numpy as np

# Detoxify's class names after its own renaming (toxic -> toxicity, ...), "original" checkpoint.
DETOXIFY_CLASSES = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
DetoxifyVariant = Literal[
    "original", "unbiased", "multilingual", "original-small", "unbiased-small"
]


class DetoxifyScorer:
    """The real `detoxify.Detoxify` on a local checkpoint, with no network access.

    `checkpoint` is a checkpoint file in Detoxify's format ({"config": ..., "state_dict": ...})
    or Detoxify's download cache (torch hub's `checkpoints` folder, or the hub folder above it).
    `huggingface_config_path` is a folder with the base model's config.json and tokenizer files
    (e.g. a `save_pretrained` copy of bert-base-uncased for the "original" checkpoint).

    Why the checkpoint is sometimes rewritten in memory (detoxify 0.5.4, transformers 5):
    - `get_model_and_tokenizer` always calls `from_pretrained(model_type)` first; released
      checkpoints name a hub model ("bert-base-uncased"), which fails offline even when
      `huggingface_config_path` is given.
    - with `huggingface_config_path` set, the folder's config.json replaces the checkpoint's
      `num_classes`; a stock config has 2 labels and loading the 6-class head then fails.
    So when the checkpoint's `model_type` is not already the local folder, `model_type` is
    pointed at the folder and Detoxify is built without `huggingface_config_path`: it then builds
    the config with `num_labels=num_classes` and loads the tokenizer with `from_pretrained(folder)`,
    which reads vocab.txt (`BertTokenizer(vocab_file=...)` would silently ignore it).
    """

    name = "detoxify"

    def __init__(
        self,
        checkpoint: Path,
        huggingface_config_path: Path | None = None,
        device: str = "cpu",
        label: str = "toxicity",
        variant: DetoxifyVariant = "original",
        batch_size: int = 64,
    ) -> None:
        import detoxify
        import torch

        self.checkpoint = resolve_detoxify_checkpoint(Path(checkpoint), variant)
        self.batch_size = batch_size
        self.label = label
        loaded = _load_checkpoint_lazily(self.checkpoint)
        model_type = str(loaded["config"]["arch"]["args"]["model_type"])
        config_dir = _detoxify_config_dir(self.checkpoint, model_type, huggingface_config_path)
        if Path(model_type).resolve() == config_dir.resolve():
            source: str | io.BytesIO = str(self.checkpoint)  # already offline-ready: load the file
        else:
            loaded["config"]["arch"]["args"]["model_type"] = str(config_dir)
            source = io.BytesIO()
            torch.save(loaded, source)
            source.seek(0)
        del loaded
        self._detoxify = detoxify.Detoxify(checkpoint=source, device=device)
        if label not in self._detoxify.class_names:
            raise ValueError(
                f"label {label!r} is not a class of {self.checkpoint}; "
                f"choose one of {self._detoxify.class_names}"
            )
        _cap_tokenizer_length(self._detoxify)

    def score_lines(self, lines: list[str]) -> np.ndarray:
        out = np.zeros(len(lines), dtype=np.float32)
        # Longest first, so each forward pass pads to similar lengths.
        order = sorted(range(len(lines)), key=lambda i: len(lines[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            scores = self._detoxify.predict([lines[i] for i in idx])[self.label]
            out[idx] = np.atleast_1d(np.asarray(scores, dtype=np.float32))  # 1 text: a float
        return out


def resolve_detoxify_checkpoint(path: Path, variant: DetoxifyVariant = "original") -> Path:
    """The checkpoint file for `path`: the file itself, or the `variant` file in a cache folder."""
    from detoxify.detoxify import MODEL_URLS

    url = MODEL_URLS[variant]
    file_name = url.rsplit("/", 1)[1]
    what = (
        f"Provide a Detoxify checkpoint file (a torch dict with 'config' and 'state_dict', e.g. "
        f"{file_name} from {url}) or the folder of Detoxify's cache (torch hub's 'checkpoints' "
        f"folder, usually ~/.cache/torch/hub/checkpoints) as toxicity.detoxify_checkpoint."
    )
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"Detoxify checkpoint not found: {path}. {what}")
    for folder in (path, path / "checkpoints"):
        if (folder / file_name).is_file():
            return folder / file_name
    found = sorted([*path.glob("*.ckpt"), *path.glob("checkpoints/*.ckpt")])
    if len(found) == 1:  # a cache holding one other checkpoint, or a user's own file
        return found[0]
    raise FileNotFoundError(
        f"no Detoxify checkpoint {file_name} (variant {variant!r}) in folder {path}; it holds "
        f"{[str(p.relative_to(path)) for p in found] or 'no .ckpt files'}. {what}"
    )


def _load_checkpoint_lazily(path: Path) -> dict:
    import torch

    try:  # memory-mapped: the state dict is only read if it has to be re-serialised
        loaded = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # legacy (pre zip) serialisation cannot be memory-mapped
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
        raise ValueError(
            f"{path} is not a Detoxify checkpoint: it needs a dict with 'config' (the training "
            f"config, arch.args and dataset.args.classes) and 'state_dict'"
        )
    return loaded


def _detoxify_config_dir(checkpoint: Path, model_type: str, config_path: Path | None) -> Path:
    if config_path is not None:
        folder = Path(config_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"Detoxify config folder {folder} has no config.json: provide a folder with the "
                f"base model's config.json and tokenizer files (vocab.txt or tokenizer.json) as "
                f"toxicity.detoxify_config_dir"
            )
        return folder
    if Path(model_type).is_dir():
        return Path(model_type)
    raise FileNotFoundError(
        f"checkpoint {checkpoint} names the hub model {model_type!r} as its base; offline, "
        f"Detoxify needs that model's config.json and tokenizer files: set "
        f"toxicity.detoxify_config_dir to a local folder holding them (a save_pretrained copy)"
    )


def _cap_tokenizer_length(detox) -> None:
    """Without tokenizer_config.json, `model_max_length` is ~1e30 and `truncation=True` does
    nothing: a line longer than the position table would crash the forward pass."""
    config = detox.model.config
    limit = config.max_position_embeddings - (2 if "roberta" in config.model_type else 0)
    if detox.tokenizer.model_max_length > limit:
        detox.tokenizer.model_max_length = limit


# ---------------------------------------------------------------- tiny Detoxify checkpoint


def write_tiny_detoxify_checkpoint(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random 2-layer BERT in Detoxify's checkpoint format: (checkpoint, config folder).

    For tests and pipeline benchmarks of the Detoxify backend without real weights: its scores
    mean nothing. Weights are initialised wide so that scores spread over (0, 1).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    model_dir = folder / "tiny-bert"
    model_dir.mkdir(parents=True, exist_ok=True)
    words = (
        "the a an and or of to in on is was are were be it this that you he she they we i "
        "not no yes good bad nice kind happy sad hate love stupid idiot fool dumb ugly "
        "damn hell crap cat dog house car city news report people said year time day"
    ).split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, ".", ",", "!", "?"]
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(DETOXIFY_CLASSES),
        initializer_range=0.5,  # BERT's 0.02 gives near-constant outputs at this size
    )
    config.save_pretrained(model_dir)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
    checkpoint = folder / "tiny-detoxify.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": {
                        "model_type": str(model_dir),
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(DETOXIFY_CLASSES),
                    }
                },
                # Detoxify's own (Jigsaw) names; it renames them to DETOXIFY_CLASSES on load.
                "dataset": {
                    "args": {
                        "classes": [
                            "toxic",
                            "severe_toxic",
                            "obscene",
                            "threat",
                            "insult",
                            "identity_hate",
                        ]
                    }
                },
            },
            "state_dict": model.state_dict(),
        },
        checkpoint,
    )
    return checkpoint, model_dir
