"""Data layer: folders, catalogues, robust image loading, splits."""

from __future__ import annotations

from pathlib import Path

from vestis.data.folders import assign_splits, read_folder
from vestis.data.images import ImageError, load_image
from vestis.data.rare import fold_rare_classes
from vestis.data.types import DataSet, Sample, Skipped, data_fingerprint

__all__ = [
    "DataSet",
    "ImageError",
    "Sample",
    "Skipped",
    "assign_splits",
    "data_fingerprint",
    "fold_rare_classes",
    "load_dataset",
    "load_image",
    "read_folder",
]


def load_dataset(
    source: str | Path,
    images: str | Path | None = None,
    labels: list[str] | None = None,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    split: str | None = None,
    fold_rare: int = 0,
    **catalog_options,
) -> DataSet:
    """A folder tree or a catalogue CSV, with every sample given a split.

    ``split``: None (folder splits, else a seeded stratified split) or 'year:even' (catalogues: even years
    train, odd years test; validation is then carved from train). ``catalog_options`` go to
    :func:`vestis.data.catalog.read_catalog` (id_column, path_column, pattern, na_values). ``fold_rare``: classes
    with fewer training images than this become one class ``other`` in every split (:func:`~vestis.data.rare.fold_rare_classes`)."""
    source = Path(source)
    if source.is_dir():
        if catalog_options:
            raise ValueError(f"{source} is a folder: {sorted(catalog_options)} apply to catalogue CSVs only")
        if labels and len(labels) > 1:
            raise ValueError(
                "an image folder has one label (the folder name); use a catalogue CSV for several"
            )
        ds = read_folder(source, head=(labels or ["label"])[0])
    elif source.suffix.lower() in (".csv", ".tsv", ".txt") and source.is_file():
        from vestis.data.catalog import read_catalog, year_split

        ds = read_catalog(source, images=images, labels=labels or ["articleType"], **catalog_options)
        if split and split.startswith("year:"):
            ds = year_split(ds, rule=split.split(":", 1)[1])
    elif not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    else:
        raise ValueError(f"{source}: expected an image folder or a catalogue .csv")
    if split and not split.startswith("year:"):
        raise ValueError(f"unknown split rule {split!r}; known: year:even")
    ds = assign_splits(ds, val=val, test=test, seed=seed)
    return fold_rare_classes(ds, fold_rare) if fold_rare > 1 else ds
