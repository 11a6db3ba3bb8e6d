"""Process-level speed settings: allocator tuning, threads, device, autocast.

glibc's default malloc returns large freed blocks to the OS (mmap/trim) after every conv, which
halves eager PyTorch throughput on this kind of CPU; keeping them (``mallopt``) costs a little
resident memory and gives the speed back. Everything here is best-effort and never raises."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from pathlib import Path

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only). Returns whether it was applied.
    Set VESTIS_NO_MALLOPT=1 to leave the allocator alone (the benchmarks' naive baseline does)."""
    global _tuned
    if _tuned or os.environ.get("VESTIS_NO_MALLOPT"):
        return _tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
        _tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        _tuned = False
    return _tuned


def release_free_memory() -> bool:
    """Hand the free memory the tuned allocator kept back to the OS (glibc ``malloc_trim``); a no-op unless
    :func:`tune_allocator` applied. Call it before forking worker processes: a child maps the parent's kept
    heap, so every page of it the parent then reuses (the next batch's activations) is copied while the child
    lives, and a fine-tune that keeps ~12 GB of activations needs twice that with its workers (Lite1 on the
    clothing photos was killed for memory at 24 GB). The trim costs ~0.12 s per GB kept, and the parent's
    fresh pages fault in as fast as the copies they replace (``benchmarks/bench_fork_memory.py``)."""
    if not _tuned:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


# what PyTorch says when an allocation fails (CPU, CUDA), or when the OS killed a DataLoader worker for memory
_OOM_SIGNS = ("not enough memory", "can't allocate memory", "out of memory", "killed by signal: killed")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed allocation (Python, CPU or CUDA) or a worker the OS killed (the OOM killer)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(sign in str(exc).lower() for sign in _OOM_SIGNS)


def pick_device(device: str | None = None):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@functools.cache
def cpu_info() -> dict:
    """The CPU model, core count and the SIMD flags that decide bf16/int8 speed (read at run time)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in CPU_FLAGS if f in flags]}


def _cpu_has(flag: str) -> bool:
    return flag in cpu_info()["flags"]


def cpu_supports_bf16() -> bool:
    """AMX or AVX512-BF16 make bf16 autocast a real speed-up for inference on CPU; without them it is slower.
    (Measured on the 2-core AVX512-BF16 machine of docs/BENCHMARKS.md: Lite0 features 2.8x faster than fp32.)"""
    return _cpu_has("amx_bf16") or _cpu_has("avx512_bf16")


def autocast(device, precision: str):
    """Context manager for the chosen precision: 'fp32', 'bf16', or 'auto' (bf16 where the hardware has it)."""
    import torch

    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; choose fp32, bf16 or auto")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def resolve_precision(device, precision: str, training: bool = False) -> str:
    """'auto' becomes 'bf16' on GPUs and, on CPUs, where bf16 units make it faster: for inference any
    AVX512-BF16/AMX CPU; for training only AMX (on AVX512-BF16 alone bf16 training measured slower than
    fp32 — docs/BENCHMARKS.md). Otherwise 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    if training:
        return "bf16" if _cpu_has("amx_bf16") else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"
