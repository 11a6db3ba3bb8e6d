"""Plain data types shared by the data layer and everything downstream."""

from __future__ import annotations

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
