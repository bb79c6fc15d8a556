"""Model FLOPs utilisation against a matmul peak measured on this machine.

MFU (PaLM, Chowdhery et al., 2022, appendix B) = model FLOPs per token * tokens/s / peak FLOP/s.
The peak is not a datasheet number: it is timed once per process (per dtype and thread count)
as the best of a few square matmuls, so a 2-core VM, a laptop and a GPU each report MFU against
what their matmul kernel actually reaches.

A peak timed while other processes share the cores comes out low, and MFU then reads above
100 %. So the best peak ever measured on this machine (keyed by the processor's name, dtype,
thread count and device) is kept in `matmul_peaks.json` in the run directory, and a measurement
never reports less than that record.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PEAKS_FILE = "matmul_peaks.json"
_PEAKS: dict[tuple, float] = {}


def measure_matmul_peak(
    dtype: str = "fp32",
    threads: int | None = None,
    sizes: tuple[int, ...] = (1024, 2048),
    repeats: int = 5,
    device: str = "cpu",
    record: Path | None = None,
) -> float:
    """Best FLOP/s of square (n x n) @ (n x n) matmuls (2 n^3 FLOPs each) in `dtype`, over
    `sizes` and `repeats`; measured once per process and setting, then cached. With `record`
    (a JSON file), the result is at least the best earlier measurement stored there, and a
    better one is stored."""
    threads = threads or torch.get_num_threads()
    key = (dtype, threads, device, tuple(sizes))
    if key not in _PEAKS:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _PEAKS[key] = _peak(sizes, DTYPES[dtype], repeats, device)
        finally:
            torch.set_num_threads(previous)
        if record is not None:
            _PEAKS[key] = _best_on_record(Path(record), key, _PEAKS[key])
    return _PEAKS[key]


def default_record() -> Path | None:
    """`matmul_peaks.json` in the run directory, when one is configured (RECIPE_RUN_DIR)."""
    run_dir = os.environ.get("RECIPE_RUN_DIR")
    return Path(run_dir) / PEAKS_FILE if run_dir else None


def _best_on_record(path: Path, key: tuple, measured: float) -> float:
    name = f"{_processor()}|{'|'.join(map(str, key))}"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    best = max(measured, float(records.get(name, 0.0)))
    if best > records.get(name, 0.0):
        records[name] = best
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
            os.replace(tmp, path)  # atomic; a lost race only loses a record, never corrupts it
        except OSError:
            pass
    return best


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def faster_dtype(threads: int | None = None, device: str = "cpu", n: int = 384) -> str:
    """ "bf16" when bf16 matmuls beat fp32 on this machine, else "fp32". A CPU without bf16 units
    (AVX2 only, e.g. many AMD EPYC) runs bf16 on a scalar fallback: measured 0.3 GFLOP/s against
    ~20-300 GFLOP/s fp32; with AMX bf16 is ~5x fp32. Small matmuls, so the probe takes
    milliseconds where bf16 is fast and well under a second where it is not."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        fp32, bf16 = (_best_matmul(n, DTYPES[d], 2, device) for d in ("fp32", "bf16"))
    finally:
        torch.set_num_threads(previous)
    return "bf16" if bf16 > fp32 else "fp32"


def _peak(sizes: tuple[int, ...], dtype: torch.dtype, repeats: int, device: str) -> float:
    """Best rate over `sizes`, skipping sizes a first small matmul predicts to take longer than
    the budget (bf16 2048^3 on a CPU without bf16 units would take about a minute)."""
    rate = best = _best_matmul(256, dtype, 3, device)
    for n in sorted(sizes):
        if 2 * n**3 / rate > MATMUL_BUDGET_S:
            break
        best = max(best, _best_matmul(n, dtype, repeats, device))
    return best


MATMUL_BUDGET_S = 2.0  # per size: a slow dtype (bf16 without bf16 units) is measured once


def _best_matmul(n: int, dtype: torch.dtype, repeats: int, device: str) -> float:
    gen = torch.Generator().manual_seed(0)  # leaves the global RNG (saved in checkpoints) alone
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    a @ b  # warm-up: kernel selection, page faults
    best, spent = float("inf"), 0.0
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > MATMUL_BUDGET_S:
            break
    return 2 * n**3 / best


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Fraction (0..1) of the measured peak reached by training."""
    return flops_per_token * tokens_per_s / peak_flops


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
