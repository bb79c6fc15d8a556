import torch

from models.llama import Llama, tiny
from models.ppo import PolicyWithValue
from models.seeding import seeded


def test_seeded_construction_ignores_and_restores_the_callers_rng():
    torch.manual_seed(1)
    with seeded(7):
        a = Llama(tiny(vocab_size=64))
    after_a = torch.rand(3)
    torch.manual_seed(2)  # a different state before: the same weights all the same
    with seeded(7):
        b = Llama(tiny(vocab_size=64))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after_a)  # the block drew nothing from the caller's RNG


def test_another_seed_gives_other_weights():
    with seeded(7):
        a = Llama(tiny(vocab_size=64))
    with seeded(8):
        b = Llama(tiny(vocab_size=64))
    assert not torch.equal(a.tok_embeddings.weight, b.tok_embeddings.weight)


def test_value_head_starts_at_zero_whatever_the_seed():
    with seeded(3):
        model = PolicyWithValue(Llama(tiny(vocab_size=64)))
    assert not model.value_head.weight.any() and not model.value_head.bias.any()
