"""Image folders: ``root/{train,validation|val,test}/CLASS/*`` or ``root/CLASS/*`` (split here)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from vestis.data.images import is_image_path
from vestis.data.types import DataSet, Sample, Skipped

SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
               "valid": "validation", "test": "test", "testing": "test"}  # fmt: skip


def _scan_classes(root: Path, head: str, split: str | None, ds: DataSet) -> None:
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(class_dir.rglob("*")):
            if f.is_dir() or any(part.startswith(".") for part in f.relative_to(class_dir).parts):
                continue  # hidden files, and everything under hidden folders (.ipynb_checkpoints, ...)
            if is_image_path(f):
                ds.samples.append(Sample(f, {head: class_dir.name}, split))
            else:
                ds.skipped.append(Skipped(str(f), "not an image file extension"))
    for f in sorted(root.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            ds.skipped.append(Skipped(str(f), "file outside a class folder"))


def read_folder(root: str | Path, head: str = "label") -> DataSet:
    """Read a class-per-folder tree. Split folders are recognised by name; otherwise ``split`` is None."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    ds = DataSet([], [head])
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    split_dirs = {p: SPLIT_NAMES[p.name.lower()] for p in subdirs if p.name.lower() in SPLIT_NAMES}
    if split_dirs:
        for d, split in sorted(split_dirs.items()):
            _scan_classes(d, head, split, ds)
        for d in sorted(set(subdirs) - set(split_dirs)):
            ds.skipped.append(Skipped(str(d), "folder beside the split folders ignored"))
        for f in sorted(root.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                ds.skipped.append(Skipped(str(f), "file outside the split folders"))
        if "train" not in split_dirs.values():
            raise ValueError(f"{root}: split folders {sorted(p.name for p in split_dirs)} but no train/")
    else:
        _scan_classes(root, head, None, ds)
    if not ds.samples:
        raise ValueError(f"{root}: no images found (expected root/CLASS/*.jpg or root/train/CLASS/*.jpg)")
    return ds


def assign_splits(
    ds: DataSet, val: float = 0.1, test: float = 0.1, seed: int = 0, by: str | None = None
) -> DataSet:
    """Give every sample without a split one, stratified by the ``by`` head (default: the first), seeded.

    Each class keeps at least one training image; classes too small for a validation/test share get none.
    If the data already has train but no validation split, the validation share is taken from train."""
    by = by or ds.heads[0]
    rng = random.Random(seed)
    groups: dict[str | None, list[Sample]] = defaultdict(list)
    unassigned = [s for s in ds.samples if s.split is None]
    if unassigned:  # all of them, or those a partly split data set left without one
        pool, fractions = unassigned, (("test", test), ("validation", val))
        note = f"split assigned to {len(unassigned)} samples (validation {val:.0%}, test {test:.0%}"
    elif not any(s.split == "validation" for s in ds.samples) and val > 0:
        pool, fractions = [s for s in ds.samples if s.split == "train"], (("validation", val),)
        note = f"validation split carved from train ({val:.0%}"
    else:
        return ds
    if not pool:
        return ds
    for s in pool:
        groups[s.labels.get(by)].append(s)
    for _, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rng.shuffle(members)
        start = 0
        for split, frac in fractions:
            n = int(round(len(members) * frac))
            n = min(n, len(members) - start - 1)  # keep >= 1 for train
            for s in members[start : start + max(n, 0)]:
                s.split = split
            start += max(n, 0)
        for s in members[start:]:
            s.split = "train"
    ds.notes.append(f"{note}, seed {seed}, stratified by {by})")
    return ds
