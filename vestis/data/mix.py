"""Add a product catalogue's images to a class-per-folder training set (``vestis data mix``).

A shop with a photo model and a catalogue: the catalogue's label values (``articleType``: Tshirts, Track Pants…)
are mapped onto the folder's classes (t-shirt, pants…), rows can be filtered on any column (``gender=Men,Women``)
and capped per class (a seeded sample), and the result is a new folder: the original layout, every split
untouched, plus ``catalogue-*`` images in ``train/CLASS/``. Files are symlinked (nothing is duplicated) or copied
(``copy=True``: a folder that can move to another machine). Rows whose image is missing are skipped by the
catalogue reader and counted; a mapping onto a class the folder does not have is an error."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from vestis.data.catalog import read_catalog
from vestis.data.folders import read_folder
from vestis.data.types import DataSet, Sample


def parse_mapping(spec: str) -> dict[str, str]:
    """``"Tshirts=t-shirt,Track Pants=pants"`` (or ``;`` between pairs), or the path of a JSON file holding one
    object {catalogue value: class} → that dict. Raises ValueError naming the faulty pair or file."""
    path = Path(spec)
    if spec.endswith(".json") or "=" not in spec:  # a file (never stat a long list of pairs: ENAMETOOLONG)
        try:
            mapping = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            hint = "" if spec.endswith(".json") else "; or give VALUE=CLASS pairs, e.g. 'Tshirts=t-shirt'"
            raise ValueError(f"mapping {spec!r}: not a readable JSON file ({exc}){hint}") from exc
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise ValueError(
                f'mapping {spec}: expected one JSON object of strings, {{"Tshirts": "t-shirt", ...}}'
            )
        pairs = list(mapping.items())
    else:
        pairs = []
        for part in (p for p in spec.replace(";", ",").split(",") if p.strip()):
            value, sep, cls = part.partition("=")
            if not sep or not value.strip() or not cls.strip():
                raise ValueError(f"mapping {part.strip()!r}: expected VALUE=CLASS, e.g. 'Tshirts=t-shirt'")
            pairs.append((value, cls))
    mapping = {k.strip(): v.strip() for k, v in pairs}
    if not mapping:
        raise ValueError("empty mapping: give VALUE=CLASS pairs, e.g. 'Tshirts=t-shirt,Jeans=pants'")
    return mapping


def parse_where(specs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``["gender=Men,Women", "usage=Casual"]`` → {column: accepted values}."""
    where = {}
    for spec in specs:
        column, sep, values = spec.partition("=")
        accepted = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not column.strip() or not accepted:
            raise ValueError(f"--where {spec!r}: expected COLUMN=VALUE[,VALUE...], e.g. 'gender=Men,Women'")
        where[column.strip()] = accepted
    return where


def catalogue_pools(
    samples: Sequence[Sample],
    mapping: Mapping[str, str],
    column: str,
    where: Mapping[str, Sequence[str]] | None = None,
    exclude: Iterable[str | Path] = (),
) -> dict[str, list[Sample]]:
    """{class: the catalogue rows mapped onto it}, sorted by path (the same pools every run); rows whose
    ``where`` columns hold other values, or that ``exclude`` names (held-out rows: the image's path as read,
    its file name, or the row's ``id``), are left out."""
    skip = {str(p) for p in exclude}
    pools: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: str(s.path)):
        fields = {**s.meta, **{k: v for k, v in s.labels.items() if v is not None}}
        cls = mapping.get(fields.get(column, ""))
        if cls is None or _excluded(s, skip):
            continue
        if all(fields.get(col) in accepted for col, accepted in (where or {}).items()):
            pools.setdefault(cls, []).append(s)
    return pools


def mirror_folder(folder: str | Path, out: str | Path, copy: bool = False) -> list[str]:
    """Recreate ``folder``'s image folder under ``out`` (which must not exist): every image the folder reader
    accepts, symlinked (or copied), at the same relative path. Returns the folder's classes."""
    folder, out = Path(folder), Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: exists (give a new folder)")
    ds = read_folder(folder)
    _mirror(ds, folder, out, copy)
    return ds.classes(ds.heads[0])


