"""From images to probabilities and embeddings, with any runner (PyTorch or ONNX Runtime). No torch here.

A runner is a callable ``runner(crops) -> ({head: probs (N, C)}, features (N, D))`` with ``classes``,
``preprocess``, ``fingerprint``, ``num_features`` and ``name`` (:class:`~vestis.engine.torch_runner.TorchRunner`,
:class:`~vestis.engine.ort_runner.OnnxRunner`). Test-time views ('plain', 'flip') are run as extra images
and averaged: probabilities by their mean, embeddings by the mean of the features, then L2-normalised."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from vestis.engine.loader import ImageSet, iterate_batches
from vestis.models.preprocess import load_size, resolve_transform


@dataclass
class Result:
    """One batch's outputs, rows in ``idx`` order (positions in the input list)."""

    idx: np.ndarray  # (B,)
    probs: dict[str, np.ndarray]  # head -> (B, C), averaged over views
    features: np.ndarray  # (B, V, D) raw pooled features per view
    errors: list[tuple[int, str]]  # (position, reason) of inputs that failed in this batch

    @property
    def embeddings(self) -> np.ndarray:
        """(B, D) float32: the views' mean feature, L2-normalised."""
        return l2_normalize(self.features.mean(1))


@dataclass
class Outputs:
    """Everything for a list of inputs; rows of failed inputs are zero and ``ok`` is False there."""

    probs: dict[str, np.ndarray]
    features: np.ndarray  # (N, V, D)
    ok: np.ndarray  # (N,) bool
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def embeddings(self) -> np.ndarray:
        return l2_normalize(self.features.mean(1))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def image_set(runner, items: list, views=("plain",), cache: list | None = None) -> ImageSet:
    """The loader's dataset for ``items`` (paths or encoded bytes) as ``runner``'s model wants them."""
    return ImageSet(items, resolve_transform(runner.preprocess), load_size(runner.preprocess), views, cache)


def _flat(x):
    """(B, V, ...) -> (B * V, ...) (per member for an ensemble)."""
    if isinstance(x, tuple):
        return tuple(_flat(t) for t in x)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def run_batches(
    runner,
    data: list | ImageSet,
    views=("plain",),
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "images",
) -> Iterator[Result]:
    """Results batch by batch, in input order. ``data``: paths/bytes or a ready :class:`ImageSet` (its views
    win). An input that cannot be read is reported in its batch's ``errors``; the others still run."""
    ds = data if isinstance(data, ImageSet) else image_set(runner, list(data), views)
    v = len(ds.views)
    bar = tqdm(
        total=len(ds), unit="img", desc=desc, disable=not progress or len(ds) <= batch_size, leave=False
    )
    try:
        for batch in iterate_batches(ds, batch_size, workers):
            if batch.x is None:
                probs = {h: np.zeros((0, len(c)), np.float32) for h, c in runner.classes.items()}
                feats = np.zeros((0, v, runner.num_features), np.float32)
            else:
                p, f = runner(_flat(batch.x))
                b = len(batch.idx)
                probs = {h: q.reshape(b, v, -1).mean(1) for h, q in p.items()}
                feats = f.reshape(b, v, -1)
            bar.update(len(batch))
            yield Result(batch.idx, probs, feats, batch.errors)
    finally:
        bar.close()


def infer(
    runner,
    data: list | ImageSet,
    views=("plain",),
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "images",
) -> Outputs:
    """All of :func:`run_batches` collected into arrays."""
    n = len(data)
    v = len(data.views) if isinstance(data, ImageSet) else len(views)
    out = Outputs(
        {h: np.zeros((n, len(c)), np.float32) for h, c in runner.classes.items()},
        np.zeros((n, v, runner.num_features), np.float32),
        np.zeros(n, bool),
    )
    for r in run_batches(runner, data, views, batch_size, workers, progress, desc):
        for h, p in r.probs.items():
            out.probs[h][r.idx] = p
        out.features[r.idx] = r.features
        out.ok[r.idx] = True
        out.errors.update(r.errors)
    return out


def top1(probs: dict[str, np.ndarray], ok: np.ndarray, labels: dict[str, list], classes: dict) -> dict:
    """Top-1 per head of ``probs`` against class-name ``labels`` ({head: one label per row}), over the rows that
    were read (``ok``) and whose label the head knows -> {"acc": {head: accuracy or None}, "n": {head: rows}}."""
    acc, n = {}, {}
    for h, lab in labels.items():
        index = {c: k for k, c in enumerate(classes[h])}
        rows = [(i, index[c]) for i, c in enumerate(lab) if ok[i] and c in index]
        n[h] = len(rows)
        if rows:
            i, y = np.array(rows).T
            acc[h] = float((probs[h][i].argmax(1) == y).mean())
        else:
            acc[h] = None
    return {"acc": acc, "n": n}
