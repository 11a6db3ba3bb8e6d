"""A confusion matrix that stays readable at 140 classes: the top confusions listed, the full matrix as CSV,
and the classes a heat map can show (the most frequent ones)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

MAX_PLOT_CLASSES = 30  # the PNG shows at most this many classes (the most frequent by true support)
N_TOP_CONFUSIONS = 20


def top_confusions(confusion, class_names: list[str], k: int = N_TOP_CONFUSIONS) -> list[dict]:
    """The ``k`` largest off-diagonal cells, largest first (ties: true class, then predicted, in class order):
    ``{"true", "pred", "count", "share"}``, ``share`` being the fraction of the true class's images."""
    cm = np.asarray(confusion, dtype=np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows = cm.sum(axis=1)
    i, j = np.nonzero(off)
    order = np.lexsort((j, i, -off[i, j]))[: max(int(k), 0)]
    return [
        {
            "true": class_names[int(i[o])],
            "pred": class_names[int(j[o])],
            "count": int(off[i[o], j[o]]),
            "share": float(off[i[o], j[o]] / rows[i[o]]),
        }
        for o in order
    ]


def frequent_classes(confusion, limit: int = MAX_PLOT_CLASSES) -> list[int] | None:
    """Indices (in class order) of the ``limit`` classes with the most true images (ties: class order), or
    None when there are no more classes than that (show them all)."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.shape[0] <= limit:
        return None
    support = cm.sum(axis=1)
    return sorted(np.argsort(-support, kind="stable")[:limit].tolist())


def write_confusion_csv(confusion, class_names: list[str], path: Path) -> Path:
    """The full matrix: a header row of predicted class names, then one row per true class (its name
    first), raw counts."""
    cm = np.asarray(confusion, dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, cm.tolist(), strict=True):
            w.writerow([name, *row])
    return path


def read_confusion_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(class names, matrix) back from :func:`write_confusion_csv`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    if [r[0] for r in rows[1:]] != names:
        raise ValueError(f"{path}: row names differ from the column names")
    return names, np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64).reshape(
        len(names), len(names)
    )
