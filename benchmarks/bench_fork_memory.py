"""Memory of a process tree when DataLoader workers are forked from a parent whose tuned allocator kept a
fragmented heap of freed activations (what a fine-tune does every epoch), with and without
``vestis.runtime.release_free_memory()`` before the fork.

    .venv/bin/python benchmarks/bench_fork_memory.py [--gb 3]

Each variant runs in a fresh process: allocate GB of 64 MB tensors, each followed by a small block that
stays alive (64 kB, taken from the top of the heap: the freed memory between them cannot be trimmed from
the top), free the big ones, fork two workers, allocate GB again while they live, and print the sum of PSS
of the parent and its workers, and the seconds the trim and the second allocation took."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset


def pss_mb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except OSError:
            pass
    return total // 1024


class _Slow(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        time.sleep(0.5)
        return torch.zeros(4)


def one(trim: bool, gb: int) -> tuple[int, float, float]:
    from vestis.runtime import release_free_memory, tune_allocator

    if not tune_allocator():
        raise SystemExit("the allocator could not be tuned here (glibc only)")
    acts, pins = [], []
    for _ in range(16 * gb):
        acts.append(torch.ones(16 * 2**20))
        pins.append(torch.ones(16384))  # 64 kB: from the top of the heap, after it
    del acts
    t = time.perf_counter()
    if trim:
        release_free_memory()
    t_trim = time.perf_counter() - t
    it = iter(DataLoader(_Slow(), batch_size=1, num_workers=2))
    next(it)  # the workers are alive now
    t = time.perf_counter()
    acts = [torch.ones(16 * 2**20) for _ in range(16 * gb)]  # the next epoch's activations
    t_alloc = time.perf_counter() - t
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children") as f:
        kids = [int(p) for p in f.read().split()]
    total = pss_mb([me, *kids])
    for _ in it:
        pass
    del acts, pins
    return total, t_trim, t_alloc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=int, default=3, help="the parent's working set (GiB)")
    p.add_argument("--variant", choices=["keep", "trim"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(*one(args.variant == "trim", args.gb))
        return 0
    print(f"parent working set {args.gb * 1024} MB; parent + 2 workers, sum of PSS while the workers live:")
    for variant in ("keep", "trim"):
        out = subprocess.run(
            [sys.executable, __file__, "--gb", str(args.gb), "--variant", variant],
            check=True,
            capture_output=True,
            text=True,
        )
        label = "release_free_memory() before the fork" if variant == "trim" else "kept heap (before)"
        mb, t_trim, t_alloc = out.stdout.split()[-3:]
        print(
            f"  {label:40s} {int(mb):6d} MB   trim {float(t_trim):.3f} s, allocation {float(t_alloc):.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
