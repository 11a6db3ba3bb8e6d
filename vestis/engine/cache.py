"""The on-disk feature cache: append-only ``.npz`` chunks of (keys, features), no pickles, no torch.

A chunk is written under a temporary name that the loader never reads (``tmp-*.npz``) and renamed into
place, so a crash leaves at worst an orphaned temporary file (removed once it is old) and never a
half-written chunk. A chunk that is damaged anyway (truncated, empty, not a zip, wrong arrays, wrong
width) is dropped with a warning and its images are recomputed."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

_STALE_TMP_SECONDS = 3600  # a temporary chunk this old belongs to a process that died


def default_cache_dir() -> Path:
    return Path(os.environ.get("VESTIS_CACHE", Path.home() / ".cache" / "vestis")) / "features"


class FeatureCache:
    """Feature vectors keyed by ``"CONTENT_DIGEST:VIEW"`` in one directory per model key."""

    def __init__(self, root: str | Path, dim: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._data: dict[str, np.ndarray] = {}
        self.dropped: list[str] = []  # damaged chunks removed while loading
        now = time.time()
        for tmp in self.root.glob("tmp-*.npz"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()
        for chunk in sorted(self.root.glob("chunk-*.npz")):
            try:
                with np.load(chunk, allow_pickle=False) as z:
                    keys, feats = z["keys"], z["feats"]
                    if (
                        feats.ndim != 2
                        or len(keys) != len(feats)
                        or (dim is not None and feats.shape[1] != dim)
                    ):
                        raise ValueError(f"arrays of shape {keys.shape} and {feats.shape}")
                    self._data.update(zip(keys.tolist(), feats.astype(np.float32), strict=True))
            except Exception as e:  # BadZipFile, EOFError, zlib.error, ValueError, KeyError, OSError ...
                self.dropped.append(chunk.name)
                warnings.warn(
                    f"feature cache: dropped damaged chunk {chunk} ({type(e).__name__}: {e}); "
                    "its images are recomputed",
                    stacklevel=2,
                )
                with contextlib.suppress(OSError):
                    chunk.unlink()

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> np.ndarray:
        return self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def put(self, keys: list[str], feats: np.ndarray) -> None:
        if not keys:
            return
        feats = np.asarray(feats, dtype=np.float32)
        self._data.update(zip(keys, feats, strict=True))
        name = uuid.uuid4().hex
        tmp, final = self.root / f"tmp-{name}.npz", self.root / f"chunk-{name}.npz"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys), feats=feats)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as e:  # disk full, read-only cache: the run goes on without caching these
            warnings.warn(f"feature cache: could not write {final} ({e})", stacklevel=2)
            tmp.unlink(missing_ok=True)
