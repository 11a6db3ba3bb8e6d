"""Tests for ``vestis data inspect``: counts, skipped/unreadable items, duplicates, conflicts, leakage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vestis.data.folders import read_folder
from vestis.data.inspect import format_inspection, inspect_dataset
from vestis.data.types import DataSet, Sample, Skipped

CLOTHING = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "clothing-dataset-small"


def jpeg(seed: int, size=(32, 24)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def messy(tmp_path) -> Path:
    """train/test/validation folders with: one image copied under two classes (conflict, same split),
    one copied across train and test (leakage, same class), a truncated JPEG, an empty file, a text file."""
    root = tmp_path / "clothes"
    x, y = jpeg(1), jpeg(2)
    write(root / "train" / "dress" / "a.jpg", x)
    write(root / "train" / "hat" / "b.jpg", x)  # same bytes, other class
    write(root / "train" / "dress" / "d.jpg", y)
    write(root / "test" / "dress" / "c.jpg", y)  # same bytes, other split
    write(root / "train" / "dress" / "e.jpg", jpeg(3))
    write(root / "train" / "hat" / "broken.jpg", jpeg(4, (200, 200))[:400])  # truncated
    write(root / "train" / "shirt" / "empty.jpg", b"")
    write(root / "train" / "shirt" / "f.png", jpeg(5))  # a JPEG named .png still loads
    write(root / "train" / "hat" / "notes.txt", b"not an image")
    write(root / "validation" / "hat" / "g.jpg", jpeg(6))
    return root


def test_inspect_messy_folder(messy):
    ds = read_folder(messy)
    report = inspect_dataset(ds)
    json.dumps(report)  # serialisable as is

    assert report["n_samples"] == 9
    assert report["splits"] == {"train": 7, "validation": 1, "test": 1}
    assert report["heads"]["label"]["classes"] == {
        "dress": {"train": 3, "test": 1},
        "hat": {"train": 2, "validation": 1},
        "shirt": {"train": 2},
    }
    assert report["heads"]["label"]["missing"] == 0

    assert [(Path(k["item"]).name, k["reason"]) for k in report["skipped"]] == [
        ("notes.txt", "not an image file extension")
    ]
    unreadable = {Path(u["item"]).name: u["reason"] for u in report["unreadable"]}
    assert set(unreadable) == {"broken.jpg", "empty.jpg"}
    assert "truncated" in unreadable["broken.jpg"] or "corrupt" in unreadable["broken.jpg"]
    assert unreadable["empty.jpg"] == "empty file"

    dup = report["duplicates"]
    assert (dup["groups"], dup["images"], dup["cross_split"]) == (2, 4, 1)
    assert dup["cross_split_pairs"] == {"train/test": 1}
    assert len(dup["conflicting"]) == 1
    group = dup["conflicting"][0]
    assert len(group["digest"]) == 40
    assert sorted((Path(i["path"]).name, i["labels"]["label"], i["split"]) for i in group["items"]) == [
        ("a.jpg", "dress", "train"),
        ("b.jpg", "hat", "train"),
    ]


def test_format_messy_folder(messy):
    text = format_inspection(inspect_dataset(read_folder(messy)))
    for name in ("dress", "hat", "shirt", "train", "validation", "test"):
        assert name in text
    assert "9 samples" in text
    assert "2 groups of identical images" in text
    assert "1 groups appear in more than one split" in text and "train/test 1" in text
    assert "1 groups have conflicting labels" in text
    assert "a.jpg" in text and "b.jpg" in text and "label=hat" in text
    assert "empty file" in text and "notes.txt" in text and "broken.jpg" in text
    dress_row = next(line for line in text.splitlines() if line.strip().startswith("dress"))
    assert dress_row.split()[1:] == ["3", "0", "1", "4"]  # train, validation, test, total


def test_without_image_check_only_unreadable_bytes_are_listed(messy):
    report = inspect_dataset(read_folder(messy), check_images=False, progress=True)
    assert [Path(u["item"]).name for u in report["unreadable"]] == ["empty.jpg"]
    assert report["duplicates"]["groups"] == 2


def test_missing_files_are_unreadable_and_labels_missing_per_head(tmp_path):
    img = write(tmp_path / "1.jpg", jpeg(1))
    copy = write(tmp_path / "2.jpg", jpeg(1))
    samples = [
        Sample(img, {"articleType": "Shirts", "colour": "Blue"}, "train"),
        Sample(copy, {"articleType": "Shirts", "colour": None}, "test"),  # no colour: no conflict there
        Sample(tmp_path / "gone.jpg", {"articleType": None, "colour": "Red"}, None),
    ]
    skipped = [
        Skipped("line 3", "duplicate id '7' (first on line 2)"),
        Skipped("line 9", "duplicate id '8' (first on line 4)"),
    ]
    report = inspect_dataset(DataSet(samples, ["articleType", "colour"], skipped))
    assert report["heads"]["articleType"] == {"classes": {"Shirts": {"train": 1, "test": 1}}, "missing": 1}
    assert report["heads"]["colour"]["missing"] == 1
    assert report["heads"]["colour"]["classes"]["Red"] == {"unsplit": 1}
    assert report["unreadable"] == [{"item": str(tmp_path / "gone.jpg"), "reason": "file not found"}]
    assert report["duplicates"]["conflicting"] == []
    assert report["duplicates"]["cross_split"] == 1
    text = format_inspection(report)
    assert "head 'colour'" in text and "1 samples without a value" in text
    assert "2  duplicate id '…' (first on line N)" in text  # grouped by reason, ids masked


def test_conflict_on_a_second_head_only(tmp_path):
    a = write(tmp_path / "a.jpg", jpeg(9))
    b = write(tmp_path / "b.jpg", jpeg(9))
    ds = DataSet(
        [
            Sample(a, {"type": "Tee", "colour": "Red"}, "train"),
            Sample(b, {"type": "Tee", "colour": "Blue"}, "train"),
        ],
        ["type", "colour"],
    )
    dup = inspect_dataset(ds)["duplicates"]
    assert (dup["groups"], dup["cross_split"], len(dup["conflicting"])) == (1, 0, 1)


def test_many_classes_are_cut_off_in_the_text(tmp_path):
    img = write(tmp_path / "x.jpg", jpeg(0))
    samples = [Sample(img, {"label": f"class{i:03d}"}, "train") for i in range(75)]
    report = inspect_dataset(DataSet(samples, ["label"]), check_images=False)
    assert len(report["heads"]["label"]["classes"]) == 75
    assert report["duplicates"]["groups"] == 1 and report["duplicates"]["images"] == 75
    text = format_inspection(report)
    assert "class000" in text and "class059" in text and "class060" not in text.split("… 15 more")[0]
    assert "… 15 more classes" in text
    assert "… 64 more conflicting groups" not in text  # a single group, shown once
    assert text.count("x.jpg") == 75  # the one conflicting group lists all its members


def test_clean_and_empty_datasets(tmp_path):
    write(tmp_path / "a" / "1.jpg", jpeg(1))
    write(tmp_path / "b" / "2.jpg", jpeg(2))
    report = inspect_dataset(read_folder(tmp_path))
    assert report["unreadable"] == [] and report["duplicates"]["groups"] == 0
    assert report["splits"] == {"unsplit": 2}
    text = format_inspection(report)
    assert "no identical images" in text and "unreadable images: none" in text
    empty = inspect_dataset(DataSet([], ["label"]))
    assert empty["n_samples"] == 0
    assert "0 samples" in format_inspection(empty)


@pytest.mark.integration
def test_real_clothing_dataset_counts():
    if not CLOTHING.is_dir():
        pytest.skip(f"real data not present at {CLOTHING}")
    report = inspect_dataset(read_folder(CLOTHING), check_images=False)
    assert report["splits"] == {"train": 3068, "validation": 341, "test": 372}
    assert report["n_samples"] == 3781
    assert len(report["heads"]["label"]["classes"]) == 10
    assert "t-shirt" in format_inspection(report)
