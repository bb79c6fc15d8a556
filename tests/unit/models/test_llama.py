import pytest
import torch
import torch.nn.functional as F

from models.llama import IGNORE_INDEX, KVCache, Llama, LlamaConfig, llama2_7b, llama2_70b, tiny


def random_model(cfg: LlamaConfig, seed: int = 0, std: float = 0.2) -> Llama:
    """Weights larger than the 0.02 init so logits differ clearly between tokens."""
    torch.manual_seed(seed)
    model = Llama(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def test_llama2_7b_has_table1_parameter_count():
    with torch.device("meta"):
        model = Llama(llama2_7b())
    assert model.num_params() == 6_738_415_616  # "7B" of Table 1, as in the HF checkpoint
    assert model.config.hidden_dim == 11008


def test_llama2_70b_uses_8_kv_heads():
    with torch.device("meta"):
        model = Llama(llama2_70b())
    attention = model.layers[0].attention
    assert model.config.n_kv_heads == 8
    assert attention.wq.weight.shape == (8192, 8192)
    assert attention.wk.weight.shape == (8 * 128, 8192)  # 8 KV heads of dim 128
    assert model.config.hidden_dim == 28672
    assert model.num_params() == 68_976_648_192


def test_gqa_shapes():
    cfg = tiny()  # 4 query heads, 2 KV heads, head_dim 16
    model = random_model(cfg)
    assert model.layers[0].attention.wk.weight.shape == (2 * 16, 64)
    cache = KVCache(cfg.n_layers, 3, cfg.n_kv_heads, 20, cfg.head_dim, torch.float32)
    logits, loss = model(torch.randint(0, cfg.vocab_size, (3, 7)), cache=cache)
    assert logits.shape == (3, 7, cfg.vocab_size) and logits.dtype == torch.float32
    assert loss is None
    assert cache.k[0].shape == (3, 2, 20, 16) and cache.length == 7


def test_gqa_equals_multi_head_with_repeated_kv_heads():
    # KV head j serves query heads j*r .. j*r + r - 1 (r = n_heads / n_kv_heads), as in HF.
    gqa = random_model(tiny())
    mha = Llama(LlamaConfig(**{**tiny().to_dict(), "n_kv_heads": 4}))
    state = gqa.state_dict()
    for i in range(gqa.config.n_layers):
        for w in ("wk", "wv"):
            name = f"layers.{i}.attention.{w}.weight"
            state[name] = state[name].view(2, 16, 64).repeat_interleave(2, dim=0).reshape(64, 64)
    mha.load_state_dict(state)
    tokens = torch.randint(0, 512, (2, 10))
    torch.testing.assert_close(gqa(tokens)[0], mha(tokens)[0], atol=1e-5, rtol=1e-5)


def test_kv_cache_incremental_logits_equal_full_forward():
    cfg = tiny()
    model = random_model(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, 12))
    full, _ = model(tokens)
    cache = KVCache(cfg.n_layers, 2, cfg.n_kv_heads, 12, cfg.head_dim, torch.float32)
    chunks = [model(tokens[:, :5], cache=cache)[0], model(tokens[:, 5:8], cache=cache)[0]]
    chunks += [model(tokens[:, t : t + 1], cache=cache)[0] for t in range(8, 12)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12


def test_per_sequence_positions_shift_a_prompt():
    # The same tokens at positions 0..5 give the same logits whatever their column.
    cfg = tiny()
    model = random_model(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (1, 6))
    alone, _ = model(tokens)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), tokens], dim=1)
    positions = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4, 5]])
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    mask[3:, :3] = False  # real tokens do not see the pads
    shifted, _ = model(padded, positions=positions, attention_mask=mask[None, None])
    torch.testing.assert_close(shifted[:, 3:], alone, atol=1e-5, rtol=1e-5)


def test_loss_ignores_ignore_index():
    cfg = tiny()
    model = random_model(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, 8))
    targets = torch.randint(0, cfg.vocab_size, (2, 8))
    targets[0, :5] = IGNORE_INDEX
    targets[1, 6:] = IGNORE_INDEX
    logits, loss = model(tokens, targets)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep])  # mean over the 9 kept tokens only
    torch.testing.assert_close(loss, expected)
    assert keep.sum() == 9


def test_position_beyond_context_is_an_error():
    model = random_model(tiny())
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 129, dtype=torch.long))


# --- the shared trunk (hidden_states) ---------------------------------------------------------


