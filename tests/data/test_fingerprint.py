"""The one data fingerprint shared by fast and fine-tuned runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vestis.data import Sample, data_fingerprint


def samples() -> list[Sample]:
    return [
        Sample(Path("a/1.jpg"), {"type": "shirt"}, "train"),
        Sample(Path("a/2.jpg"), {"type": "hat", "colour": None}, "validation"),
        Sample(Path("b/3.jpg"), {"type": "shirt"}, "test"),
    ]


def test_definition_by_path():
    s = samples()
    lines = sorted(f"{x.path}|{x.split}|{json.dumps(x.labels, sort_keys=True)}\n" for x in s)
    assert data_fingerprint(s) == hashlib.sha1("".join(lines).encode()).hexdigest()[:16]
    assert len(data_fingerprint(s)) == 16


def test_order_does_not_matter_but_splits_labels_and_files_do():
    s = samples()
    fp = data_fingerprint(s)
    assert data_fingerprint(list(reversed(s))) == fp
    changed = samples()
    changed[0].split = "validation"
    assert data_fingerprint(changed) != fp
    changed = samples()
    changed[1].labels = {"colour": None, "type": "shirt"}
    assert data_fingerprint(changed) != fp
    assert data_fingerprint(s[:2]) != fp


def test_content_digests_replace_paths_and_unreadable_images_are_left_out():
    s = samples()
    digests = ["d1", "d2", "d3"]
    fp = data_fingerprint(s, digests)
    moved = samples()
    for x in moved:
        x.path = Path("elsewhere") / x.path.name
    assert data_fingerprint(moved, digests) == fp  # the same images moved: the same data
    assert data_fingerprint(s, ["d1", "d2", "dX"]) != fp
    assert data_fingerprint(s, ["d1", "d2", None]) == data_fingerprint(s[:2], digests[:2])
    assert data_fingerprint(s, digests) != data_fingerprint(s)
    with pytest.raises(ValueError, match="digests"):
        data_fingerprint(s, digests[:2])