def add_rows(
    train_dir: str | Path,
    pools: Mapping[str, Sequence[Sample]],
    per_class: int | None,
    seed: int | np.random.Generator = 0,
    copy: bool = False,
) -> dict[str, int]:
    """Place up to ``per_class`` (None: all) seeded rows of each pool in ``train_dir/CLASS/catalogue-NAME``;
    returns {class: images added}. Classes are drawn in sorted order from one generator (``seed`` may be one)."""
    rng = np.random.default_rng(seed)
    added = {}
    for cls in sorted(pools):
        rows = pools[cls]
        n = len(rows) if per_class is None else min(per_class, len(rows))
        (Path(train_dir) / cls).mkdir(parents=True, exist_ok=True)
        for i in sorted(rng.choice(len(rows), n, replace=False)):
            path = Path(rows[i].path)
            target = Path(train_dir) / cls / f"catalogue-{path.name}"
            k = 1
            while target.exists() or target.is_symlink():  # two catalogue folders, one file name
                target = target.with_name(f"catalogue-{path.stem}-{k}{path.suffix}")
                k += 1
            _place(path, target, copy)
        added[cls] = n
    return added


def mix(
    folder: str | Path,
    catalogue: str | Path,
    out: str | Path,
    mapping: Mapping[str, str],
    *,
    column: str = "articleType",
    images: str | Path | None = None,
    where: Mapping[str, Sequence[str]] | None = None,
    per_class: int | None = None,
    seed: int = 0,
    copy: bool = False,
    exclude: Iterable[str] = (),
) -> dict:
    """The folder plus the catalogue's mapped rows in its training split (``train/``, or the root of a folder
    without splits); returns a report: images added and available per class, catalogue values left unmapped
    (most frequent first), mapped values no row holds (a typo?), mapped rows held out by ``exclude`` (paths,
    file names or ids: keep your own test rows out), rows the catalogue reader skipped. No matching row at all
    is an error."""
    folder, out = Path(folder), Path(out)
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    ds = read_catalog(catalogue, images=images, labels=(column,))
    for col in where or {}:
        if ds.samples and col not in ds.samples[0].meta and col != column:
            raise ValueError(
                f"--where {col}: no such column (columns: {', '.join(sorted(ds.samples[0].meta))})"
            )
    photos = read_folder(folder)
    classes = photos.classes(photos.heads[0])
    unknown = sorted(set(mapping.values()) - set(classes))
    if unknown:
        raise ValueError(f"mapping onto {', '.join(unknown)}: not a class of {folder} ({', '.join(classes)})")
    if out.exists():
        raise FileExistsError(f"{out}: exists (give a new folder)")
    if out.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{out}: inside {folder} (give a folder beside it)")
    # the training split's folder as named there ("train", "Train", "training"...), or the root without splits
    train = next(
        (Path(s.path).relative_to(folder).parts[0] for s in photos.samples if s.split == "train"), ""
    )
    skip = {str(e) for e in exclude}
    mapped = catalogue_pools(ds.samples, mapping, column, where)
    pools = {c: kept for c, rows in mapped.items() if (kept := [s for s in rows if not _excluded(s, skip)])}
    held_out = sum(map(len, mapped.values())) - sum(map(len, pools.values()))
    values = Counter(v for s in ds.samples if (v := s.labels.get(column)) is not None)
    by_count = sorted(values, key=lambda v: (-values[v], v))
    if not pools:
        found = ", ".join(by_count[:8]) or "none"
        raise ValueError(f"no catalogue row matches the mapping and --where ({column} values: {found} ...)")
    partial = out.with_name(f".{out.name}.partial")  # renamed when complete: an interrupted run leaves no OUT
    if partial.exists():
        shutil.rmtree(partial)
    _mirror(photos, folder, partial, copy)
    added = add_rows(partial / train, pools, per_class, seed, copy)
    partial.rename(out)
    return {
        "out": str(out),
        "added": added,
        "available": {c: len(rows) for c, rows in sorted(pools.items())},
        "unmapped": {v: values[v] for v in by_count if v not in mapping},
        "unmatched": sorted(set(mapping) - set(values)),
        "held_out": held_out,
        "skipped_rows": len(ds.skipped),
    }


def _excluded(sample: Sample, skip: set[str]) -> bool:
    """Whether ``skip`` names the row: its image's path as read, the file name, or its ``id``."""
    return bool(skip & {str(sample.path), Path(sample.path).name, sample.meta.get("id", "")})


def _mirror(photos: DataSet, folder: Path, out: Path, copy: bool) -> None:
    """Every image of ``photos`` (read from ``folder``) at its relative path under ``out``."""
    for s in photos.samples:
        target = out / Path(s.path).relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        _place(Path(s.path), target, copy)


def _place(source: Path, target: Path, copy: bool) -> None:
    if copy:
        shutil.copy2(source, target)
    else:
        target.symlink_to(source.resolve())
