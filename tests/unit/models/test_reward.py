import math

import pytest
import torch

from models.llama import Llama, LlamaConfig, RMSNorm, TransformerBlock, tiny
from models.losses import accuracy, pairwise_loss, safety_aux_loss
from models.reward import RewardModel
from tasks.tracking import InMemoryLogger
from tasks.training.checkpoint import MODEL_FILE, latest_checkpoint, load_weights, read_config
from tasks.training.config import TrainConfig
from tasks.training.loop import train
from tests.unit.models.test_llama import trunk_by_hand

VOCAB = 16
PAD, MARKER = 0, 1  # toy task: chosen responses contain MARKER somewhere, rejected ones never


def random_llama(seed: int = 0, std: float = 0.2) -> Llama:
    torch.manual_seed(seed)
    model = Llama(tiny(vocab_size=VOCAB))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def toy_batch(pairs: int, seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x (2 * pairs, seq_len): chosen rows (with MARKER) then rejected rows (without), right-padded
    with PAD; y (2 * pairs, 3): length, margin 1 on both rows of a pair, safe label -1."""
    n = 2 * pairs
    lengths = torch.randint(3, seq_len + 1, (n,), generator=gen)
    x = torch.randint(MARKER + 1, VOCAB, (n, seq_len), generator=gen)
    where = (torch.rand(pairs, generator=gen) * lengths[:pairs]).long()  # a real position
    x[torch.arange(pairs), where] = MARKER
    x[torch.arange(seq_len)[None, :] >= lengths[:, None]] = PAD
    y = torch.stack([lengths.float(), torch.ones(n), torch.full((n,), -1.0)], dim=1)
    return x, y


def test_from_llama_copies_the_trunk_exactly():
    llama = random_llama()
    rm = RewardModel.from_llama(llama)
    pre_head = {}
    llama.norm.register_forward_hook(lambda m, i, out: pre_head.update(h=out))
    tokens = torch.randint(0, VOCAB, (3, 9))
    llama(tokens)
    torch.testing.assert_close(rm.hidden_states(tokens), pre_head["h"], atol=0, rtol=0)
    for name, p in llama.state_dict().items():
        if name != "output.weight":
            assert torch.equal(rm.state_dict()[name], p), name
    assert "output.weight" not in rm.state_dict()


def test_scores_equal_the_head_on_the_old_hand_written_trunk_loop():
    # RewardModel now inherits Llama's hidden_states; its scores must not move by one bit
    torch.manual_seed(5)
    rm = RewardModel(tiny(vocab_size=VOCAB), aux_weight=0.1)
    tokens = torch.randint(0, VOCAB, (4, 10))
    lengths = torch.tensor([10, 3, 7, 1])
    h = trunk_by_hand(rm, tokens)
    expected = rm.score_head(h[torch.arange(4), lengths - 1]).squeeze(-1).float()
    assert torch.equal(rm.scores(tokens, lengths), expected)


def test_seeded_construction_gives_the_same_weights_as_before():
    # the old inline construction: embeddings, blocks, norm, score head, normal init, head init
    cfg = tiny(vocab_size=VOCAB)
    torch.manual_seed(6)
    old = torch.nn.ModuleDict()
    old["tok_embeddings"] = torch.nn.Embedding(cfg.vocab_size, cfg.dim)
    old["layers"] = torch.nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
    old["norm"] = RMSNorm(cfg.dim, cfg.norm_eps)
    old["score_head"] = torch.nn.Linear(cfg.dim, 1)
    old.apply(Llama._init_weights)
    torch.nn.init.normal_(old["score_head"].weight, mean=0.0, std=1.0 / math.sqrt(cfg.dim + 1))
    torch.nn.init.zeros_(old["score_head"].bias)
    torch.manual_seed(6)
    new = RewardModel(cfg).state_dict()
    assert list(new) == list(old.state_dict())
    assert all(torch.equal(new[k], v) for k, v in old.state_dict().items())


def test_from_llama_with_tied_embeddings_keeps_the_embedding_and_drops_the_head():
    torch.manual_seed(0)
    llama = Llama(LlamaConfig(**{**tiny(vocab_size=VOCAB).to_dict(), "tie_embeddings": True}))
    rm = RewardModel.from_llama(llama)
    assert torch.equal(rm.tok_embeddings.weight, llama.tok_embeddings.weight)
    assert rm.tok_embeddings.weight.data_ptr() != llama.tok_embeddings.weight.data_ptr()  # a copy


def test_head_is_initialised_small_and_counted():
    rm = RewardModel(tiny(vocab_size=VOCAB))
    llama = Llama(tiny(vocab_size=VOCAB))
    dim = rm.config.dim
    assert rm.score_head.bias.item() == 0.0
    assert rm.score_head.weight.std().item() == pytest.approx(1 / math.sqrt(dim + 1), rel=0.3)
    lm_head = VOCAB * dim
    assert rm.num_params() == llama.num_params() - lm_head + dim + 1
    assert rm.num_params(exclude_embeddings=True) == rm.num_params() - VOCAB * dim
    assert rm.flops_per_token(32) == llama.flops_per_token(32) + 6 * (dim + 1 - lm_head)
    assert rm.to_state_dict().keys() == rm.state_dict().keys()


def test_scores_read_the_last_real_token():
    rm = RewardModel.from_llama(random_llama())
    tokens = torch.randint(1, VOCAB, (2, 8))
    lengths = torch.tensor([5, 8])
    base = rm.scores(tokens, lengths)
    assert base.shape == (2,) and base.dtype == torch.float32

    after_end = tokens.clone()
    after_end[0, 5:] = PAD  # row 0 ends at index 4: what follows is padding
    torch.testing.assert_close(rm.scores(after_end, lengths), base, atol=0, rtol=0)

    last = tokens.clone()
    last[0, 4] = (tokens[0, 4] % (VOCAB - 1)) + 1  # another real token at index lengths - 1
    moved = rm.scores(last, lengths)
    assert moved[0] != base[0] and moved[1] == base[1]


def test_scores_reject_lengths_outside_the_sequence():
    rm = RewardModel(tiny(vocab_size=VOCAB))
    tokens = torch.randint(0, VOCAB, (2, 6))
    with pytest.raises(ValueError, match="lengths"):
        rm.scores(tokens, torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="lengths"):
        rm.scores(tokens, torch.tensor([3, 7]))


def test_forward_loss_is_the_pairwise_loss_of_its_scores():
    rm = RewardModel.from_llama(random_llama())
    x, y = toy_batch(pairs=3, seq_len=10, gen=torch.Generator().manual_seed(0))
    y[:, 1] = torch.tensor([3.0, 1.0, 0.0]).repeat(2)  # margins per pair, on both rows
    scores, loss = rm(x, y)
    assert scores.shape == (6,)
    torch.testing.assert_close(scores, rm.scores(x, y[:, 0]))
    expected = pairwise_loss(scores[:3], scores[3:], torch.tensor([3.0, 1.0, 0.0]))
    torch.testing.assert_close(loss, expected)


def test_forward_without_targets_scores_full_rows():
    rm = RewardModel.from_llama(random_llama())
    x = torch.randint(0, VOCAB, (4, 7))
    scores, loss = rm(x)
    assert loss is None
    torch.testing.assert_close(scores, rm.scores(x, torch.full((4,), 7)))


def test_forward_rejects_a_bad_layout():
    rm = RewardModel(tiny(vocab_size=VOCAB))
    with pytest.raises(ValueError, match="even number of rows"):
        rm(torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 3))
    with pytest.raises(ValueError, match="targets"):
        rm(torch.zeros(4, 5, dtype=torch.long), torch.ones(4, 2))


def test_safety_aux_term_switches_on_with_its_weight():
    rm = RewardModel.from_llama(random_llama())
    x, y = toy_batch(pairs=2, seq_len=8, gen=torch.Generator().manual_seed(1))
    y[:, 2] = torch.tensor([1.0, 1.0, 0.0, -1.0])  # chosen safe; rejected unsafe / unknown
    scores, off = rm(x, y)  # default aux_weight 0: the ranking loss alone
    ranking = pairwise_loss(scores[:2], scores[2:], y[:2, 1])
    torch.testing.assert_close(off, ranking)
    rm.aux_weight = 0.5
    _, on = rm(x, y)
    aux = safety_aux_loss(scores, y[:, 2])  # over all 4 rows; the -1 row is ignored
    assert aux.item() > 0
    torch.testing.assert_close(on, ranking + 0.5 * aux)
    with pytest.raises(ValueError, match="aux_weight"):
        RewardModel(tiny(vocab_size=VOCAB), aux_weight=-1.0)


def test_a_tiny_reward_model_learns_to_rank_a_marker():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rm = RewardModel(tiny(vocab_size=VOCAB))
    opt = torch.optim.AdamW(rm.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        x, y = toy_batch(pairs=16, seq_len=12, gen=gen)
        _, loss = rm(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = toy_batch(pairs=128, seq_len=12, gen=torch.Generator().manual_seed(99))  # held out
    with torch.no_grad():
        scores, _ = rm(x, y)
    assert accuracy(scores[:128], scores[128:]) > 0.9


class PreferenceBatches:
    """Duck-typed data for the training loop: batch(index) -> (x (2B, T), y (2B, 3))."""

    def __init__(self, pairs: int, seq_len: int):
        self.batch_size, self.seq_len = pairs, seq_len  # pairs per micro-batch, as PairBatches

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return toy_batch(self.batch_size, self.seq_len, torch.Generator().manual_seed(index))


def test_runs_through_the_shared_training_loop(tmp_path):
    data = PreferenceBatches(pairs=4, seq_len=12)
    cfg = TrainConfig(
        max_steps=5,
        warmup_steps=1,
        batch_size=data.batch_size,
        seq_len=12,
        threads=1,
        log_every=1,
        eval_every=0,
        checkpoint_every=0,
        lr=3e-3,
    )
    logger = InMemoryLogger()
    rm = RewardModel.from_llama(random_llama(std=0.02))
    stats = train(rm, data, cfg, logger, tmp_path)
    losses = [loss for _, loss in logger.metrics["loss"]]
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert stats["steps"] == 5
    folder = latest_checkpoint(tmp_path / "checkpoints")
    assert folder is not None and (folder / MODEL_FILE).exists()
    assert read_config(folder)["model"] == rm.config.to_dict()
    restored = RewardModel(rm.config)
    load_weights(restored, folder / MODEL_FILE)
    for name, p in rm.state_dict().items():
        assert torch.equal(restored.state_dict()[name], p.cpu()), name
