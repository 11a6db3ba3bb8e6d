"""Fine-tuning data: the engine's image set (:class:`vestis.engine.loader.ImageSet`) in a torch ``DataLoader``,
an optional in-memory cache of decoded and resized images, and a per-epoch sampler (shuffled or class-balanced) sharded across processes.

The sampler's order is a pure function of (seed, epoch), so its whole state is two numbers and a resumed
or multi-process run draws exactly the same batches."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from vestis.data.images import ImageError, load_image
from vestis.engine.loader import collate
from vestis.runtime import release_free_memory


class _Decode(Dataset):
    def __init__(self, paths, size, interpolation):
        self.paths, self.size, self.interp = paths, size, interpolation

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = load_image(self.paths[i], self.size)
        except ImageError as e:
            return str(e)
        w, h = img.size
        s = self.size / min(w, h)
        if s < 1:
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), self.interp)
        return torch.from_numpy(np.asarray(img).copy())


def build_image_cache(paths: list, size: int, workers: int, progress: bool = True) -> list:
    """Every image decoded once and shrunk to shorter side ``size`` (uint8 HxWx3 arrays; an error string for
    unreadable files). Worker processes started later share it copy-on-write."""
    loader = DataLoader(_Decode(paths, size, Image.Resampling.BICUBIC), batch_size=None, num_workers=workers)
    bar = tqdm(loader, total=len(paths), desc="image cache", unit="img", disable=not progress)
    return [x if isinstance(x, str) else x.numpy().copy() for x in bar]  # copy: out of shared memory


class EpochSampler(Sampler[int]):
    """Indices for one epoch: a permutation, or (``balanced``) draws with replacement, each class equally
    likely. ``groups[i]`` is sample i's class (-1: none, treated as its own class). Process ``rank`` of
    ``world`` takes every world-th index of the epoch's list (padded to a multiple of world)."""

    def __init__(self, groups, balanced: bool = False, seed: int = 0, rank: int = 0, world: int = 1):
        self.groups = torch.as_tensor(np.asarray(groups), dtype=torch.long)
        self.balanced, self.seed, self.rank, self.world, self.epoch = balanced, seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.world)

    def weights(self) -> torch.Tensor:
        _, inverse, counts = torch.unique(self.groups, return_inverse=True, return_counts=True)
        return 1.0 / counts[inverse].double()

    def __iter__(self):
        n = len(self.groups)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.balanced:
            idx = torch.multinomial(self.weights(), n, replacement=True, generator=g)
        else:
            idx = torch.randperm(n, generator=g)
        idx = torch.cat([idx, idx[: len(self) * self.world - n]])
        return iter(idx[self.rank :: self.world].tolist())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "balanced": self.balanced}


class _Loader(DataLoader):
    """A DataLoader that trims the allocator's kept free memory before its workers are forked (each epoch)."""

    def __iter__(self):
        if self.num_workers:
            release_free_memory()
        return super().__iter__()


def make_loader(ds: Dataset, batch_size: int, workers: int, sampler=None, drop_last=False, pin=False):
    return _Loader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
    )
