import numpy as np
import pytest
import torch

from models.llama import IGNORE_INDEX
from tasks.training.data import TokenBatches, eval_batches, micro_batch_index


@pytest.fixture
def memmap_tokens(tmp_path):
    path = tmp_path / "tokens.bin"
    tokens = np.arange(10_000, dtype=np.uint32) % 5000  # position i holds i (mod 5000)
    tokens.tofile(path)
    return np.memmap(path, dtype=np.uint32, mode="r")


def test_batch_is_a_pure_function_of_seed_and_index(memmap_tokens):
    a = TokenBatches(memmap_tokens, batch_size=4, seq_len=16, seed=3)
    b = TokenBatches(memmap_tokens, batch_size=4, seq_len=16, seed=3)
    later = [a.batch(i) for i in (5, 0, 7)]  # any order: no hidden sampler state
    for i, (x, y) in zip((5, 0, 7), later):
        bx, by = b.batch(i)
        assert torch.equal(x, bx) and torch.equal(y, by)
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    assert not torch.equal(a.batch(0)[0], TokenBatches(memmap_tokens, 4, 16, seed=4).batch(0)[0])


def test_targets_are_inputs_shifted_by_one(memmap_tokens):
    x, y = TokenBatches(memmap_tokens, batch_size=8, seq_len=32, seed=0).batch(0)
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    # windows are contiguous slices of the stream (token i == i here, below 5000)
    small = x[:, 0] < 4000
    assert torch.equal(y[small, -1], x[small, 0] + 32)


def test_loss_mask_turns_untrained_targets_into_ignore_index():
    tokens = np.arange(100, dtype=np.uint16)
    mask = (np.arange(100) % 2).astype(np.uint8)  # odd positions are answer tokens
    x, y = TokenBatches(tokens, batch_size=3, seq_len=10, seed=0, loss_mask=mask).batch(2)
    for row_x, row_y in zip(x, y):
        for xi, yi in zip(row_x.tolist(), row_y.tolist()):
            target_position = xi + 1  # token value == its position
            assert yi == (target_position if target_position % 2 else IGNORE_INDEX)


def test_epochs_order_visits_every_window_once_per_epoch():
    tokens = np.arange(161, dtype=np.uint16)  # (161 - 1) // 8 = 20 windows of 8
    data = TokenBatches(tokens, batch_size=4, seq_len=8, seed=1, order="epochs")
    assert data.windows_per_epoch == 20
    epoch0 = np.concatenate([data.starts(i) for i in range(5)])
    epoch1 = np.concatenate([data.starts(i) for i in range(5, 10)])
    assert sorted(epoch0) == sorted(epoch1) == list(range(0, 160, 8))
    assert list(epoch0) != list(epoch1)  # reshuffled per epoch


def test_micro_batch_index_is_the_step_without_accumulation_or_ranks():
    assert [micro_batch_index(s, 0, 1) for s in range(4)] == [0, 1, 2, 3]
    # 2 micro-batches x 2 ranks: every (step, micro, rank) gets its own index, none shared
    seen = {micro_batch_index(s, m, 2, r, 2) for s in range(3) for m in range(2) for r in range(2)}
    assert seen == set(range(12))


def test_eval_batches_are_fixed_and_span_the_array(memmap_tokens):
    first = eval_batches(memmap_tokens, n=3, batch_size=2, seq_len=16)
    again = eval_batches(memmap_tokens, n=3, batch_size=2, seq_len=16)
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert first[0][0][0, 0] == 0  # starts at the beginning ...
    assert first[-1][1][-1, -1] == memmap_tokens[-1]  # ... and ends at the last token


def test_aligned_eval_batches_read_whole_packed_windows():
    """Packed examples: 6 windows of 8 tokens back to back, plus the trailing pad. Aligned
    validation windows are those windows, first to last; unaligned ones start mid-window."""
    seq_len, windows = 8, 6
    tokens = np.arange(windows * seq_len + 1)
    aligned = eval_batches(tokens, n=2, batch_size=2, seq_len=seq_len, aligned=True)
    starts = [int(x[r, 0]) for x, _ in aligned for r in range(2)]
    assert starts == [0, 16, 24, 40]  # windows 0, 2, 3, 5
    plain = eval_batches(tokens, n=2, batch_size=2, seq_len=seq_len)
    assert [int(x[r, 0]) for x, _ in plain for r in range(2)] == [0, 13, 27, 40]


def test_too_short_input_is_a_clear_error():
    with pytest.raises(ValueError, match="seq_len"):
        TokenBatches(np.arange(10), batch_size=1, seq_len=16)
    with pytest.raises(ValueError, match="loss_mask"):
        TokenBatches(np.arange(100), batch_size=1, seq_len=16, loss_mask=np.ones(99))
