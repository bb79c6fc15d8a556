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
_PEAKS: dict[tuple, float] = {}


def measure_matmul_peak(dtype: str = "fp32", threads: int | None = None,
                        sizes: tuple[int, ...] = (1024, 2048), repeats: int = 5,
                        device: str = "cpu") -> float:
    """Best FLOP/s of square (n x n) @ (n x n) matmuls (2 n^3 FLOPs each) in `dtype`, over
    `sizes` and `repeats`; measured once per process and setting, then cached."""
    threads = threads or torch.get_num_threads()
    key = (dtype, threads, device, tuple(sizes))
    if key not in _PEAKS:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _PEAKS[key] = max(_best_matmul(n, DTYPES[dtype], repeats, device) for n in sizes)
        finally:
            torch.set_num_threads(previous)
    return _PEAKS[key]


def _best_matmul(n: int, dtype: torch.dtype, repeats: int, device: str) -> float:
    gen = torch.Generator().manual_seed(0)  # leaves the global RNG (saved in checkpoints) alone
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    a @ b  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Fraction (0..1) of the measured peak reached by training."""
    return flops_per_token * tokens_per_s / peak_flops


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
