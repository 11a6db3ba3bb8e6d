"""From images to an index: catalogue or folder items, embedding them, building an index, adding to and removing
from one. The model side (:mod:`vestis.index.models`) and the queries (:mod:`vestis.index.queries`) live
beside it; their functions are importable from here too.

Items are embedded through the engine's feature cache (keyed by image content and ``runner.fingerprint``), so
building a second index, adding to one or auditing the same catalogue reuses the work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vestis.engine.features import extract_features
from vestis.engine.infer import l2_normalize
from vestis.index.files import LOCK_TIMEOUT, check_target
from vestis.index.models import (
    BACKBONE_PREFIX,
    check_model,
    index_model,
    model_record,
    open_model,
    views_of,
)
from vestis.index.queries import embed_images, embed_queries, search
from vestis.index.store import Index, IndexFileError, ModelMismatch
from vestis.predict import _folder_images

LAYER = "pooled backbone features (global average pool, before the heads), view-averaged, L2-normalised"


def read_items(source: str | Path, images=None, id_column: str = "id", pattern: str = "{id}.jpg") -> dict:
    """Items of a catalogue CSV (every column kept as metadata; integer ids used as index ids) or of an image
    folder (recursive; metadata column ``folder``: the sub-folder). -> {"paths", "ids" (or None),
    "columns", "skipped": [(item, reason)], "notes"}."""
    from vestis.data.catalog import read_catalog

    source = Path(source)
    if source.is_dir():
        paths = _folder_images(source)
        if not paths:
            raise ValueError(f"{source}: no images in this folder")
        folders = [os.path.relpath(os.path.dirname(p), source) for p in paths]
        return {
            "paths": paths,
            "ids": None,
            "columns": {"folder": ["" if f == "." else f for f in folders]},
            "skipped": [],
            "notes": [],
        }
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or directory")
    if source.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise ValueError(f"{source}: expected an image folder or a catalogue .csv")
    ds = read_catalog(source, images=images, labels=[], id_column=id_column, pattern=pattern)
    if not ds.samples:
        why = f"; e.g. {ds.skipped[0].item}: {ds.skipped[0].reason}" if ds.skipped else ""
        raise ValueError(f"{source}: no usable rows ({len(ds.skipped)} skipped{why})")
    names = list(ds.samples[0].meta)
    columns = {c: [s.meta.get(c) for s in ds.samples] for c in names if c != id_column}
    raw = [s.meta.get(id_column) for s in ds.samples]
    ids = None
    try:
        ids = [int(x) for x in raw]
    except (TypeError, ValueError):
        columns["catalog_id"] = raw  # not integers: kept as metadata, index ids assigned in order
    return {
        "paths": [str(s.path) for s in ds.samples],
        "ids": ids,
        "columns": columns,
        "skipped": [(k.item, k.reason) for k in ds.skipped],
        "notes": list(ds.notes),
    }


def embed_files(
    model,
    paths: list[str],
    views=("plain",),
    *,
    cache=True,
    cache_dir=None,
    batch_size=64,
    workers=None,
    progress=False,
):
    """-> (vectors (N_ok, D), ok mask (N,), {position: error}, digests (N,)) through the feature cache."""
    f = extract_features(
        model.runner,
        paths,
        views=tuple(views),
        batch_size=batch_size,
        workers=workers,
        cache=cache,
        cache_dir=cache_dir or model.cache_dir,
        progress=progress,
    )
    return l2_normalize(f.feats[f.ok].mean(1)), f.ok, f.errors, f.digests


def _kept(items: dict, ok: np.ndarray, digests, errors: dict) -> tuple[dict, list]:
    """What embedding :func:`read_items`' items left: the Index fields of the images that were read (keyword
    arguments of :meth:`Index.create` and :meth:`Index.add`: paths made absolute, ids, metadata columns,
    content digests) and the skipped items (rows the catalogue skipped, then the unreadable images)."""
    keep = np.flatnonzero(ok)
    fields = {
        "paths": [os.path.abspath(items["paths"][i]) for i in keep],
        "ids": [items["ids"][i] for i in keep] if items["ids"] is not None else None,
        "columns": {c: [v[i] for i in keep] for c, v in items["columns"].items()},
        "digests": [digests[i] for i in keep],
    }
    return fields, items["skipped"] + [(items["paths"][i], e) for i, e in sorted(errors.items())]


def build_index(
    source,
    out,
    *,
    images=None,
    model=None,
    kind: str = "auto",
    params: dict | None = None,
    tta: bool = False,
    id_column: str = "id",
    pattern: str = "{id}.jpg",
    cache: bool = True,
    cache_dir=None,
    batch_size: int = 64,
    workers=None,
    progress: bool = False,
    device: str = "auto",
) -> tuple[Index | None, dict]:
    """Embed a catalogue CSV or an image folder and write an index to ``out``. ``model``: a loaded Model or a
    spec for :func:`open_model`. Returns (the index, a report: counts, skipped items, timings).

    Under ``torchrun`` (WORLD_SIZE > 1) each process embeds its shard of the items and rank 0 gathers them
    and writes the index (:mod:`vestis.index.shards`); the other ranks return (None, their shard's report)."""
    import time

    from vestis.index import shards

    out = Path(out)
    try:
        check_target(out)
    except ValueError as e:
        raise ValueError(f"--out {e}") from None
    rank, world = 0, shards.world_size()
    if world > 1:
        rank, world, device = shards.start(device)
    try:
        t0 = time.perf_counter()
        items = read_items(source, images, id_column, pattern)
        if not hasattr(model, "runner"):
            model = open_model(model, device=device, cache_dir=cache_dir)
        views = ("plain", "flip") if tta else ("plain",)
        t1 = time.perf_counter()

        def embed(paths):
            return embed_files(
                model,
                paths,
                views,
                cache=cache,
                cache_dir=cache_dir,
                batch_size=batch_size,
                workers=workers,
                progress=progress and rank == 0,
            )

        if world > 1:
            got = shards.embed_sharded(embed, items["paths"], rank, world)
            if got is None:
                lo, hi = shards.shard_bounds(len(items["paths"]), world)[rank]
                return None, {"rank": rank, "world": world, "embedded": hi - lo}
            vectors, ok, errors, digests, sizes = got
        else:
            (vectors, ok, errors, digests), sizes = embed(items["paths"]), [len(items["paths"])]
    finally:
        if world > 1:
            shards.stop(world)
    t2 = time.perf_counter()
    if not len(vectors):
        raise ValueError(f"{source}: none of the {len(items['paths'])} images could be read")
    fields, skipped = _kept(items, ok, digests, errors)
    index = Index.create(
        vectors,
        **fields,
        model=model_record(model),
        embedding={"layer": LAYER, "views": list(views)},
        kind=kind,
        params=params,
    )
    index.manifest["source"] = os.path.abspath(str(source))
    index.save(out)
    t3 = time.perf_counter()
    report = {
        "out": str(out),
        "items": len(index),
        "kind": index.kind,
        "params": index.manifest["index"]["params"],
        "dim": index.dim,
        "model": index.manifest["model"],
        "skipped": skipped,
        "seconds": {
            "read_and_load": round(t1 - t0, 2),
            "embed": round(t2 - t1, 2),
            "index": round(t3 - t2, 2),
        },
        "bytes": sum(f["bytes"] for f in index.manifest["files"].values()),
    }
    if world > 1:
        report["processes"] = {"world": world, "embedded_per_rank": sizes}
    return index, report


def add_to_index(
    index_dir,
    source,
    *,
    images=None,
    model=None,
    id_column: str = "id",
    pattern: str = "{id}.jpg",
    cache: bool = True,
    cache_dir=None,
    progress: bool = False,
    lock_timeout: float | None = LOCK_TIMEOUT,
) -> dict:
    """Embed new items (a folder or a CSV) with the index's model and add them; ids of existing items do not
    change. A model given here must compute the same features as the index's (else ModelMismatch). The items
    are embedded first, then the index is read, extended and saved under its writers' lock (another writer
    is waited for up to ``lock_timeout`` seconds), so concurrent adds and removes all land."""
    index = Index.open(index_dir)
    if model is None:
        model = index_model(index, cache_dir=cache_dir)
    elif not hasattr(model, "runner"):
        model = open_model(model, cache_dir=cache_dir)
    check_model(index, model)
    items = read_items(source, images, id_column, pattern)
    vectors, ok, errors, digests = embed_files(
        model, items["paths"], views_of(index), cache=cache, cache_dir=cache_dir, progress=progress
    )
    fields, skipped = _kept(items, ok, digests, errors)
    with Index.edit(index_dir, lock_timeout) as index:
        check_model(index, model)  # rebuilt with another model meanwhile?
        new = index.add(vectors, **fields)
    return {"added": len(new), "ids": new, "items": len(index), "skipped": skipped}


def remove_from_index(index_dir, ids, *, lock_timeout: float | None = LOCK_TIMEOUT) -> dict:
    """Remove items by id, under the index's writers' lock (like :func:`add_to_index`)."""
    try:
        ids = [int(i) for i in ids]
    except ValueError:
        raise ValueError(f"ids must be integers, got {' '.join(map(str, ids))}") from None
    with Index.edit(index_dir, lock_timeout) as index:
        try:
            gone = index.remove(ids)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
    return {"removed": len(gone), "ids": gone, "items": len(index)}


__all__ = [
    "BACKBONE_PREFIX",
    "LAYER",
    "IndexFileError",
    "ModelMismatch",
    "add_to_index",
    "build_index",
    "check_model",
    "embed_files",
    "embed_images",
    "embed_queries",
    "index_model",
    "model_record",
    "open_model",
    "read_items",
    "remove_from_index",
    "search",
    "views_of",
]
