"""Tests for image-folder reading, seeded stratified splits and ``load_dataset`` (all synthetic, tmp_path)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from vestis.data import load_dataset
from vestis.data.folders import assign_splits, read_folder
from vestis.data.types import DataSet, Sample


def touch(path: Path, data: bytes = b"x") -> Path:
    """Files only need the right name here: read_folder never opens them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree(root: Path, spec: dict[str, int]) -> Path:
    """``{"train/dress": 3, "hat": 2}`` -> root/train/dress/0.jpg .. 2.jpg, root/hat/0.jpg, 1.jpg."""
    for folder, n in spec.items():
        for i in range(n):
            touch(root / folder / f"{i}.jpg")
    return root


def by_split(ds: DataSet) -> Counter:
    return Counter((s.split, s.labels["label"]) for s in ds.samples)


def reasons(ds: DataSet) -> dict[str, str]:
    return {Path(s.item).name: s.reason for s in ds.skipped}


# -------------------------------------------------------------------------------------------- read_folder


def test_split_folders_with_val_alias(tmp_path):
    tree(tmp_path, {"train/dress": 3, "train/hat": 2, "val/dress": 1, "val/hat": 1, "test/hat": 2})
    ds = read_folder(tmp_path)
    assert ds.heads == ["label"]
    assert by_split(ds) == {
        ("train", "dress"): 3,
        ("train", "hat"): 2,
        ("validation", "dress"): 1,
        ("validation", "hat"): 1,
        ("test", "hat"): 2,
    }
    assert ds.classes("label") == ["dress", "hat"]
    assert ds.skipped == []
    assert all(s.path.is_file() for s in ds.samples)


def test_split_folder_names_are_case_insensitive_and_validation_spelled_out(tmp_path):
    tree(tmp_path, {"Train/a": 1, "Validation/a": 1, "TEST/a": 1})
    assert {s.split for s in read_folder(tmp_path).samples} == {"train", "validation", "test"}


def test_flat_class_folders_have_no_split(tmp_path):
    tree(tmp_path, {"shirt": 2, "shoes": 3})
    ds = read_folder(tmp_path, head="kind")
    assert ds.heads == ["kind"]
    assert Counter(s.labels["kind"] for s in ds.samples) == {"shirt": 2, "shoes": 3}
    assert {s.split for s in ds.samples} == {None}


def test_nested_files_belong_to_the_top_class_folder(tmp_path):
    touch(tmp_path / "shirt" / "2020" / "a.png")
    touch(tmp_path / "shirt" / "b.JPEG")
    ds = read_folder(tmp_path)
    assert sorted(s.path.name for s in ds.samples) == ["a.png", "b.JPEG"]
    assert {s.labels["label"] for s in ds.samples} == {"shirt"}


def test_non_images_and_loose_files_are_skipped_with_reasons(tmp_path):
    tree(tmp_path, {"train/dress": 2})
    touch(tmp_path / "train" / "dress" / "notes.txt")
    touch(tmp_path / "train" / "loose.jpg")  # inside a split folder but outside any class
    touch(tmp_path / "README.md")  # beside the split folders
    (tmp_path / "extras").mkdir()
    ds = read_folder(tmp_path)
    got = reasons(ds)
    assert "extension" in got["notes.txt"]
    assert "outside a class folder" in got["loose.jpg"]
    assert "outside the split folders" in got["README.md"]
    assert "beside the split folders" in got["extras"]
    assert len(ds.samples) == 2


def test_flat_loose_files_are_skipped(tmp_path):
    tree(tmp_path, {"hat": 1})
    touch(tmp_path / "stray.jpg")
    touch(tmp_path / "hat" / "labels.csv")
    got = reasons(read_folder(tmp_path))
    assert got == {"stray.jpg": "file outside a class folder", "labels.csv": "not an image file extension"}


def test_hidden_files_and_folders_are_ignored(tmp_path):
    tree(tmp_path, {"train/dress": 1})
    touch(tmp_path / "train" / "dress" / ".DS_Store")
    touch(tmp_path / "train" / "dress" / "._0.jpg")  # macOS resource fork
    touch(tmp_path / "train" / "dress" / ".ipynb_checkpoints" / "0-checkpoint.jpg")
    touch(tmp_path / "train" / ".hidden_class" / "a.jpg")
    touch(tmp_path / ".git" / "config")
    touch(tmp_path / ".DS_Store")
    ds = read_folder(tmp_path)
    assert [s.path.name for s in ds.samples] == ["0.jpg"]
    assert ds.skipped == []


needs_symlinks = pytest.mark.skipif(
    not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks"
)