def trunk_by_hand(model, tokens: torch.Tensor) -> torch.Tensor:
    """The trunk loop as RewardModel and PolicyWithValue each wrote it before `hidden_states`
    existed: sliced rotary tables, every block with a causal mask, the final norm."""
    T = tokens.shape[1]
    cos, sin = model.rope_cos[:T][None, None], model.rope_sin[:T][None, None]
    h = model.tok_embeddings(tokens)
    for layer in model.layers:
        h = layer(h, cos, sin, None)
    return model.norm(h)


def test_hidden_states_then_the_head_is_forward_bit_for_bit():
    cfg = tiny()
    model = random_model(cfg, seed=3)
    tokens = torch.randint(0, cfg.vocab_size, (3, 11))
    h = model.hidden_states(tokens)
    assert h.shape == (3, 11, cfg.dim)
    assert torch.equal(h, trunk_by_hand(model, tokens))  # the old copies, exactly
    logits, _ = model(tokens)
    assert torch.equal(model.output(h).float(), logits)


def test_hidden_states_with_a_cache_match_forward_with_a_cache():
    cfg = tiny()
    model = random_model(cfg, seed=4)
    tokens = torch.randint(0, cfg.vocab_size, (2, 9))
    caches = [
        KVCache(cfg.n_layers, 2, cfg.n_kv_heads, 9, cfg.head_dim, torch.float32) for _ in range(2)
    ]
    for part in (tokens[:, :6], tokens[:, 6:7], tokens[:, 7:]):  # prefill, then decode steps
        h = model.hidden_states(part, cache=caches[0])
        logits, _ = model(part, cache=caches[1])
        assert torch.equal(model.output(h).float(), logits)
    assert caches[0].length == caches[1].length == 9


def test_seeded_construction_draws_in_the_same_order_as_before():
    # Llama used to build its modules inline: embeddings, blocks, norm, head, then the normal
    # init. The trunk base class must not change which weights a seed gives.
    from models.llama import RMSNorm, TransformerBlock

    cfg = tiny(vocab_size=64)
    torch.manual_seed(11)
    old = torch.nn.ModuleDict()
    old["tok_embeddings"] = torch.nn.Embedding(cfg.vocab_size, cfg.dim)
    old["layers"] = torch.nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
    old["norm"] = RMSNorm(cfg.dim, cfg.norm_eps)
    old["output"] = torch.nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
    old.apply(Llama._init_weights)
    torch.manual_seed(11)
    new = Llama(cfg).state_dict()
    assert list(new) == list(old.state_dict())
    assert all(torch.equal(new[k], v) for k, v in old.state_dict().items())


def test_segment_layout_makes_each_packed_example_see_only_itself():
    """A row packed from two examples and pads, read with segment_layout, gives every example
    the logits it has alone; plain causal attention lets the second one see the first."""
    from models.llama import segment_layout

    cfg = tiny()
    model = random_model(cfg)
    first, second = torch.randint(1, cfg.vocab_size, (5,)), torch.randint(1, cfg.vocab_size, (7,))
    row = torch.cat([first, second, torch.zeros(4, dtype=torch.long)])[None]  # 16 tokens
    segments = torch.tensor([[0] * 5 + [1] * 7 + [2] * 4])
    positions, mask = segment_layout(segments)
    assert positions.tolist() == [list(range(5)) + list(range(7)) + list(range(4))]
    assert mask.shape == (1, 1, 16, 16) and not mask[0, 0, 5:12, :5].any()
    packed, _ = model(row, positions=positions, attention_mask=mask)
    torch.testing.assert_close(packed[:, :5], model(first[None])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, 5:12], model(second[None])[0], atol=1e-5, rtol=1e-5)
    causal, _ = model(row)
    torch.testing.assert_close(causal[:, :5], packed[:, :5], atol=1e-5, rtol=1e-5)
    assert (causal[:, 5:12] - packed[:, 5:12]).abs().max() > 1e-2


def test_segment_layout_restarts_positions_in_a_window_cut_mid_segment():
    from models.llama import segment_layout

    positions, mask = segment_layout(torch.tensor([[4, 4, 5, 5, 5], [7, 7, 7, 7, 7]]))
    assert positions.tolist() == [[0, 1, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert mask[1, 0].equal(torch.ones(5, 5, dtype=torch.bool).tril())
    assert mask[0, 0, 2:, :2].sum() == 0 and mask[0, 0, 4, 2:].all()
