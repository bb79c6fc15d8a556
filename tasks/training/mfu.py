"""Model FLOPs utilisation against a matmul peak measured on this machine.

MFU (PaLM, Chowdhery et al., 2022, appendix B) = model FLOPs per token * tokens/s / peak FLOP/s.
The peak is not a datasheet number: it is timed once per process (per dtype and thread count)
as the best of a few square matmuls, so a 2-core VM, a laptop and a GPU each report MFU against
what their matmul kernel actually reaches.
"""

from __future__ import annotations

import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_PEAKS: dict[tuple[str, int, str, int], float] = {}


def measure_matmul_peak(dtype: str = "fp32", threads: int | None = None, n: int = 2048,
                        repeats: int = 5, device: str = "cpu") -> float:
    """Best FLOP/s of an (n x n) @ (n x n) matmul (2 n^3 FLOPs) in `dtype`; cached per process."""
    threads = threads or torch.get_num_threads()
    key = (dtype, threads, device, n)
    if key in _PEAKS:
        return _PEAKS[key]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)  # leaves the global RNG (saved in checkpoints) alone
        a = torch.randn(n, n, generator=gen).to(device, DTYPES[dtype])
        b = torch.randn(n, n, generator=gen).to(device, DTYPES[dtype])
        a @ b  # warm-up: kernel selection, page faults
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    _PEAKS[key] = 2 * n**3 / best
    return _PEAKS[key]


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Fraction (0..1) of the measured peak reached by training."""
    return flops_per_token * tokens_per_s / peak_flops


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
