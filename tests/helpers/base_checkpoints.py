"""Tiny random Llama checkpoints from "outside" the recipe, for the base-model tests: the same
weights and tokenizer written as a Hugging Face folder and as a GGUF file.

The tokenizer is a byte-level BPE trained here with the `tokenizers` library on the project's
README (shipped text), specials <unk> <s> </s> at ids 0 1 2, so BOS/EOS match Llama 2's ids. The
GGUF file carries it the way llama.cpp writes a GPT-2 style vocabulary (`tokenizer.ggml.model`
"gpt2", tokens, merges, token types, special ids), and its q/k weights in llama.cpp's
interleaved-pair order, which transformers' GGUF loader undoes. So a test reading both back sees
what a user with a real downloaded checkpoint would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.hf import save_hf
from models.llama import Llama, LlamaConfig, tiny

ROOT = Path(__file__).resolve().parents[2]
SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
VOCAB_SIZE = 384  # 256 bytes + 3 specials + 125 merges: small, and still merges real words
GGUF_NAME = "tiny-base.gguf"


def train_bpe(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2 pre-tokenization, no prefix space) trained on README.md."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((ROOT / "README.md").read_text(encoding="utf-8").splitlines(), trainer)
    return tok


def hf_tokenizer(tok):
    """The trained BPE as a transformers tokenizer (what `save_pretrained` writes)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=SPECIALS[0], bos_token=SPECIALS[1], eos_token=SPECIALS[2]
    )


def random_llama(vocab_size: int, tie: bool = False, seed: int = 0) -> Llama:
    """models.llama.tiny()'s shape (dim 64, 2 layers, GQA 4/2) with weights large enough that
    logits differ clearly between tokens (so a wrong permutation or mapping shows)."""
    cfg: LlamaConfig = tiny(vocab_size)
    cfg.tie_embeddings = tie
    cfg.rope_theta = 50_000.0  # not the default, so a lost setting changes the logits
    torch.manual_seed(seed)
    model = Llama(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.15)
    return model.eval()


def write_hf_folder(model: Llama, tokenizer, folder: Path) -> Path:
    """config.json + model.safetensors + tokenizer files. The recipe's own `recipe_config` key is
    removed: an outside checkpoint does not have it, so the import must rebuild our config from
    the Hugging Face fields alone."""
    save_hf(model, folder, tokenizer)
    config = folder / "config.json"
    data = json.loads(config.read_text())
    data.pop("recipe_config", None)
    config.write_text(json.dumps(data, indent=2))
    return folder


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k layout (convert_hf_to_gguf's `permute`): within each head, the
    rotate-half halves [x0..x(d/2-1) | y0..] are stored as interleaved pairs (x0 y0 x1 y1 ...)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _gguf_tensors(model: Llama):
    cfg = model.config
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    yield "token_embd.weight", state["tok_embeddings.weight"]
    for i in range(cfg.n_layers):
        p, b = f"layers.{i}.", f"blk.{i}."
        yield b + "attn_norm.weight", state[p + "attention_norm.weight"]
        yield b + "attn_q.weight", llama_cpp_permute(state[p + "attention.wq.weight"], cfg.n_heads)
        yield (
            b + "attn_k.weight",
            llama_cpp_permute(state[p + "attention.wk.weight"], cfg.n_kv_heads),
        )
        yield b + "attn_v.weight", state[p + "attention.wv.weight"]
        yield b + "attn_output.weight", state[p + "attention.wo.weight"]
        yield b + "ffn_norm.weight", state[p + "ffn_norm.weight"]
        yield b + "ffn_gate.weight", state[p + "feed_forward.w1.weight"]
        yield b + "ffn_down.weight", state[p + "feed_forward.w2.weight"]
        yield b + "ffn_up.weight", state[p + "feed_forward.w3.weight"]
    yield "output_norm.weight", state["norm.weight"]
    if not cfg.tie_embeddings:  # no output.weight: transformers ties lm_head to the embedding
        yield "output.weight", state["output.weight"]


def write_gguf(model: Llama, tok, path: Path, architecture: str = "llama") -> Path:
    """The model and the BPE as one F32 GGUF file, the way llama.cpp's converter lays it out."""
    from gguf import GGUFWriter

    cfg = model.config
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = [" ".join(m) if isinstance(m, list) else m for m in _merges(tok)]
    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(path), architecture)
    w.add_name("tiny-base")
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])  # 3: control, 1: normal
    w.add_unk_token_id(vocab[SPECIALS[0]])
    w.add_bos_token_id(vocab[SPECIALS[1]])
    w.add_eos_token_id(vocab[SPECIALS[2]])
    for name, array in _gguf_tensors(model):
        w.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _merges(tok) -> list:
    return json.loads(tok.to_str())["model"]["merges"]


def write_base_checkpoints(dest: Path, tie_gguf: bool = True) -> dict[str, Path]:
    """Both formats under `dest`: {"hf": folder, "gguf": file, "hf_model"/"gguf_model": the
    `Llama` each holds}.
    The GGUF model ties its embeddings (no output.weight, like SmolLM2); the HF folder does not,
    so the two runs cover both layouts."""
    tok = train_bpe()
    vocab_size = tok.get_vocab_size()
    hf_model = random_llama(vocab_size, tie=False, seed=0)
    gguf_model = random_llama(vocab_size, tie=tie_gguf, seed=1)
    folder = write_hf_folder(hf_model, hf_tokenizer(tok), dest / "hf-base")
    gguf = write_gguf(gguf_model, tok, dest / "gguf-base" / GGUF_NAME)
    return {"hf": folder, "gguf": gguf, "hf_model": hf_model, "gguf_model": gguf_model}
