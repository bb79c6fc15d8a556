import json

import pytest
import torch

from models.llama import Llama, tiny
from tasks.training.mfu import measure_matmul_peak, mfu


def test_mfu_is_model_flops_over_peak():
    # 1e6 FLOPs/token at 500 tokens/s = 5e8 FLOP/s; against a 1e9 FLOP/s peak: half
    assert mfu(1e6, 500, 1e9) == pytest.approx(0.5)


def test_flops_per_token_is_6n_plus_attention():
    model = Llama(tiny())
    cfg = model.config
    expected = 6 * model.num_params(exclude_embeddings=True) + 12 * cfg.n_layers * cfg.dim * 64
    assert model.flops_per_token(64) == expected


def test_peak_is_measured_once_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    first = measure_matmul_peak("fp32", threads=1, sizes=(256,), repeats=2)
    assert torch.equal(torch.rand(1), expected)
    assert first > 1e8  # any CPU of this decade does > 0.1 GFLOP/s
    assert measure_matmul_peak("fp32", threads=1, sizes=(256,), repeats=2) == first  # cached


def test_a_peak_never_reads_below_the_best_on_record(tmp_path):
    """A peak timed on busy cores comes out low; the machine's best record wins, and a better
    measurement replaces the record."""
    from tasks.training import mfu as m

    record = tmp_path / "matmul_peaks.json"
    key = ("fp32", 1, "cpu", (128,))
    m._PEAKS.pop(key, None)
    measured = measure_matmul_peak("fp32", threads=1, sizes=(128,), repeats=2, record=record)
    ((name, stored),) = json.loads(record.read_text()).items()
    assert stored == measured and "fp32|1|cpu" in name
    record.write_text(json.dumps({name: measured * 100}))  # a better day
    m._PEAKS.pop(key)
    assert (
        measure_matmul_peak("fp32", threads=1, sizes=(128,), repeats=2, record=record)
        == measured * 100
    )
