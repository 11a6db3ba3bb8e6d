"""Retrieval quality of an index: precision@k, recall@k and mAP@k with relevant = same label, on held-out
queries (leave-one-out: each query is an indexed item, searched with itself and its byte-identical duplicates
left out, so neither a copy of the query nor the query can count as a hit)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from vestis.index.store import Index


def query_sample(index: Index, label: str, queries: int = 2000, seed: int = 0) -> np.ndarray:
    """Positions of the held-out queries: a seeded sample of the labelled items (all when ``queries`` is 0)."""
    if label not in index.columns:
        raise ValueError(
            f"--label {label!r}: no such column in the index (columns: {', '.join(index.columns)})"
        )
    labelled = np.flatnonzero([v is not None for v in index.columns[label]])
    if queries and queries < len(labelled):
        labelled = np.sort(np.random.default_rng(seed).choice(labelled, queries, replace=False))
    return labelled


def evaluate_index(
    index: Index, label: str, k: int = 10, queries: int = 2000, seed: int = 0, positions=None
) -> dict:
    """``{"label", "k", "queries", "precision@k", "recall@k", "mAP@k"}`` (means over the queries).
    AP@k = sum over the relevant ranks r <= k of precision@r, divided by min(k, relevant items); queries whose
    label has no other item are left out (counted in ``"no_relevant"``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels = index.columns.get(label)
    qpos = query_sample(index, label, queries, seed) if positions is None else np.asarray(positions)
    counts = Counter(v for v in labels if v is not None)
    by_digest: dict[str, list[int]] = defaultdict(list)
    for p, d in enumerate(index.digests):
        if d:
            by_digest[d].append(p)
    exclude, n_rel = [], []
    for p in qpos.tolist():
        same = by_digest.get(index.digests[p], [p]) if index.digests[p] else [p]
        same = sorted(set(same) | {p})
        exclude.append([int(index.ids[j]) for j in same])
        n_rel.append(counts[labels[p]] - sum(labels[j] == labels[p] for j in same))
    vectors = index.vectors()
    prec, rec, ap, skipped = [], [], [], 0
    for start in range(0, len(qpos), 512):
        sl = slice(start, start + 512)
        _, pos = index.search_positions(vectors[qpos[sl]], k, exclude=exclude[sl])
        for p, row, r in zip(qpos[sl].tolist(), pos, n_rel[sl], strict=True):
            if r <= 0:
                skipped += 1
                continue
            hits = np.array([q >= 0 and labels[q] == labels[p] for q in row], bool)
            cum = np.cumsum(hits)
            prec.append(hits.sum() / k)
            rec.append(hits.sum() / r)
            ap.append(float((cum / np.arange(1, k + 1))[hits].sum() / min(k, r)))
    n = len(prec)
    return {
        "label": label,
        "k": k,
        "queries": n,
        "no_relevant": skipped,
        f"precision@{k}": round(float(np.mean(prec)), 4) if n else None,
        f"recall@{k}": round(float(np.mean(rec)), 4) if n else None,
        f"mAP@{k}": round(float(np.mean(ap)), 4) if n else None,
    }


def compare_models(
    index: Index,
    label: str,
    models: list,
    k: int = 10,
    queries: int = 2000,
    seed: int = 0,
    cache_dir=None,
    progress: bool = False,
) -> list[dict]:
    """The index's own figures and, on the same queries, those of the same items embedded by each of
    ``models`` (e.g. ``backbone:lite0`` for pretrained features): one dict per model, the index's first."""
    from vestis.index.build import LAYER, embed_files, model_record, open_model, views_of

    qpos = query_sample(index, label, queries, seed)
    rows = [
        {
            "model": index.manifest["model"].get("source") or "bundled default",
            **evaluate_index(index, label, k, positions=qpos),
        }
    ]
    for spec in models:
        model = spec if hasattr(spec, "runner") else open_model(spec, cache_dir=cache_dir)
        vecs, ok, errors, digests = embed_files(
            model, index.paths, views_of(index), cache_dir=cache_dir, progress=progress
        )
        if not ok.all():
            raise ValueError(f"{len(errors)} indexed images could not be embedded again by {spec}")
        other = Index.create(
            vecs,
            paths=index.paths,
            ids=index.ids,
            columns=index.columns,
            digests=index.digests,
            model=model_record(model),
            embedding={"layer": LAYER},
            kind="flat",
        )
        rows.append({"model": str(model.source), **evaluate_index(other, label, k, positions=qpos)})
    return rows
