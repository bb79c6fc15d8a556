"""A tokenizer as Hugging Face files, with a chat template that renders the Llama 2 format.

`export_tokenizer(tokenizer_path, out_dir)` writes `tokenizer.json` + `tokenizer_config.json`
(bos/eos/pad/unk and `chat_template`) into `out_dir`:

- the recipe's SentencePiece model (or Llama 2's `tokenizer.model`): a `tokenizers.Tokenizer`
  built here from the model proto (`spm_to_hf`), checked token for token against the
  SentencePiece processor in tests/unit/test_hf_export.py; `tokenizer.model` is copied beside it;
- a Hugging Face tokenizer (folder or GGUF vocabulary): its own files, with our chat template.

The template (CHAT_TEMPLATE) renders tasks/chat/format.py's text: per turn
`{bos}[INST] {user} [/INST] {answer} {eos}`, the system block in the first user turn, contents
stripped. It writes `bos_token`/`eos_token`, never "<s>", so it serves any tokenizer. A text
segment between two special tokens encodes like the SentencePiece processor encodes a separate
string (dummy prefix included), which is why the rendered text tokenizes to exactly
`tokenize_dialogue`'s ids. A dialogue ending with the user's turn already ends after "[/INST]",
so `add_generation_prompt` adds nothing. Unlike `Tokenizer.encode`, transformers matches special
tokens written in message text (a user typing "</s>"); the recipe's own encoding never does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tasks.chat.tokenizer import SentencePieceTokenizer, Tokenizer, load_tokenizer

# Written for tasks/chat/format.py: keep the two in step (the tests compare them token by token).
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- set expected = 'user' if loop.index0 % 2 == 0 else 'assistant' -%}"
    "{%- if message['role'] != expected -%}"
    "{{- raise_exception('turn ' ~ loop.index0 ~ ' has role ' ~ message['role'] ~ ', expected '"
    " ~ expected ~ ': turns alternate user/assistant after an optional system message') -}}"
    "{%- endif -%}"
    "{%- set content = message['content'] | trim -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and system -%}"
    "{%- set content = '<<SYS>>\\n' ~ system ~ '\\n<</SYS>>\\n\\n' ~ content -%}"
    "{%- endif -%}"
    "{{- bos_token ~ '[INST] ' ~ content ~ ' [/INST]' -}}"
    "{%- else -%}"
    "{{- ' ' ~ content ~ ' ' ~ eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

SPM_FILE = "tokenizer.model"
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6  # piece types


def spm_to_hf(model_file: str | Path):
    """A `tokenizers.Tokenizer` that encodes like the SentencePiece BPE model in `model_file`.

    SentencePiece BPE merges, at each step, the adjacent pair whose concatenation is the
    highest-scoring piece; a `tokenizers` BPE with one merge per (left, right) split of each
    piece, ranked by that piece's score, makes the same choices. The normaliser follows the
    model's spec: its character map (none for "identity"), extra-whitespace removal, spaces as
    "▁", and the dummy "▁" prepended to every text segment, as each `encode` call does.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import Regex, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    proto = pb.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise ValueError(
            f"{model_file}: only SentencePiece BPE models export to a Hugging Face tokenizer "
            f"(this one is {pb.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)})"
        )
    pieces = proto.pieces
    if any(p.type == _USER_DEFINED for p in pieces):
        raise ValueError(f"{model_file}: user-defined pieces are not supported by the export")
    vocab = {p.piece: i for i, p in enumerate(pieces)}
    normal = {p.piece: p.score for p in pieces if p.type == _NORMAL}
    ranked = sorted(
        (-score, vocab[piece], piece[:k], piece[k:])
        for piece, score in normal.items()
        for k in range(1, len(piece))
        if piece[:k] in normal and piece[k:] in normal
    )
    unk = pieces[proto.trainer_spec.unk_id].piece
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=[(left, right) for _, _, left, right in ranked],
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=proto.trainer_spec.byte_fallback,
        )
    )
    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # SentencePiece squeezes spaces only, not newlines
        # \A and \z: in the tokenizers regex (Oniguruma) ^ and $ also match at every newline
        steps += [
            normalizers.Replace(Regex(r"\A +| +\z"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(" ", 1, 0)] if spec.add_dummy_prefix else [])
    )
    specials = [p.piece for p in pieces if p.type in (_UNKNOWN, _CONTROL)]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _spm_fast_tokenizer(tok: SentencePieceTokenizer, pad: str):
    from transformers import PreTrainedTokenizerFast

    piece = tok.processor.id_to_piece
    return PreTrainedTokenizerFast(
        tokenizer_object=spm_to_hf(tok.path),
        bos_token=piece(tok.bos_id()),
        eos_token=piece(tok.eos_id()),
        unk_token=piece(tok.processor.unk_id()),
        pad_token=pad,
        clean_up_tokenization_spaces=False,
    )


def export_pad_id(tok: Tokenizer) -> int:
    """The pad id of an export: the tokenizer's pad when it is neither BOS nor EOS, else its
    unknown token (never produced by a byte-fallback model), else another special token.

    A reward model exported for `LlamaForSequenceClassification` is read at the last token that
    is not pad, and that token is often EOS, so pad must differ from EOS."""
    taken = {tok.bos_id(), tok.eos_id()}
    if tok.pad_id() >= 0 and tok.pad_id() not in taken:
        return tok.pad_id()
    if isinstance(tok, SentencePieceTokenizer):
        candidates = [tok.processor.unk_id()]
    else:
        candidates = [tok.hf.unk_token_id, *sorted(tok.special_ids())]
    for candidate in candidates:
        if candidate is not None and candidate >= 0 and candidate not in taken:
            return int(candidate)
    raise ValueError(
        f"{tok.path}: no token to pad with (its pad, if any, is BOS or EOS, and it has no other "
        "special token); add a pad token to the tokenizer"
    )


def export_tokenizer(tokenizer_path: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write the tokenizer at `tokenizer_path` as Hugging Face files with CHAT_TEMPLATE into
    `out_dir`. Returns the ids the model config needs: {"bos": .., "eos": .., "pad": ..}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(tokenizer_path)
    pad = export_pad_id(tok)
    if isinstance(tok, SentencePieceTokenizer):
        fast = _spm_fast_tokenizer(tok, tok.processor.id_to_piece(pad))
        fast.save_pretrained(str(out_dir))
        shutil.copyfile(tok.path, out_dir / SPM_FILE)
    else:
        tok.hf.save_pretrained(str(out_dir))  # its own files; the config is rewritten below
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config["pad_token"] = tok.id_to_piece(pad)
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    # a saved chat_template.jinja would take precedence over tokenizer_config.json's template
    (out_dir / "chat_template.jinja").unlink(missing_ok=True)
    return {"bos": tok.bos_id(), "eos": tok.eos_id(), "pad": pad}
