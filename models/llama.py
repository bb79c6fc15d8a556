"""Llama 2 in plain PyTorch (Touvron et al., 2023, §2.2 and Table 1).

Pre-norm decoder: RMSNorm, SwiGLU feed-forward, rotary position embeddings, grouped-query
attention (`n_kv_heads` < `n_heads` on 34B/70B). Parameter names follow the paper and map 1:1
onto Hugging Face `LlamaForCausalLM` (see models/hf.py). No Prefect, MLflow or I/O here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100  # label value excluded from the loss (prompt tokens, padding)


@dataclass
class LlamaConfig:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None = n_heads (multi-head); 8 on 34B/70B (GQA)
    vocab_size: int = 32000
    hidden_dim: int | None = None  # SwiGLU width; None = Llama's rule from dim (below)
    multiple_of: int = 256  # hidden_dim is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None  # 1.3 on 70B
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096  # context length (§2.2: 4k)
    tie_embeddings: bool = False  # Llama 2 does not tie; SmolLM2 does
    extra: dict = field(default_factory=dict)  # provenance (e.g. imported from), ignored here

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}"
            )
        if self.hidden_dim is None:
            hidden = int(2 * (4 * self.dim) / 3)  # SwiGLU keeps the 4*dim FFN's parameter count
            if self.ffn_dim_multiplier is not None:
                hidden = int(self.ffn_dim_multiplier * hidden)
            self.hidden_dim = self.multiple_of * math.ceil(hidden / self.multiple_of)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


# Named sizes. Builders return configs; `Llama(config)` builds the model.
def tiny(vocab_size: int = 512) -> LlamaConfig:
    """For tests: a few hundred thousand parameters, GQA on, runs in milliseconds."""
    return LlamaConfig(
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=vocab_size,
        multiple_of=32,
        max_seq_len=128,
    )


def demo(vocab_size: int = 8000) -> LlamaConfig:
    """A few million parameters: trains on 2 CPU cores in minutes (llama2.c's 15M is dim 288)."""
    return LlamaConfig(
        dim=256,
        n_layers=6,
        n_heads=8,
        n_kv_heads=4,
        vocab_size=vocab_size,
        multiple_of=32,
        max_seq_len=256,
    )


def llama2_7b() -> LlamaConfig:
    """Table 1: 7B, dim 4096, 32 layers, 32 heads, context 4k, vocab 32000: 6.74B parameters."""
    return LlamaConfig(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, max_seq_len=4096)


def llama2_70b() -> LlamaConfig:
    """Table 1: 70B with grouped-query attention (8 KV heads), FFN multiplier 1.3."""
    return LlamaConfig(
        dim=8192,
        n_layers=80,
        n_heads=64,
        n_kv_heads=8,
        vocab_size=32000,
        ffn_dim_multiplier=1.3,
        multiple_of=4096,
        max_seq_len=4096,
    )


SIZES = {"tiny": tiny, "demo": demo, "llama2_7b": llama2_7b, "llama2_70b": llama2_70b}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32 (as the reference implementation does), scale in the input dtype
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_cache(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (max_seq_len, head_dim // 2), for rotary embeddings (Su et al.)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of x (B, H, T, D) by position: the "rotate half" layout
    Hugging Face uses, so its checkpoints load without permuting wq/wk. cos/sin broadcast to
    (B, 1, T, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.type_as(x)


def segment_layout(segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, T) and attention mask (B, 1, T, T) that make each segment of a packed row
    a sequence of its own: a token attends causally to its own segment only (block-diagonal),
    and positions restart at 0 where the segment id changes. `segments` is (B, T) ids that are
    constant over each contiguous segment (tasks.chat.format.Packed.segments, windowed)."""
    B, T = segments.shape
    idx = torch.arange(T, device=segments.device).expand(B, T)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    return idx - first, (same & causal)[:, None]


class KVCache:
    """Per-layer key/value buffers for incremental decoding, (B, n_kv_heads, max_len, head_dim)."""

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.length = 0  # positions filled so far

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, layer: int = 0):
        B, T, _ = x.shape  # (B, T, C)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        # GQA: each KV head serves n_heads/n_kv_heads query heads. enable_gqa shares them inside
        # the kernel instead of repeat_interleave copying the whole cache at every decode step
        # (same result bit for bit; 2-5x faster attention when decoding, a bit faster training).
        gqa = self.n_kv_heads != self.n_heads
        if mask is None:
            # no mask: causal over the T new tokens, or, for one token (a decode step), every key
            # (torch's is_causal aligns to the top left: it would let a lone query see key 0 only)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU (Shazeer, 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin, mask, cache=None, layer=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


class LlamaTrunk(nn.Module):
    """Embeddings, blocks and final norm: the part of Llama that `Llama` (LM head) and
    `RewardModel` (scalar head) share. Subclasses add their head after calling __init__ and then
    initialise the weights (construction order = the order seeded draws happen in, unchanged).
    The trunk's modules are attributes of the model itself, not of a submodule, so the state-dict
    keys stay Llama's (`tok_embeddings`, `layers.*`, `norm`) and saved folders load as before."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        cos, sin = rope_cache(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(
        self,
        tokens: torch.Tensor,  # (B, T) token ids
        positions: torch.Tensor | None = None,  # (B, T) or (T,); default 0..T-1 (+ cache offset)
        attention_mask: torch.Tensor | None = None,  # (B, 1, T, S) bool, True = may attend
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, dim), in the weights' dtype: everything before a head.
        Without positions, mask and cache: positions 0..T-1 and causal attention."""
        B, T = tokens.shape
        if positions is None:
            start = cache.length if cache is not None else 0
            if start + T > self.config.max_seq_len:  # python ints: no graph break under compile
                raise ValueError(f"{start + T} positions > max_seq_len {self.config.max_seq_len}")
            positions = torch.arange(start, start + T, device=tokens.device)
        elif int(positions.max()) >= self.config.max_seq_len:  # explicit positions (generation)
            raise ValueError(
                f"position {int(positions.max())} >= max_seq_len {self.config.max_seq_len}"
            )
        # (T,) positions -> (1, 1, T, D/2); per-sequence (B, T) (left padding) -> (B, 1, T, D/2)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        cos, sin = (
            (cos[None, None], sin[None, None])
            if positions.dim() == 1
            else (cos[:, None], sin[:, None])
        )
        mask = attention_mask
        # T new tokens after cached ones need an explicit mask: causal among themselves, all of
        # the cache. One new token sees every key: no mask at all (the fast SDPA path).
        if mask is None and cache is not None and cache.length > 0 and T > 1:
            mask = torch.ones(1, 1, T, cache.length + T, dtype=torch.bool, device=tokens.device)
            mask[..., cache.length :] = torch.ones(
                T, T, dtype=torch.bool, device=tokens.device
            ).tril()
        h = self.tok_embeddings(tokens)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, cache, i)
        if cache is not None:
            cache.length += T
        return self.norm(h)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok_embeddings.weight.numel() if exclude_embeddings else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N for the matmuls plus attention (PaLM appendix B)."""
        cfg = self.config
        return 6 * self.num_params(exclude_embeddings=True) + 12 * cfg.n_layers * cfg.dim * seq_len


class Llama(LlamaTrunk):
    def __init__(self, cfg: LlamaConfig):
        super().__init__(cfg)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.apply(self._init_weights)

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T) token ids
        targets: torch.Tensor | None = None,  # (B, T) next-token ids, IGNORE_INDEX = no loss
        positions: torch.Tensor | None = None,  # (B, T) or (T,); default 0..T-1 (+ cache offset)
        attention_mask: torch.Tensor | None = None,  # (B, 1, T, S) bool, True = may attend
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (logits (B, T, vocab) in float32, mean cross-entropy or None)."""
        logits = self.output(self.hidden_states(tokens, positions, attention_mask, cache)).float()
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        return logits, loss
