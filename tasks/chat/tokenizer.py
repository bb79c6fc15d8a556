"""One tokenizer interface for every stage that encodes or decodes text.

Two implementations behind `load_tokenizer(path)`:

- `SentencePieceTokenizer`: a SentencePiece `.model` file: the recipe's own (tokenizer stage) and
  Llama 2's `tokenizer.model` alike. Its behaviour is exactly the processor's.
- `HFTokenizer`: a Hugging Face tokenizer: a folder with `tokenizer.json` (+
  `tokenizer_config.json`), or the vocabulary inside a GGUF file, read through `transformers`
  from local files only.

Special tokens: `encode` never produces a special id from text. SentencePiece treats "<s>" in
text as characters; for Hugging Face tokenizers `encode` turns off special-token matching, so a
user who types "<|im_end|>" cannot end a turn. Special ids are only ever added by the chat format
(`bos_id()`, `eos_id()`). `decode` drops special ids.

`encode_answer(prompt, answer)` is how an answer is encoded after its "[INST] ... [/INST]"
prompt (tasks/chat/format.py): the two texts are joined by one space in the rendered chat. A
SentencePiece model adds that space itself (its dummy prefix), so the answer is encoded alone,
as Meta's reference does. A Hugging Face tokenizer has no dummy prefix (byte-level BPE encodes
" a" and "a" differently), so the answer's ids are those that follow the prompt's in the encoding
of the joined text: the ids a template that renders the whole turn as text gets.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import sentencepiece as spm

HF_FILES = ("tokenizer.json", "tokenizer_config.json")  # what a Hugging Face folder holds
SPM_SUFFIX, GGUF_SUFFIX = ".model", ".gguf"


@runtime_checkable
class Tokenizer(Protocol):
    """What the stages use. Ids are ints; `pad_id()` is -1 when the tokenizer has no pad."""

    kind: str  # "sentencepiece" | "huggingface"
    path: str  # what it was loaded from

    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...
    def encode_answer(self, prompt: str, answer: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def bos_id(self) -> int: ...
    def eos_id(self) -> int: ...
    def pad_id(self) -> int: ...
    def vocab_size(self) -> int: ...
    def special_ids(self) -> set[int]: ...


class SentencePieceTokenizer:
    """A SentencePiece model file, used exactly as `sentencepiece.SentencePieceProcessor`."""

    kind = "sentencepiece"

    def __init__(self, model_file: str | Path):
        self.path = str(model_file)
        self.processor = spm.SentencePieceProcessor(model_file=self.path)

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.processor.encode(list(texts))

    def encode_answer(self, prompt: str, answer: str) -> list[int]:
        return self.processor.encode(answer)  # the dummy prefix is the space after the prompt

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(list(ids))

    def bos_id(self) -> int:
        return self.processor.bos_id()

    def eos_id(self) -> int:
        return self.processor.eos_id()

    def pad_id(self) -> int:
        return self.processor.pad_id()

    def vocab_size(self) -> int:
        return self.processor.vocab_size()

    def special_ids(self) -> set[int]:
        ids = {self.bos_id(), self.eos_id(), self.pad_id(), self.processor.unk_id()}
        return {i for i in ids if i >= 0}

    def id_to_piece(self, i: int) -> str:
        return self.processor.id_to_piece(i)


class HFTokenizer:
    """A Hugging Face tokenizer (folder or GGUF), encoding through its `tokenizers` backend."""

    kind = "huggingface"

    def __init__(self, hf_tokenizer, path: str):
        from tokenizers import Tokenizer as Backend

        self.path = path
        self.hf = hf_tokenizer  # the transformers object: save_pretrained, chat templates
        # a private copy of the backend with special-token matching off (see the module doc);
        # the transformers object keeps its own, so what it saves is unchanged
        self._backend = Backend.from_str(hf_tokenizer.backend_tokenizer.to_str())
        self._backend.encode_special_tokens = True
        self._bos = _token_id(hf_tokenizer, "bos", path)
        self._eos = _token_id(hf_tokenizer, "eos", path)
        pad = hf_tokenizer.pad_token_id
        self._pad = -1 if pad is None else int(pad)

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def encode_answer(self, prompt: str, answer: str) -> list[int]:
        head = self.encode(prompt)
        joint = self.encode(f"{prompt} {answer}")
        if joint[: len(head)] == head:
            return joint[len(head) :]
        # a merge across the boundary (no whitespace pre-tokenizer): encode the answer alone
        return self.encode(f" {answer}")

    def decode(self, ids: list[int]) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=True)

    def bos_id(self) -> int:
        return self._bos

    def eos_id(self) -> int:
        return self._eos

    def pad_id(self) -> int:
        return self._pad

    def vocab_size(self) -> int:
        return len(self.hf)

    def special_ids(self) -> set[int]:
        return {int(i) for i in self.hf.all_special_ids}

    def id_to_piece(self, i: int) -> str:
        return self._backend.id_to_token(i)


def _token_id(hf_tokenizer, which: str, path: str) -> int:
    token_id = getattr(hf_tokenizer, f"{which}_token_id")
    if token_id is None:
        raise ValueError(
            f"{path}: the tokenizer defines no {which.upper()} token; the Llama 2 chat format "
            "opens each turn with BOS and closes each answer with EOS. Set bos_token and "
            "eos_token in its tokenizer_config.json"
        )
    return int(token_id)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer at `path`: a SentencePiece `.model` file, a `.gguf` file (its vocabulary),
    or a folder with `tokenizer.json` (Hugging Face) or only `tokenizer.model` (SentencePiece).
    Loaded once per path and file state (mtime, size) in a process."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer not found: {path} does not exist")
    return _load(str(path.resolve()), _state(path))


def _state(path: Path) -> tuple:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)


@lru_cache(maxsize=8)
def _load(path: str, state: tuple) -> Tokenizer:
    p = Path(path)
    if p.is_file() and p.suffix == SPM_SUFFIX:
        return SentencePieceTokenizer(p)
    if p.is_file() and p.suffix == GGUF_SUFFIX:
        return HFTokenizer(_auto_tokenizer(p.parent, gguf_file=p.name), path)
    if p.is_dir() and (p / "tokenizer.json").is_file():
        return HFTokenizer(_auto_tokenizer(p), path)
    if p.is_dir() and (p / "tokenizer.model").is_file():
        return SentencePieceTokenizer(p / "tokenizer.model")
    raise ValueError(
        f"{p} is not a tokenizer: expected a SentencePiece .model file, a .gguf file, or a folder "
        "with tokenizer.json (Hugging Face) or tokenizer.model (SentencePiece)"
    )


def _auto_tokenizer(folder: Path, gguf_file: str | None = None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(folder), gguf_file=gguf_file, local_files_only=True
        )
    except (OSError, ValueError) as err:
        where = folder / gguf_file if gguf_file else folder
        raise ValueError(f"{where}: transformers could not read the tokenizer: {err}") from err


def tokenizer_sha256(path: str | Path) -> str:
    """One digest of a tokenizer's files (the file, or a folder's tokenizer files)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()
