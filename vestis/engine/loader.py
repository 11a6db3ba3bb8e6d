"""The one image-batch loader: decode, transform and stack views, in worker processes, in input order.

Training, evaluation, prediction, the feature cache, export calibration, the index and the server all read
images through :class:`ImageSet` (one item: decoded once, transformed, its views stacked, or an error
string). :func:`iterate_batches` runs it in a pool of decoding processes without torch (the ONNX Runtime
predictor uses it); the fine-tuning trainer wraps the same :class:`ImageSet` in a torch ``DataLoader`` for
its sampler (:func:`vestis.train.sampler.make_loader`). An unreadable image never stops a batch: it comes
back as ``(index, reason)`` in the batch's ``errors``."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from vestis.data.images import ImageError, load_image, to_rgb
from vestis.runtime import release_free_memory

VIEWS = ("plain", "flip")


def default_workers() -> int:
    """Decoding processes by default: one per core, at most 4."""
    return min(4, os.cpu_count() or 1)


def check_views(views) -> tuple[str, ...]:
    views = tuple(views)
    if not views or any(v not in VIEWS for v in views):
        raise ValueError(f"views must be a non-empty list of {VIEWS}, got {views!r}")
    return views


def stack_views(x, views: tuple[str, ...]):
    """One transformed image -> its views stacked on a new first axis ('flip' = mirrored left-right).
    uint8 crops (H, W, 3) give (V, H, W, 3); torch tensors (3, H, W) give (V, 3, H, W); a tuple (an ensemble's
    transform, one per member) gives a tuple of stacks."""
    if isinstance(x, tuple):
        return tuple(stack_views(t, views) for t in x)
    if isinstance(x, np.ndarray):
        return np.stack([x[:, ::-1] if v == "flip" else x for v in views])
    import torch

    return torch.stack([torch.flip(x, dims=[-1]) if v == "flip" else x for v in views])


def stack_batch(xs: list):
    """Items from :func:`stack_views` -> a batch (B, V, ...), or a tuple of batches for an ensemble."""
    if isinstance(xs[0], tuple):
        return tuple(stack_batch(list(parts)) for parts in zip(*xs, strict=True))
    if isinstance(xs[0], np.ndarray):
        return np.stack(xs)
    import torch

    return torch.stack(xs)


class ImageSet:
    """Item ``i``: ``(i, views or None, error)``. ``items`` are paths, encoded bytes (downloads) or PIL images;
    ``cache`` (optional, same length) holds decoded uint8 arrays, or an error string, instead of the files.
    A map-style dataset, so a torch ``DataLoader`` takes it as it is."""

    def __init__(self, items: list, transform, min_size: int, views=("plain",), cache: list | None = None):
        self.items, self.transform, self.min_size = items, transform, min_size
        self.views, self.cache = check_views(views), cache

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> Image.Image:
        if self.cache is not None and self.cache[i] is not None:
            if isinstance(self.cache[i], str):
                raise ImageError(self.cache[i])
            return Image.fromarray(self.cache[i])
        item = self.items[i]
        if isinstance(item, Image.Image):  # already decoded (the server's in-memory images)
            return to_rgb(ImageOps.exif_transpose(item))
        return load_image(item, self.min_size)

    def __getitem__(self, i: int):
        try:
            x = self.transform(self.image(i))
        except ImageError as e:
            return i, None, str(e)
        except Exception as e:  # a transform failing on an odd image: that image's error, not the batch's
            return i, None, f"cannot prepare image: {e or type(e).__name__}"
        return i, stack_views(x, self.views), ""


@dataclass
class Batch:
    idx: np.ndarray  # (B,) positions in the item list of the images that were decoded
    x: object  # (B, V, ...) array/tensor, a tuple of them (ensemble), or None when every image failed
    errors: list[tuple[int, str]]  # (position, reason) of the images that failed

    def __iter__(self):  # (idx, x, errors) unpacking
        return iter((self.idx, self.x, self.errors))

    def __len__(self) -> int:
        return len(self.idx) + len(self.errors)


def collate(items: list) -> Batch:
    ok = [(i, x) for i, x, _ in items if x is not None]
    errors = [(i, err) for i, x, err in items if x is None]
    idx = np.array([i for i, _ in ok], dtype=np.int64)
    return Batch(idx, stack_batch([x for _, x in ok]) if ok else None, errors)


_worker_set: ImageSet | None = None


def _init_worker(ds: ImageSet) -> None:
    global _worker_set
    _worker_set = ds
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker


def _load_chunk(start: int, stop: int) -> Batch:
    return collate([_worker_set[i] for i in range(start, stop)])


def _context():
    # fork: the items (possibly downloaded bytes) are inherited, not pickled; spawn where fork does not exist
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def iterate_batches(
    ds: ImageSet, batch_size: int = 32, workers: int | None = None, prefetch: int = 2
) -> Iterator[Batch]:
    """Batches of ``ds`` in order (batch k holds items k*batch_size ...), decoded by ``workers`` processes
    (0: in this process), at most ``workers * prefetch`` batches ahead."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_workers() if workers is None else workers
    n = len(ds)
    spans = [(k, min(k + batch_size, n)) for k in range(0, n, batch_size)]
    if workers <= 0 or len(spans) <= 1:
        for a, b in spans:
            yield collate([ds[i] for i in range(a, b)])
        return
    release_free_memory()  # the workers are forked now: not a heap of freed activations to copy-on-write
    pool = ProcessPoolExecutor(
        min(workers, len(spans)), mp_context=_context(), initializer=_init_worker, initargs=(ds,)
    )
    pending: deque = deque()
    try:
        todo = iter(spans)
        for a, b in todo:
            pending.append(pool.submit(_load_chunk, a, b))
            if len(pending) >= workers * prefetch:
                break
        while pending:
            batch = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_load_chunk, *nxt))
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