@needs_symlinks
def test_symlink_loops_and_dangling_links_are_counted_not_followed_forever(tmp_path):
    root = tree(tmp_path / "data", {"train/dress": 2, "train/hat": 1, "test/hat": 1})
    os.symlink("..", root / "train" / "dress" / "up")  # a loop: back to train/
    os.symlink(root, root / "train" / "hat" / "root")  # a loop: back to the data root (absolute)
    os.symlink("me", root / "train" / "hat" / "me")  # a link to itself (ELOOP)
    os.symlink("gone.jpg", root / "train" / "dress" / "dead.jpg")  # dangling
    os.symlink(root / "test", root / "test" / "loop_class")  # a class folder that is a loop
    os.symlink(tmp_path / "nowhere", root / "test" / "dead_class")  # a dangling class folder
    ds = read_folder(root)
    assert by_split(ds) == {("train", "dress"): 2, ("train", "hat"): 1, ("test", "hat"): 1}
    got = {str(Path(s.item).relative_to(root)): s.reason for s in ds.skipped}
    assert got == {
        "train/dress/up": got["train/dress/up"],
        "train/hat/root": got["train/hat/root"],
        "train/hat/me": "symlink loop",
        "train/dress/dead.jpg": "dangling symlink (its target does not exist)",
        "test/loop_class": got["test/loop_class"],
        "test/dead_class": "dangling symlink (its target does not exist)",
    }
    for loop in ("train/dress/up", "train/hat/root", "test/loop_class"):
        assert got[loop].startswith("symlink loop"), loop


@needs_symlinks
def test_symlinked_folders_are_followed_once(tmp_path):
    elsewhere = tree(tmp_path / "elsewhere", {"more": 2})
    root = tree(tmp_path / "data", {"shirt": 1, "shoes": 1})
    os.symlink(elsewhere / "more", root / "shirt" / "more")  # images kept in another folder: followed
    os.symlink(elsewhere / "more", root / "shirt" / "again")  # the same folder a second time: counted
    os.symlink(elsewhere / "more" / "0.jpg", root / "shoes" / "linked.jpg")  # a linked file is an image
    ds = read_folder(root)
    assert Counter(s.labels["label"] for s in ds.samples) == {"shirt": 3, "shoes": 2}
    assert [s.reason.split(" (")[0] for s in ds.skipped] == ["symlink to a folder already read"]


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_folder(tmp_path / "nope")
    touch(tmp_path / "file.jpg")
    with pytest.raises(FileNotFoundError):
        read_folder(tmp_path / "file.jpg")


