import math

import pytest
import torch

from models.generation import generate, greedy_reference, next_token, sample_top_p, top_p_filter
from models.llama import Llama, tiny

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]


@pytest.fixture(scope="module")
def model() -> Llama:
    torch.manual_seed(0)
    model = Llama(tiny())  # vocab 512, GQA 4/2 heads, context 128
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)  # peaked distributions, clear argmax margins
    return model


@pytest.fixture(scope="module")
def reference(model) -> list[list[int]]:
    return [greedy_reference(model, p, 12) for p in PROMPTS]


def test_greedy_generate_equals_reference_without_cache(model, reference):
    assert generate(model, PROMPTS[:1], 12, temperature=0) == reference[:1]


@pytest.mark.parametrize("padding", ["left", "right"])
def test_padded_batch_equals_each_prompt_alone(model, reference, padding):
    batch = generate(model, PROMPTS, 12, temperature=0, padding=padding, pad_id=-1)
    alone = [generate(model, [p], 12, temperature=0)[0] for p in PROMPTS]
    assert batch == alone == reference


def test_equal_length_batch_without_masks_equals_reference(model):
    # no pad column: prefill and decode run without any attention mask (the unpadded fast path)
    prompts = [[5, 6, 7, 8], [12, 13, 14, 15], [20, 9, 30, 40]]
    expected = [greedy_reference(model, p, 12) for p in prompts]
    assert generate(model, prompts, 12, temperature=0) == expected
    assert generate(model, prompts, 12, temperature=0, use_cache=False) == expected


def test_eos_stops_one_sequence_while_the_others_continue(model, reference):
    # an EOS that the second prompt produces at step 3 and the others never produce
    eos = next(t for t in reference[1][3:] if t not in reference[0] + reference[2])
    stop = reference[1].index(eos)
    out = generate(model, PROMPTS, 12, temperature=0, eos_id=eos, pad_id=3)
    assert out[1] == reference[1][: stop + 1]  # EOS included, nothing after it
    assert out[0] == reference[0] and out[2] == reference[2]


def test_generation_ends_early_when_every_sequence_hit_eos(model, reference):
    eos = reference[0][2]
    out = generate(model, PROMPTS[:1], 50, temperature=0, eos_id=eos)
    assert out == [reference[0][:3]]


@pytest.mark.parametrize("top_p", [0.0, 1e-9])
def test_top_p_near_zero_is_greedy(model, reference, top_p):
    out = generate(model, PROMPTS, 12, temperature=1.0, top_p=top_p, seed=123)
    assert out == reference


def test_seeded_sampling_is_reproducible(model):
    first = generate(model, PROMPTS, 12, temperature=1.0, top_p=0.9, seed=7)
    assert generate(model, PROMPTS, 12, temperature=1.0, top_p=0.9, seed=7) == first
    assert generate(model, PROMPTS, 12, temperature=1.0, top_p=0.9, seed=8) != first


def test_top_p_filter_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])  # sorted: 0.5, 0.3, 0.15, 0.05
    # p=0.7: 0.5 alone is short of 0.7, 0.5+0.3 reaches it -> keep {0.5, 0.3}, renormalised
    torch.testing.assert_close(top_p_filter(probs, 0.7), torch.tensor([[0, 0.625, 0, 0.375]]))
    # p=0.9: 0.8 is short of 0.9 -> also keep 0.15; total 0.95
    torch.testing.assert_close(top_p_filter(probs, 0.9), torch.tensor([[0.15, 0.5, 0, 0.3]]) / 0.95)
    torch.testing.assert_close(top_p_filter(probs, 0.0), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    assert top_p_filter(probs, 1.0) is probs


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).float() / tokens.numel()


def test_temperature_and_top_p_sampling_frequencies():
    n = 40_000  # standard error of a frequency <= 0.0025; tolerance 0.015 is 6 sigma
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.25)]).expand(n, 3)
    # T=1: the distribution itself
    freq = frequencies(next_token(logits, 1.0, 1.0, gen), 3)
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.25, 0.25]), atol=0.015, rtol=0)
    # T=0.5 squares the probabilities: (0.25, 0.0625, 0.0625) / 0.375 = (2/3, 1/6, 1/6)
    freq = frequencies(next_token(logits, 0.5, 1.0, gen), 3)
    torch.testing.assert_close(freq, torch.tensor([2 / 3, 1 / 6, 1 / 6]), atol=0.015, rtol=0)
    # T=2 takes square roots: (0.707, 0.5, 0.5) / 1.707
    freq = frequencies(next_token(logits, 2.0, 1.0, gen), 3)
    torch.testing.assert_close(freq, torch.tensor([0.414, 0.293, 0.293]), atol=0.015, rtol=0)
    # T=0.5 then p=0.7: 2/3 < 0.7, so the next token (a tie; the lower id ranks first) joins:
    # (2/3, 1/6) / (5/6) = (0.8, 0.2); the third is never drawn
    freq = frequencies(next_token(logits, 0.5, 0.7, gen), 3)
    torch.testing.assert_close(freq, torch.tensor([0.8, 0.2, 0.0]), atol=0.015, rtol=0)
    assert freq[2] == 0
    # T=0 is argmax, whatever p
    assert next_token(logits[:2], 0.0, 0.5).tolist() == [0, 0]


def test_sample_top_p_draws_only_inside_the_nucleus():
    probs = torch.tensor([[0.05, 0.6, 0.35]]).expand(5000, 3)
    tokens = sample_top_p(probs, 0.9, torch.Generator().manual_seed(1))
    assert set(tokens.tolist()) == {1, 2}


def test_bad_arguments_raise(model):
    with pytest.raises(ValueError, match="padding"):
        generate(model, PROMPTS, 4, padding="middle")
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, PROMPTS, 125, temperature=0)  # 7 + 125 > 128
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1, 2], []], 4)
    assert generate(model, PROMPTS, 0) == [[], [], []]


def early_eos(outputs: list[list[int]]) -> int:
    """A token that ends some row early (within its first half) but is not in every row."""
    for row in outputs:
        for tok in row[1 : len(row) // 2]:
            if any(tok not in other for other in outputs):
                return tok
    raise AssertionError("no token stops only some rows")


@pytest.mark.parametrize("padding", ["left", "right"])
@pytest.mark.parametrize("temperature, top_p, seed", [(0.0, 1.0, None), (1.0, 0.9, 7)])
def test_no_cache_path_gives_the_same_tokens(model, padding, temperature, top_p, seed):
    def run(eos_id, use_cache):
        return generate(
            model,
            PROMPTS,
            12,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            eos_id=eos_id,
            pad_id=3,
            padding=padding,
            use_cache=use_cache,
        )

    full = run(None, True)
    assert run(None, False) == full
    eos = early_eos(full)
    cached = run(eos, True)
    assert any(len(row) < 12 for row in cached) and any(len(row) == 12 for row in cached)
    assert run(eos, False) == cached
