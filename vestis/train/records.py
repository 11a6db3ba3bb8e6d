"""What a run records about its data, the same for fast and fine-tuned runs: the ``data`` block of its
checkpoint (:func:`data_info`, with the one data fingerprint of :func:`vestis.data.data_fingerprint` over the
images' contents), and what was left out (``skipped.json`` and the console line counting it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from vestis.data import DataSet, Skipped, data_fingerprint
from vestis.data.hierarchy import learn_hierarchy
from vestis.data.images import file_digest
from vestis.data.resolution import record_native_size
from vestis.models.checkpoint import atomic_write_text
from vestis.models.run_config import lineage
from vestis.train.config import TrainConfig

SKIPPED = "skipped.json"


def set_preprocess(model, cfg: TrainConfig, ds: DataSet) -> str | None:
    """The run's preprocessing options into ``model.preprocess`` (input size, fit, the training images' native
    size, measured); returns a note when a native size was recorded."""
    pre = model.preprocess
    if cfg.input_size is not None:
        pre = replace(pre, input_size=cfg.input_size)
    model.preprocess = replace(pre, fit=cfg.fit)
    native = record_native_size(model, [s.path for s in ds.samples if s.split == "train"], cfg.native_size)
    if native:
        return f"native size {native[0]}x{native[1]} recorded: larger inputs are downscaled to it first"
    return None


def content_digests(ds: DataSet, progress: bool = False) -> list[str | None]:
    """Each sample's content digest (the feature cache's key); None for a file that cannot be read."""
    out: list[str | None] = []
    bar = tqdm(ds.samples, desc="hashing", disable=not progress or len(ds.samples) < 2000, leave=False)
    for s in bar:
        try:
            out.append(file_digest(Path(s.path).read_bytes()))
        except OSError:
            out.append(None)
    return out


def data_info(
    cfg: TrainConfig, ds: DataSet, digests: Sequence[str | None], skipped: int | None = None
) -> dict:
    """The checkpoint's ``data``: source, :func:`vestis.data.load_dataset` arguments (the heads as read), split
    counts, the data fingerprint over ``digests`` (one per sample, :func:`content_digests`; unreadable images
    left out) and, once known, the number of inputs left out."""
    info = {
        "source": str(cfg.data),
        "load": {**cfg.dataset_args(), "labels": ds.heads},
        "counts": {sp: len(ds.split(sp)) for sp in ("train", "validation", "test")},
        "fingerprint": data_fingerprint(ds.samples, digests),
    }
    if skipped is not None:
        info["skipped"] = skipped
    return info


def all_skipped(ds: DataSet, unreadable: dict[str, str]) -> list[Skipped]:
    """What the data loader left out, then the images that could not be read (path -> reason)."""
    return list(ds.skipped) + [Skipped(str(p), r) for p, r in sorted(unreadable.items())]


def write_skipped(run_dir: Path, skipped: list[Skipped]) -> None:
    atomic_write_text(Path(run_dir) / SKIPPED, json.dumps([s.__dict__ for s in skipped], indent=1))


def skipped_line(run_dir: Path, ds: DataSet, unreadable: int) -> str | None:
    """The console line counting everything in ``skipped.json`` (None when nothing was left out)."""
    loader = len(ds.skipped)
    if not loader + unreadable:
        return None
    parts = []
    if unreadable:
        parts.append(f"{unreadable} unreadable image{'s' if unreadable != 1 else ''}")
    if loader:
        parts.append(f"{loader} left out while reading the data")
    return f"skipped {loader + unreadable} inputs: {', '.join(parts)} (listed in {Path(run_dir) / SKIPPED})"


def stored_extras(ds: DataSet, stages, cfg: TrainConfig | None = None) -> dict:
    """What both trainers store beside the options: the class group of each stage (None without stages), the
    label hierarchy learned from the training split (None for one head, or when no head implies another) and,
    for a run that began from or learned from trained models (``--init``, ``--teacher``), their lineage."""
    groups = [{"stage": s.name, "classes": s.group} for s in stages]
    out = {
        "groups": groups if len(groups) > 1 else None,
        "hierarchy": learn_hierarchy(ds.split("train"), ds.heads) if len(ds.heads) > 1 else None,
    }
    if cfg is not None and (cfg.init or cfg.teacher):
        out["lineage"] = {
            "init": lineage(cfg.init) if cfg.init else None,
            "teachers": [lineage(t) for t in cfg.teacher or []],
        }
    return out
