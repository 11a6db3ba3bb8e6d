"""Image folders: ``root/{train,validation|val,test}/CLASS/*`` or ``root/CLASS/*`` (split here)."""

from __future__ import annotations

import errno
import os
import random
from collections import defaultdict
from pathlib import Path

from vestis.data.images import is_image_path
from vestis.data.types import DataSet, Sample, Skipped

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
    "testing": "test",
}


def _link_problem(path: Path, ancestors: frozenset[str], visited: set[str]) -> str | None:
    """Why a symlink cannot be followed (None when it can): dangling, a loop, or a folder already read."""
    try:
        is_dir = path.is_dir()
        path.stat()
    except FileNotFoundError:
        return "dangling symlink (its target does not exist)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return f"symlink cannot be followed ({e.strerror or e})"
    if not is_dir:
        return None
    real = os.path.realpath(path)
    if real in ancestors:
        return f"symlink loop (points to {real}, a folder it is in)"
    if real in visited:
        return f"symlink to a folder already read ({real})"
    return None


def _entries(directory: Path, ds: DataSet) -> list[Path]:
    """The folder's entries, sorted, hidden ones (``.name``) left out; an unreadable folder is counted."""
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as e:
        ds.skipped.append(Skipped(str(directory), f"folder cannot be read ({e.strerror or e})"))
        return []


def _walk(directory: Path, ancestors: frozenset[str], visited: set[str], ds: DataSet) -> list[Path]:
    """Every regular file below ``directory`` (symlinks followed, loops and dangling links counted in
    ``ds.skipped``), hidden files and everything under hidden folders (.ipynb_checkpoints, ...) left out."""
    files: list[Path] = []
    for p in _entries(directory, ds):
        if p.is_symlink():
            problem = _link_problem(p, ancestors, visited)
            if problem:
                ds.skipped.append(Skipped(str(p), problem))
                continue
        if p.is_dir():
            real = os.path.realpath(p)
            visited.add(real)
            files += _walk(p, ancestors | {real}, visited, ds)
        elif p.is_file():
            files.append(p)
        else:
            ds.skipped.append(Skipped(str(p), "not a regular file"))
    return files


def _scan_classes(
    root: Path, head: str, split: str | None, ds: DataSet, ancestors: frozenset[str], visited: set[str]
) -> None:
    for entry in _entries(root, ds):
        if entry.is_symlink():
            problem = _link_problem(entry, ancestors, visited)
            if problem:
                ds.skipped.append(Skipped(str(entry), problem))
                continue
        if entry.is_dir():
            real = os.path.realpath(entry)
            visited.add(real)
            for f in sorted(_walk(entry, ancestors | {real}, visited, ds)):
                if is_image_path(f):
                    ds.samples.append(Sample(f, {head: entry.name}, split))
                else:
                    ds.skipped.append(Skipped(str(f), "not an image file extension"))
        elif entry.is_file():
            ds.skipped.append(Skipped(str(entry), "file outside a class folder"))
        else:
            ds.skipped.append(Skipped(str(entry), "not a regular file"))


def read_folder(root: str | Path, head: str = "label") -> DataSet:
    """Read a class-per-folder tree. Split folders are recognised by name; otherwise ``split`` is None.

    Symlinks are followed; a dangling symlink, a symlink loop (a link to a folder above it) and a second link
    to a folder already read are skipped and counted in ``skipped`` with the reason, as are files outside the
    class folders and files without an image extension. Hidden files and folders are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    ds = DataSet([], [head])
    top = frozenset({os.path.realpath(root)})
    visited: set[str] = set(top)
    entries = _entries(root, ds)
    subdirs = [p for p in entries if p.is_dir()]
    split_dirs = {p: SPLIT_NAMES[p.name.lower()] for p in subdirs if p.name.lower() in SPLIT_NAMES}
    if split_dirs:
        for d, split in sorted(split_dirs.items()):
            problem = _link_problem(d, top, visited) if d.is_symlink() else None
            if problem:
                ds.skipped.append(Skipped(str(d), problem))
                continue
            real = os.path.realpath(d)
            visited.add(real)
            _scan_classes(d, head, split, ds, top | {real}, visited)
        for d in sorted(set(subdirs) - set(split_dirs)):
            ds.skipped.append(Skipped(str(d), "folder beside the split folders ignored"))
        for f in entries:
            if f.is_dir():
                continue
            if f.is_file():
                ds.skipped.append(Skipped(str(f), "file outside the split folders"))
            else:
                problem = _link_problem(f, top, visited) if f.is_symlink() else None
                ds.skipped.append(Skipped(str(f), problem or "not a regular file"))
        if "train" not in split_dirs.values():
            raise ValueError(f"{root}: split folders {sorted(p.name for p in split_dirs)} but no train/")
    else:
        _scan_classes(root, head, None, ds, top, visited)
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
