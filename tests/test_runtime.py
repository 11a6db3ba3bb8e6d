"""vestis.runtime: the tuned allocator keeps freed memory, and hands it back before workers are forked."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from vestis import runtime

# Measured in a fresh process: in the test run's own, what earlier tests left decides what RSS shows (the heap
# they freed, kept by the tuned allocator, serves the new blocks without growing RSS; their threads can move the
# main thread onto another malloc arena), and in the fresh-clone CI "kept" read 7 MB.
_KEPT_AND_RELEASED = """
import json, os, torch
from vestis import runtime

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

tuned = runtime.tune_allocator()
before = rss()
blocks = [torch.ones(4 * 2**20) for _ in range(32)]  # 512 MB of 16 MB tensors, then freed
del blocks
kept = rss() - before
released = runtime.release_free_memory()
print(json.dumps({"tuned": tuned, "kept": kept, "released": released, "after": rss() - before}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_kept_memory_is_released_before_workers_fork():
    env = {k: v for k, v in os.environ.items() if k != "VESTIS_NO_MALLOPT"}
    out = subprocess.run([sys.executable, "-c", _KEPT_AND_RELEASED], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["tuned"]:
        pytest.skip("the allocator could not be tuned here (no mallopt)")
    # the tuned allocator keeps it (the speed-up); forked workers would map all of it
    assert got["kept"] > 300
    assert got["released"]
    assert got["after"] < got["kept"] / 4


def test_loaders_release_kept_memory_before_forking_workers(monkeypatch, tmp_path):
    from torch.utils.data import TensorDataset

    from tests.engine.test_loader import PRE, items
    from vestis.engine import loader as engine_loader
    from vestis.models.preprocess import resolve_transform
    from vestis.train import sampler

    calls = []
    for module in (sampler, engine_loader):
        monkeypatch.setattr(module, "release_free_memory", lambda: calls.append(1) or True)
    train = TensorDataset(torch.arange(8))
    images = engine_loader.ImageSet(items(tmp_path, 6), resolve_transform(PRE), PRE.resize_size)
    for workers in (0, 1):
        calls.clear()
        for _ in range(2):  # two epochs: workers forked (and memory released) for each
            list(sampler._Loader(train, batch_size=4, num_workers=workers))
        list(engine_loader.iterate_batches(images, batch_size=2, workers=workers))
        assert len(calls) == (3 if workers else 0)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (MemoryError(), True),
        (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes."), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed. "), True),
        (RuntimeError("DataLoader worker (pid 12) is killed by signal: Segmentation fault. "), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("not enough memory"), False),
    ],
)
def test_out_of_memory_is_told_apart(exc, expected):
    assert runtime.out_of_memory(exc) is expected
