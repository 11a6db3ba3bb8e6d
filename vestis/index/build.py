"""From images to an index and back: which model embeds, catalogue or folder items, building, adding, removing,
and answering queries (files, folders, globs, URLs, in-memory images) in the ``vestis search --json`` shape.

Items are embedded through the engine's feature cache (keyed by image content and ``runner.fingerprint``), so
building a second index, adding to one or auditing the same catalogue reuses the work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vestis.engine.features import extract_features
from vestis.engine.infer import image_set, l2_normalize, run_batches
from vestis.index.files import LOCK_TIMEOUT, check_target
from vestis.index.store import Index, IndexFileError, ModelMismatch
from vestis.predict import _folder_images, resolve_inputs

LAYER = "pooled backbone features (global average pool, before the heads), view-averaged, L2-normalised"
BACKBONE_PREFIX = "backbone:"


# ---------------------------------------------------------------------------------------------- models
def open_model(
    spec: str | None = None,
    *,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    cache_dir=None,
):
    """The model that embeds: None (the bundled default), a run directory, an ``.onnx`` file or
    ``backbone:NAME`` (a registered backbone's pretrained ImageNet features alone, no heads; PyTorch fp32)."""
    from vestis.api import Model, load

    if spec and str(spec).startswith(BACKBONE_PREFIX):
        from vestis.engine.torch_runner import TorchRunner
        from vestis.models import create_model

        name = str(spec)[len(BACKBONE_PREFIX) :]
        net = create_model(name, heads=None, pretrained=True)
        runner = TorchRunner(net, "cpu" if device == "auto" else device, "fp32")
        return Model(runner, {"backbone": net.backbone_name, "heads": {}}, str(spec), cache_dir)
    return load(spec, runtime=runtime, device=device, precision=precision, cache_dir=cache_dir)


def model_record(model) -> dict:
    """What an index stores about the model that embedded it (the fingerprint decides comparability)."""
    src = model.source
    if src and not str(src).startswith(BACKBONE_PREFIX) and Path(str(src)).exists():
        src = os.path.abspath(str(src))
    return {
        "source": src,
        "fingerprint": model.runner.fingerprint,
        "backbone": model.card.get("backbone"),
        "heads": {h: len(c) for h, c in model.classes.items()},
        "precision": getattr(model.runner, "precision", None),
        "runtime": model.runtime,
    }


def index_model(index: Index, *, device: str = "auto", cache_dir=None):
    """The model recorded in the index, loaded in the precision it embedded with."""
    rec = index.manifest.get("model") or {}
    precision = "fp32" if rec.get("precision") == "fp32" else "auto"
    src = rec.get("source")
    try:
        model = open_model(src, device=device, precision=precision, cache_dir=cache_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"the index's model is not found ({e}); pass --model with the same model"
        ) from None
    check_model(index, model)
    return model


def check_model(index: Index, model) -> None:
    """Refuse a model whose embeddings are not comparable with the index's (another backbone, weights,
    preprocessing or precision)."""
    rec = index.manifest.get("model") or {}
    fp = model.runner.fingerprint
    if rec.get("fingerprint") != fp or int(model.embedding_dim) != index.dim:
        built = rec.get("source") or "the bundled default model"
        raise ModelMismatch(
            f"{index.dir or 'this index'} was built with {built} (features {rec.get('fingerprint')}, "
            f"{rec.get('backbone')}, {rec.get('precision')}, dim {index.dim}); the query model "
            f"{model.source or 'the bundled default model'} computes other features ({fp}, "
            f"{model.card.get('backbone')}, {getattr(model.runner, 'precision', '?')}, dim {model.embedding_dim}): "
            "search with the index's own model or rebuild the index with this one"
        )


def views_of(index: Index) -> tuple[str, ...]:
    return tuple(index.manifest["embedding"].get("views") or ("plain",))


# ---------------------------------------------------------------------------------------------- items
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


def _take(items: dict, ok: np.ndarray) -> dict:
    keep = np.flatnonzero(ok)
    return {
        "paths": [os.path.abspath(items["paths"][i]) for i in keep],
        "ids": [items["ids"][i] for i in keep] if items["ids"] is not None else None,
        "columns": {c: [v[i] for i in keep] for c, v in items["columns"].items()},
    }


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
    kept = _take(items, ok)
    index = Index.create(
        vectors,
        paths=kept["paths"],
        ids=kept["ids"],
        columns=kept["columns"],
        digests=[d for d, k in zip(digests, ok, strict=True) if k],
        model=model_record(model),
        embedding={"layer": LAYER, "views": list(views)},
        kind=kind,
        params=params,
    )
    index.manifest["source"] = os.path.abspath(str(source))
    index.save(out)
    t3 = time.perf_counter()
    unreadable = [(items["paths"][i], e) for i, e in sorted(errors.items())]
    report = {
        "out": str(out),
        "items": len(index),
        "kind": index.kind,
        "params": index.manifest["index"]["params"],
        "dim": index.dim,
        "model": index.manifest["model"],
        "skipped": items["skipped"] + unreadable,
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
    kept = _take(items, ok)
    with Index.edit(index_dir, lock_timeout) as index:
        check_model(index, model)  # rebuilt with another model meanwhile?
        new = index.add(
            vectors,
            paths=kept["paths"],
            ids=kept["ids"],
            columns=kept["columns"],
            digests=[d for d, k in zip(digests, ok, strict=True) if k],
        )
    unreadable = [(items["paths"][i], e) for i, e in sorted(errors.items())]
    return {"added": len(new), "ids": new, "items": len(index), "skipped": items["skipped"] + unreadable}


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


# ---------------------------------------------------------------------------------------------- queries
def embed_queries(
    model,
    inputs,
    views=("plain",),
    *,
    batch_size: int = 32,
    workers=None,
    timeout: float = 10.0,
    max_bytes: int = 20 * 2**20,
) -> list[tuple[str, np.ndarray | None, str | None]]:
    """One (input, unit vector or None, error or None) per expanded input, in order: files, folders (each
    image), globs, URLs. A bad input is reported, the others embedded."""
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    resolved = resolve_inputs([str(i) for i in inputs], timeout, max_bytes)
    out: list[list] = [[name, None, err] for name, _, err in resolved]
    todo = [i for i, (_, _, err) in enumerate(resolved) if err is None]
    if todo:
        for r in run_batches(model.runner, [resolved[i][1] for i in todo], tuple(views), batch_size, workers):
            for j, err in r.errors:
                out[todo[j]][2] = err
            for j, vec in zip(r.idx.tolist(), r.embeddings, strict=True):
                out[todo[j]][1] = vec
    return [tuple(o) for o in out]


def embed_images(model, images: list, views=("plain",)) -> list[tuple[np.ndarray | None, str | None]]:
    """In memory (encoded bytes or PIL images, e.g. uploads): one (vector or None, error or None) each."""
    out: list[list] = [[None, None] for _ in images]
    ds = image_set(model.runner, list(images), tuple(views))
    for r in run_batches(model.runner, ds, batch_size=max(1, min(len(images), 32)), workers=0):
        for j, err in r.errors:
            out[j][1] = err
        for j, vec in zip(r.idx.tolist(), r.embeddings, strict=True):
            out[j][0] = vec
    return [tuple(o) for o in out]


def search(index: Index, queries, k: int = 10, where=None, model=None, **options) -> list[dict]:
    """Images (files / folders / globs / URLs, embedded with ``model``, default the index's own, checked): the
    ``vestis search --json`` objects, one per query: ``{"input", "results": [{"id", "path", "score",
    <metadata>}, ...]}`` or ``{"input", "error"}``. Vectors (an ndarray (N, D) or (D,)): one results list
    per row (:meth:`Index.search_vectors`)."""
    if isinstance(queries, np.ndarray):
        return index.search_vectors(np.atleast_2d(queries), k, where)
    index.matching(where)  # a bad filter is one error, before any work
    if model is None:
        model = index_model(index)
    else:
        check_model(index, model)
    got = embed_queries(model, queries, views_of(index), **options)
    ok = [i for i, (_, v, e) in enumerate(got) if e is None and v is not None]
    results = index.search_vectors(np.stack([got[i][1] for i in ok]), k, where) if ok else []
    by = dict(zip(ok, results, strict=True))
    return [
        {"input": name, "results": by[i]}
        if i in by
        else {"input": name, "error": err or "could not be embedded"}
        for i, (name, _, err) in enumerate(got)
    ]


__all__ = [
    "IndexFileError",
    "ModelMismatch",
    "add_to_index",
    "build_index",
    "check_model",
    "embed_images",
    "embed_queries",
    "index_model",
    "open_model",
    "read_items",
    "remove_from_index",
    "search",
]
