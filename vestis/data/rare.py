"""Rare classes: fold the classes with too few training images into one class, ``other``."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from vestis.data.types import DataSet

OTHER = "other"


def fold_rare_classes(ds: DataSet, min_count: int, other: str = OTHER) -> DataSet:
    """A new DataSet where, per head, each class with fewer than ``min_count`` training images is relabelled
    ``other`` in every split (so a test image of a folded class is scored as ``other``). What was folded is
    listed in ``notes``. A class literally named ``other`` is merged with the folded ones (said so)."""
    folded: dict[str, set[str]] = {}
    for head in ds.heads:
        counts = Counter(s.labels.get(head) for s in ds.split("train") if s.labels.get(head) is not None)
        rare = {c for c, k in counts.items() if k < min_count and c != other}
        # classes seen only outside training have no training images either: folded too
        rare |= {s.labels[head] for s in ds.samples if s.labels.get(head) is not None} - set(counts)
        rare.discard(other)
        if rare:
            folded[head] = rare
    if not folded:
        return ds
    samples = []
    for s in ds.samples:
        labels = {h: (other if v is not None and v in folded.get(h, ()) else v) for h, v in s.labels.items()}
        samples.append(replace(s, labels=labels) if labels != s.labels else s)
    notes = list(ds.notes)
    for head, rare in folded.items():
        n = sum(1 for s in ds.samples if s.labels.get(head) in rare)
        merged = (
            " (merged with an existing class 'other')"
            if any(s.labels.get(head) == other for s in ds.samples)
            else ""
        )
        names = sorted(rare)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        notes.append(
            f"{head}: {len(rare)} classes with < {min_count} training images folded into {other!r}{merged} "
            f"({n} images): {shown}"
        )
    return DataSet(samples=samples, heads=list(ds.heads), skipped=list(ds.skipped), notes=notes)
