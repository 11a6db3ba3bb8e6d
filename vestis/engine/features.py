"""Pooled features for many images, behind the on-disk cache (fast-mode training, the fine-tuning probe,
evaluation of fast-mode runs, the index).

A cached vector is keyed by the image's content hash and the view (plain or flipped), inside a folder keyed
by what the runner computes (backbone weights, preprocessing, precision: ``runner.fingerprint``), so a second
run, another head or another label column reuses the work. Unreadable images are skipped and reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vestis.data.images import file_digest
from vestis.engine.cache import FeatureCache, default_cache_dir
from vestis.engine.infer import Outputs, infer, l2_normalize, run_batches


@dataclass
class Features:
    feats: np.ndarray  # (N, V, D) float32; rows of failed images are zero
    ok: np.ndarray  # (N,) bool
    errors: dict[int, str] = field(default_factory=dict)
    digests: list[str | None] = field(default_factory=list)


def _runner(model_or_runner, device, precision):
    if hasattr(model_or_runner, "runtime"):  # already a runner
        return model_or_runner
    from vestis.engine.torch_runner import TorchRunner

    return TorchRunner(model_or_runner, device, precision)


def extract_features(
    model,
    paths: list[str | Path],
    *,
    views: tuple[str, ...] = ("plain",),
    batch_size: int = 64,
    workers: int | None = None,
    precision: str = "auto",
    cache: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device="cpu",
    digests: list[str | None] | None = None,
) -> Features:
    """Pooled backbone features for each path and view ('plain', 'flip'), cached on disk. ``model``: a
    :class:`~vestis.models.heads.VestisModel` (run by a TorchRunner on ``device`` in ``precision``) or a
    ready runner (PyTorch or ONNX Runtime). ``digests``: the files' content digests when a previous call
    already read them (``Features.digests``; a None entry is read again), so a second runner over the same
    files does not read and hash them twice."""
    runner = _runner(model, device, precision)
    n, d = len(paths), runner.num_features
    out = Features(np.zeros((n, len(views), d), np.float32), np.zeros(n, bool), {}, [None] * n)
    store = FeatureCache(Path(cache_dir or default_cache_dir()) / runner.fingerprint, d) if cache else None

    todo: list[int] = []  # images with at least one view missing from the cache
    for i, p in enumerate(tqdm(paths, desc="hashing", disable=not progress or n < 2000, leave=False)):
        try:
            known = digests[i] if digests is not None else None
            out.digests[i] = known or file_digest(Path(p).read_bytes())
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
        bar = tqdm(total=len(todo), desc=f"features ({runner.name})", unit="img", disable=not progress)
        pending_keys, pending = [], []
        for r in run_batches(runner, [paths[i] for i in todo], views, batch_size, workers):
            for j, err in r.errors:
                out.errors[todo[j]], out.ok[todo[j]] = err, False
            for j, rows in zip(r.idx.tolist(), r.features, strict=True):
                i = todo[j]
                out.feats[i] = rows
                pending_keys += [f"{out.digests[i]}:{view}" for view in views]
                pending += list(rows)
            bar.update(len(r.idx) + len(r.errors))
            if store is not None and len(pending) >= 2048:  # flush often: a crash loses little work
                store.put(pending_keys, np.stack(pending))
                pending_keys, pending = [], []
        bar.close()
        if store is not None and pending:
            store.put(pending_keys, np.stack(pending))
    return out


def infer_cached(
    runner,
    paths: list[str | Path],
    views: tuple[str, ...] = ("plain",),
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> Outputs:
    """Probabilities and features of files, through the feature cache where the runner can apply its heads to
    cached features (PyTorch: each ensemble member's features cached on their own); otherwise (ONNX Runtime)
    one plain pass of :func:`~vestis.engine.infer.infer`."""
    if not hasattr(runner, "classify"):
        return infer(runner, paths, views, batch_size, workers, progress)
    members = runner.members()
    out = Outputs({h: 0.0 for h in runner.classes}, None, np.ones(len(paths), bool), {})
    parts = []
    for member in members:
        f = extract_features(
            member,
            paths,
            views=views,
            batch_size=batch_size,
            workers=workers,
            cache=cache,
            cache_dir=cache_dir,
            progress=progress,
        )
        for h, p in member.classify(f.feats).items():
            out.probs[h] = out.probs[h] + p / len(members)
        out.ok &= f.ok
        out.errors.update(f.errors)
        parts.append(f.feats)
    if len(parts) == 1:
        out.features = parts[0]
    else:  # as the ensemble graph: members' normalised features concatenated, a unit vector again
        out.features = np.concatenate([l2_normalize(p) for p in parts], -1) / np.sqrt(len(parts))
    for h in out.probs:
        out.probs[h][~out.ok] = 0.0
    return out
