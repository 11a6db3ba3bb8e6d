"""Batched feature extraction with an on-disk cache.

A cached vector is keyed by the image's content hash and the view (plain or flipped), inside a folder
keyed by the backbone's exact weights, its preprocessing and the precision, so a second run, another
head or another label column reuses the work. Unreadable images are skipped and reported."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vestis.data.images import ImageError, file_digest, load_image
from vestis.models.checkpoint import weights_fingerprint
from vestis.models.heads import VestisModel
from vestis.models.preprocess import resolve_transform
from vestis.runtime import autocast, resolve_precision, tune_allocator


def default_cache_dir() -> Path:
    return Path(os.environ.get("VESTIS_CACHE", Path.home() / ".cache" / "vestis")) / "features"


class FeatureCache:
    """Append-only ``.npz`` chunks of (keys, features); no pickles."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, np.ndarray] = {}
        for chunk in sorted(self.root.glob("chunk-*.npz")):
            try:
                with np.load(chunk, allow_pickle=False) as z:
                    self._data.update(zip(z["keys"].tolist(), z["feats"], strict=True))
            except (OSError, ValueError, KeyError):
                chunk.unlink(missing_ok=True)  # a chunk cut short by a crash: recompute those images

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> np.ndarray:
        return self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def put(self, keys: list[str], feats: np.ndarray) -> None:
        if not keys:
            return
        self._data.update(zip(keys, feats, strict=True))
        final = self.root / f"chunk-{uuid.uuid4().hex}.npz"
        tmp = final.with_name(final.stem + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), feats=feats.astype(np.float32))
        os.replace(tmp, final)


def stack_views(x, views: tuple[str, ...]):
    """A transformed image (3, H, W) -> its views stacked (V, 3, H, W) ('flip' = mirrored); a tuple of images
    (an ensemble's transform) -> a tuple of such stacks."""
    if isinstance(x, tuple):
        return tuple(stack_views(t, views) for t in x)
    return torch.stack([torch.flip(x, dims=[-1]) if v == "flip" else x for v in views])


def stack_batch(xs: list):
    """Images from ``stack_views`` -> a batch (B, V, 3, H, W), or a tuple of batches for an ensemble."""
    if isinstance(xs[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*xs, strict=True))
    return torch.stack(xs)


class _Images(Dataset):
    """Decodes each image once and returns its views stacked (see ``stack_views``)."""

    def __init__(self, items: list, transform, min_size: int, views: tuple[str, ...] = ("plain",)):
        self.items, self.transform, self.min_size, self.views = items, transform, min_size, views

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        try:
            x = self.transform(load_image(self.items[i], self.min_size))
        except ImageError as e:
            return i, None, str(e)
        return i, stack_views(x, self.views), ""


def _collate(batch):
    ok = [(i, x) for i, x, _ in batch if x is not None]
    errors = [(i, err) for i, x, err in batch if x is None]
    idx = torch.tensor([i for i, _ in ok], dtype=torch.long)
    xs = stack_batch([x for _, x in ok]) if ok else None
    return idx, xs, errors


def iterate_batches(items: list, transform, min_size: int, batch_size: int = 64, workers: int | None = None,
                    views: tuple[str, ...] = ("plain",)):  # fmt: skip
    """Yield (indices, tensor (B, V, 3, H, W) or None, [(index, error)]) over ``items`` (paths or bytes); with an
    ensemble's transform, a tuple of such tensors, one per member."""
    workers = default_workers() if workers is None else workers
    ds = _Images(items, transform, min_size, views)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        persistent_workers=False, prefetch_factor=4 if workers else None)  # fmt: skip
    yield from loader


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def model_key(model: VestisModel, precision: str) -> str:
    ident = {
        "backbone": model.backbone_name,
        "weights": weights_fingerprint(model.backbone),
        "preprocess": model.preprocess.to_dict(),
        "precision": precision,
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Features:
    feats: np.ndarray  # (N, V, D) float32; rows of failed images are zero
    ok: np.ndarray  # (N,) bool
    errors: dict[int, str] = field(default_factory=dict)
    digests: list[str | None] = field(default_factory=list)


def extract_features(model: VestisModel, paths: list[str | Path], *, views: tuple[str, ...] = ("plain",),
                     batch_size: int = 64, workers: int | None = None, precision: str = "auto",
                     cache: bool = True, cache_dir: str | Path | None = None, progress: bool = True,
                     device: str | torch.device = "cpu") -> Features:  # fmt: skip
    """Pooled backbone features for each path and view ('plain', 'flip'), cached on disk."""
    tune_allocator()
    device = torch.device(device)
    precision = resolve_precision(device, precision)
    n, d = len(paths), model.num_features
    out = Features(np.zeros((n, len(views), d), np.float32), np.zeros(n, bool), {}, [None] * n)
    store = (
        FeatureCache(Path(cache_dir or default_cache_dir()) / model_key(model, precision)) if cache else None
    )

    todo: list[int] = []  # images with at least one view missing from the cache
    for i, p in enumerate(tqdm(paths, desc="hashing", disable=not progress or n < 2000, leave=False)):
        try:
            out.digests[i] = file_digest(Path(p).read_bytes())
        except OSError as e:
            out.errors[i] = "file not found" if isinstance(e, FileNotFoundError) else f"cannot read file: {e}"
            continue
        out.ok[i] = True
        keys = [f"{out.digests[i]}:{view}" for view in views]
        if store is not None and all(k in store for k in keys):
            out.feats[i] = np.stack([store[k] for k in keys])
        else:
            todo.append(i)

    if todo:
        # outside inference mode: on a GPU, parameters copied inside it would become inference tensors that a
        # later fine-tuning of this same model cannot train
        model = model.to(device).eval()
        transform = resolve_transform(model.preprocess)
        bar = tqdm(total=len(todo), desc=f"features {model.backbone_name}", unit="img", disable=not progress)
        pending_keys, pending = [], []
        batches = iterate_batches([paths[i] for i in todo], transform, model.preprocess.resize_size,
                                  batch_size, workers, views)  # fmt: skip
        for idx, xs, errors in batches:
            for j, err in errors:
                out.errors[todo[j]], out.ok[todo[j]] = err, False
            if xs is not None:
                b, v = xs.shape[:2]
                with torch.inference_mode(), autocast(device, precision):
                    f = model.features(xs.flatten(0, 1).to(device)).float().cpu().numpy().reshape(b, v, d)
                for j, rows in zip(idx.tolist(), f, strict=True):
                    i = todo[j]
                    out.feats[i] = rows
                    pending_keys += [f"{out.digests[i]}:{view}" for view in views]
                    pending += list(rows)
            bar.update(len(idx) + len(errors))
            if store is not None and len(pending) >= 2048:  # flush often: a crash loses little work
                store.put(pending_keys, np.stack(pending))
                pending_keys, pending = [], []
        bar.close()
        if store is not None and pending:
            store.put(pending_keys, np.stack(pending))
    return out
