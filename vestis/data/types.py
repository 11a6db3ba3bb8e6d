"""Plain data types shared by the data layer and everything downstream."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "validation", "test")


@dataclass
class Sample:
    """One image and its labels. ``labels`` maps a head (label column) to a class name,
    or to ``None`` when the value is missing for that head (excluded from that head's training)."""

    path: Path
    labels: dict[str, str | None] = field(default_factory=dict)
    split: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class Skipped:
    """An input that was left out, and why (counted and reported, never silently dropped)."""

    item: str
    reason: str


@dataclass
class DataSet:
    """Samples plus everything the loader had to leave out or repair on the way."""

    samples: list[Sample]
    heads: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def classes(self, head: str) -> list[str]:
        return sorted({s.labels[head] for s in self.samples if s.labels.get(head) is not None})


def data_fingerprint(samples: Sequence[Sample], digests: Sequence[str | None] | None = None) -> str:
    """The one data fingerprint of a run (fast and fine-tuned alike): 16 hex digits of a SHA-1.

    One line per sample, ``f"{key}|{split}|{labels}"``, where ``key`` is the image's content digest when
    ``digests`` is given (one per sample, in order; samples whose digest is None or empty could not be read
    and are left out), else the path as given (``str(sample.path)``), and ``labels`` is
    ``json.dumps(sample.labels, sort_keys=True)``. The lines are sorted (the order of the samples does not
    matter) and joined with newlines, each line ending in one. With digests the fingerprint names the data
    itself (moved or renamed files keep it); without, it names the file list."""
    if digests is not None and len(digests) != len(samples):
        raise ValueError(f"{len(digests)} digests for {len(samples)} samples")
    keys = [str(s.path) for s in samples] if digests is None else list(digests)
    lines = sorted(
        f"{key}|{s.split}|{json.dumps(s.labels, sort_keys=True)}\n"
        for s, key in zip(samples, keys, strict=True)
        if key
    )
    return hashlib.sha1("".join(lines).encode()).hexdigest()[:16]
