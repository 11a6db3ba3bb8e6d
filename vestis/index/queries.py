"""Answering queries: files, folders, globs, URLs and in-memory images embedded with the index's model (checked)
and searched, in the ``vestis search --json`` shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vestis.engine.infer import image_set, run_batches
from vestis.index.models import check_model, index_model, views_of
from vestis.index.store import Index
from vestis.predict import resolve_inputs


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