def test_empty_root_and_no_images(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        read_folder(tmp_path)
    touch(tmp_path / "dress" / "readme.txt")
    with pytest.raises(ValueError, match="no images"):
        read_folder(tmp_path)


def test_split_folders_without_train(tmp_path):
    tree(tmp_path, {"test/dress": 2})
    with pytest.raises(ValueError, match="no train"):
        read_folder(tmp_path)


# ------------------------------------------------------------------------------------------ assign_splits


def flat(n_per_class: dict[str, int]) -> DataSet:
    samples = [Sample(Path(f"{c}/{i}.jpg"), {"label": c}) for c, n in n_per_class.items() for i in range(n)]
    return DataSet(samples, ["label"])


def split_of(ds: DataSet) -> dict[str, str | None]:
    return {str(s.path): s.split for s in ds.samples}


def test_assign_splits_is_seeded():
    a = split_of(assign_splits(flat({"a": 40, "b": 30}), seed=3))
    b = split_of(assign_splits(flat({"a": 40, "b": 30}), seed=3))
    c = split_of(assign_splits(flat({"a": 40, "b": 30}), seed=4))
    assert a == b
    assert a != c
    assert Counter(a.values()) == Counter(c.values())  # same sizes, different members


def test_assign_splits_is_stratified_with_expected_shares():
    ds = assign_splits(flat({"a": 50, "b": 20, "c": 10}), val=0.2, test=0.1, seed=0)
    counts = by_split(ds)
    assert (counts["test", "a"], counts["validation", "a"], counts["train", "a"]) == (5, 10, 35)
    assert (counts["test", "b"], counts["validation", "b"], counts["train", "b"]) == (2, 4, 14)
    assert (counts["test", "c"], counts["validation", "c"], counts["train", "c"]) == (1, 2, 7)
    assert any("seed 0" in n for n in ds.notes)


def test_every_class_keeps_a_training_image():
    ds = assign_splits(flat({"one": 1, "two": 2, "three": 3}), val=0.4, test=0.4, seed=1)
    counts = by_split(ds)
    for c in ("one", "two", "three"):
        assert counts["train", c] >= 1
    assert counts["train", "one"] == 1 and counts["test", "one"] == 0
    assert all(s.split in ("train", "validation", "test") for s in ds.samples)


def test_existing_splits_are_left_alone():
    ds = flat({"a": 10})
    for i, s in enumerate(ds.samples):
        s.split = ("train", "validation", "test")[i % 3]
    before = split_of(ds)
    assert split_of(assign_splits(ds, seed=9)) == before
    assert ds.notes == []


def test_validation_carved_from_train_when_only_train_and_test():
    ds = flat({"a": 20, "b": 10})
    for s in ds.samples:
        s.split = "test" if s.path.name in ("0.jpg", "1.jpg") else "train"
    tests_before = {str(s.path) for s in ds.samples if s.split == "test"}
    assign_splits(ds, val=0.2, seed=0)
    counts = by_split(ds)
    assert {str(s.path) for s in ds.samples if s.split == "test"} == tests_before
    assert (counts["validation", "a"], counts["train", "a"]) == (4, 14)
    assert (counts["validation", "b"], counts["train", "b"]) == (2, 6)
    assert any("carved from train" in n for n in ds.notes)


def test_no_validation_carved_when_val_is_zero():
    ds = flat({"a": 10})
    for s in ds.samples:
        s.split = "train"
    assign_splits(ds, val=0.0)
    assert {s.split for s in ds.samples} == {"train"}


def test_samples_without_a_split_in_a_partly_split_set_get_one():
    ds = flat({"a": 20})
    for s in ds.samples[:10]:
        s.split = "train"
    assign_splits(ds, val=0.2, test=0.2, seed=0)
    assert all(s.split is not None for s in ds.samples)
    assert {s.split for s in ds.samples[:10]} == {"train"}  # the given ones unchanged
    assert Counter(s.split for s in ds.samples[10:]) == {"train": 6, "validation": 2, "test": 2}


def test_assign_splits_by_another_head():
    samples = [Sample(Path(f"{i}.jpg"), {"colour": "red", "kind": k}) for i, k in enumerate("aaaaaaaaab" * 2)]
    ds = assign_splits(DataSet(samples, ["colour", "kind"]), val=0.25, test=0.25, seed=0, by="kind")
    kinds = Counter((s.split, s.labels["kind"]) for s in ds.samples)
    assert kinds["train", "b"] >= 1
    assert kinds["test", "a"] == 4 and kinds["validation", "a"] == 4  # 18 * 0.25 = 4.5 -> 4


# ----------------------------------------------------------------------------------------- load_dataset


def test_load_dataset_on_a_folder(tmp_path):
    tree(tmp_path, {"dress": 30, "hat": 20})
    ds = load_dataset(tmp_path, seed=0)
    counts = by_split(ds)
    assert (counts["test", "dress"], counts["validation", "dress"], counts["train", "dress"]) == (3, 3, 24)
    assert (counts["test", "hat"], counts["validation", "hat"], counts["train", "hat"]) == (2, 2, 16)
    assert split_of(load_dataset(tmp_path, seed=0)) == split_of(ds)


def test_load_dataset_folder_keeps_given_splits(tmp_path):
    tree(tmp_path, {"train/dress": 10, "test/dress": 2})
    ds = load_dataset(tmp_path, labels=["garment"], val=0.2)
    assert ds.heads == ["garment"]
    assert Counter(s.split for s in ds.samples) == {"train": 8, "validation": 2, "test": 2}
    with pytest.raises(ValueError, match="one label"):
        load_dataset(tmp_path, labels=["a", "b"])


def test_load_dataset_on_a_csv(tmp_path):
    rows = ["id,gender,articleType,year"]
    for i in range(20):
        rows.append(f"{i},{'Men' if i % 2 else 'Women'},{'Shirts' if i < 12 else 'Jeans'},{2010 + i % 4}")
    rows.append("99,Men,Shirts,2012")  # no image file
    (tmp_path / "styles.csv").write_text("\n".join(rows) + "\n")
    for i in range(20):
        touch(tmp_path / "images" / f"{i}.jpg")
    ds = load_dataset(tmp_path / "styles.csv", labels=["articleType", "gender"], seed=0)
    assert ds.heads == ["articleType", "gender"]
    assert len(ds.samples) == 20
    assert [s.reason for s in ds.skipped] == ["image missing"]
    assert all(s.split in ("train", "validation", "test") for s in ds.samples)
    assert Counter(s.labels["articleType"] for s in ds.samples) == {"Shirts": 12, "Jeans": 8}
    assert ds.samples[0].path == tmp_path / "images" / "0.jpg"

    by_year = load_dataset(tmp_path / "styles.csv", split="year:even", val=0.25)
    for s in by_year.samples:
        if int(s.meta["year"]) % 2:
            assert s.split == "test"
        else:
            assert s.split in ("train", "validation")
    assert any(s.split == "validation" for s in by_year.samples)


def test_load_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.csv")
    touch(tmp_path / "x.json")
    with pytest.raises(ValueError, match="expected an image folder"):
        load_dataset(tmp_path / "x.json")
    tree(tmp_path / "d", {"a": 2})
    with pytest.raises(ValueError, match="unknown split rule"):
        load_dataset(tmp_path / "d", split="random")
