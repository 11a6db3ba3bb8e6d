"""Catalogue hygiene: exact byte duplicates, near-duplicates, groups whose labels disagree, likely label errors
and outliers, each written as a CSV, with an HTML gallery of the top findings.

Likely label errors follow the confident-learning idea (written here from its description): out-of-fold class
probabilities come from logistic-regression heads cross-validated on the cached embeddings (an item's
probabilities come from a head that never saw it). For each class j, its threshold t_j is the mean
probability of j over the items labelled j (the class's average self-confidence). An item labelled y is
flagged when p_y < t_y while some other class j has p_j >= t_j; the suggested label is the most probable such
j, and findings are ranked by the margin p_j - p_y."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class AuditConfig:
    label: str = "articleType"
    near: float = 0.97  # cosine similarity at or above which two different files are near-duplicates
    neighbours: int = 10  # k of the k-nearest-neighbour similarity (outliers) and the near-duplicate search
    folds: int = 5
    top: int = 50  # findings per section in the gallery
    outliers: int = 200  # rows of outliers.csv (the lowest neighbour similarity first)
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.near <= 1:
            raise ValueError(f"--near must be in (0, 1], got {self.near}")
        if self.folds < 2:
            raise ValueError(f"--folds must be >= 2, got {self.folds}")
        if self.neighbours < 1 or self.top < 1:
            raise ValueError("--neighbours and --top must be >= 1")


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return [g for g in out.values() if len(g) > 1]


def exact_groups(digests: list[str | None]) -> list[list[int]]:
    """Positions sharing a content digest (>= 2 each), in order of first appearance."""
    by = defaultdict(list)
    for i, d in enumerate(digests):
        if d:
            by[d].append(i)
    return [g for g in by.values() if len(g) > 1]


def knn(vectors: np.ndarray, k: int, digests: list[str | None] | None = None, batch: int = 4096):
    """Exact k nearest neighbours (cosine) of every vector among the others, leaving out itself and its
    byte-identical copies: (similarities (N, k), positions (N, k); -1 where fewer exist)."""
    import faiss

    n = len(vectors)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    dig = np.array([d or f"#{i}" for i, d in enumerate(digests)] if digests else [f"#{i}" for i in range(n)])
    copies = np.unique(dig, return_counts=True)[1].max() if n else 1
    want = min(n, k + int(copies))
    sims, pos = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    for s in range(0, n, batch):
        d, i = index.search(vectors[s : s + batch], want)
        for r in range(len(d)):
            row = s + r
            keep = (i[r] >= 0) & (dig[np.maximum(i[r], 0)] != dig[row])
            kd, ki = d[r][keep][:k], i[r][keep][:k]
            sims[row, : len(kd)], pos[row, : len(ki)] = kd, ki
    return sims, pos


def out_of_fold(vectors: np.ndarray, labels: list[str], folds: int = 5, seed: int = 0, dims: int = 256):
    """Out-of-fold class probabilities (N, C) of a logistic regression on the embeddings (PCA to ``dims``
    first, fitted without labels, for speed), and the class names. Each item's row comes from a model fitted
    on the other folds."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels])
    x = vectors
    if x.shape[1] > dims and len(x) > dims:
        x = PCA(dims, random_state=seed).fit_transform(x)
    x = StandardScaler().fit_transform(x)
    probs = np.zeros((len(x), len(classes)), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in some folds; lbfgs iteration limits
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            clf = LogisticRegression(C=0.5, max_iter=300)
            clf.fit(x[train], y[train])
            probs[np.ix_(test, clf.classes_)] = clf.predict_proba(x[test])
    return probs, classes


def label_issues(probs: np.ndarray, given: np.ndarray, classes: list[str]) -> list[dict]:
    """The confident-learning rule (module docstring) -> findings sorted by margin, largest first:
    ``{"row", "given", "suggested", "p_given", "p_suggested", "margin", "threshold_given",
    "threshold_suggested"}``."""
    c = probs.shape[1]
    thresholds = np.array([probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(c)])
    out = []
    rows = np.arange(len(given))
    p_given = probs[rows, given]
    above = probs >= thresholds[None, :]
    above[rows, given] = False
    candidates = np.flatnonzero((p_given < thresholds[given]) & above.any(1))
    for r in candidates.tolist():
        masked = np.where(above[r], probs[r], -1.0)
        j = int(masked.argmax())
        out.append(
            {
                "row": r,
                "given": classes[given[r]],
                "suggested": classes[j],
                "p_given": round(float(p_given[r]), 4),
                "p_suggested": round(float(probs[r, j]), 4),
                "margin": round(float(probs[r, j] - p_given[r]), 4),
                "threshold_given": round(float(thresholds[given[r]]), 4),
                "threshold_suggested": round(float(thresholds[j]), 4),
            }
        )
    return sorted(out, key=lambda f: -f["margin"])


def run_audit(
    source,
    out,
    *,
    images=None,
    model=None,
    config: AuditConfig | None = None,
    id_column: str = "id",
    pattern: str = "{id}.jpg",
    cache_dir=None,
    progress: bool = False,
) -> dict:
    """Audit a catalogue CSV (or an image folder: the sub-folder is the label) and write the findings into
    ``out``: exact_duplicates.csv, near_duplicates.csv, label_conflicts.csv, label_errors.csv, outliers.csv,
    summary.json and index.html. Returns the summary."""
    from vestis.index.build import embed_files, open_model, read_items

    cfg = config or AuditConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory")
    items = read_items(source, images, id_column, pattern)
    label_col = cfg.label if cfg.label in items["columns"] else ("folder" if Path(source).is_dir() else None)
    if label_col is None:
        raise ValueError(f"--label {cfg.label!r}: no such column (columns: {', '.join(items['columns'])})")
    if not hasattr(model, "runner"):
        model = open_model(model, cache_dir=cache_dir)
    paths = items["paths"]
    n_all = len(paths)
    ids = items["ids"] if items["ids"] is not None else list(range(n_all))
    all_labels = items["columns"][label_col]
    vecs, ok, errors, digests = embed_files(model, paths, cache_dir=cache_dir, progress=progress)

    def row(i: int) -> dict:
        return {"id": ids[i], "path": paths[i], "label": all_labels[i]}

    # exact duplicates: every readable file, embedded or not
    exact = exact_groups(digests)
    exact_rows, conflicts = [], []
    for g, members in enumerate(sorted(exact, key=lambda m: (-len(m), m[0])), 1):
        labs = {all_labels[i] for i in members} - {None}
        for i in members:
            exact_rows.append({"group": g, "digest": digests[i], **row(i), "conflicting": len(labs) > 1})
        if len(labs) > 1:
            conflicts.append(("exact", g, members))

    # embeddings of the readable images
    pos = np.flatnonzero(ok)
    labels = [all_labels[i] for i in pos]
    dig = [digests[i] for i in pos]
    sims, nbr = knn(vecs, cfg.neighbours, dig)

    # near-duplicates: different files at or above the threshold, grouped (union-find, exact copies joined too)
    uf = _UnionFind(len(pos))
    for a, b in ((a, int(b)) for a, b in zip(*np.nonzero(sims >= cfg.near), strict=True)):
        uf.union(a, int(nbr[a, b]))
    by_digest = defaultdict(list)
    for j, d in enumerate(dig):
        by_digest[d].append(j)
    for members in by_digest.values():
        for j in members[1:]:
            uf.union(members[0], j)
    near_rows = []
    near_groups = [g for g in uf.groups() if len({dig[j] for j in g}) > 1]
    near_groups.sort(key=lambda g: (-len(g), g[0]))
    for g, members in enumerate(near_groups, 1):
        labs = {labels[j] for j in members} - {None}
        for j in members:
            near_rows.append(
                {
                    "group": g,
                    **row(int(pos[j])),
                    "nearest_similarity": round(float(sims[j, 0]), 4),
                    "conflicting": len(labs) > 1,
                }
            )
        if len(labs) > 1:
            conflicts.append(("near", g, [int(pos[j]) for j in members]))
    conflict_rows = [{"kind": kind, "group": g, **row(i)} for kind, g, members in conflicts for i in members]

    # likely label errors: out-of-fold probabilities, classes with at least `folds` items
    counts = defaultdict(int)
    for v in labels:
        counts[v] += 1
    usable = np.array([v is not None and counts[v] >= cfg.folds for v in labels])
    error_rows = []
    if usable.sum() > cfg.folds and len({labels[j] for j in np.flatnonzero(usable)}) > 1:
        sub = np.flatnonzero(usable)
        probs, classes = out_of_fold(vecs[sub], [labels[j] for j in sub], cfg.folds, cfg.seed)
        given = np.array([classes.index(labels[j]) for j in sub])
        for rank, f in enumerate(label_issues(probs, given, classes), 1):
            i = int(pos[sub[f.pop("row")]])
            error_rows.append({"rank": rank, "id": ids[i], "path": paths[i], **f})

    # outliers: the lowest mean similarity to the k nearest other images
    valid = nbr >= 0
    mean_sim = np.where(valid, sims, 0).sum(1) / np.maximum(valid.sum(1), 1)
    order = np.argsort(mean_sim, kind="stable")[: cfg.outliers]
    outlier_rows = [
        {"rank": r, **row(int(pos[j])), "knn_similarity": round(float(mean_sim[j]), 4)}
        for r, j in enumerate(order.tolist(), 1)
    ]

    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "exact_duplicates.csv": exact_rows,
        "near_duplicates.csv": near_rows,
        "label_conflicts.csv": conflict_rows,
        "label_errors.csv": error_rows,
        "outliers.csv": outlier_rows,
    }
    for name, rows in tables.items():
        _write_csv(out / name, rows)
    summary = {
        "items": n_all,
        "skipped_rows": len(items["skipped"]),
        "unreadable": len(errors),
        "label": label_col,
        "exact_duplicate_groups": len(exact),
        "exact_duplicate_items": sum(len(g) for g in exact),
        "exact_groups_with_conflicting_labels": sum(1 for c in conflicts if c[0] == "exact"),
        "near_duplicate_groups": len(near_groups),
        "near_duplicate_items": sum(len(g) for g in near_groups),
        "near_groups_with_conflicting_labels": sum(1 for c in conflicts if c[0] == "near"),
        "near_threshold": cfg.near,
        "likely_label_errors": len(error_rows),
        "label_error_classes": int(len({labels[j] for j in np.flatnonzero(usable)})),
        "outliers_listed": len(outlier_rows),
        "model": {"source": model.source or "bundled default", "fingerprint": model.runner.fingerprint},
        "files": sorted([*tables, "summary.json", "index.html"]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "index.html").write_text(_gallery(summary, tables, cfg.top), encoding="utf-8")
    return summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        if not rows:
            f.write("")
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _thumb(path: str, size: int = 96) -> str:
    """A small JPEG thumbnail as a data URI (the gallery is one self-contained file); '' if unreadable."""
    from vestis.data.images import load_image

    try:
        img = load_image(path)
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    except Exception:  # an unreadable image still gets its row, without a picture
        return ""


def _card(r: dict, lines: list[str]) -> str:
    src = _thumb(r["path"])
    img = f'<img src="{src}" alt="">' if src else '<div class="missing">unreadable</div>'
    text = "<br>".join(html.escape(str(x)) for x in lines)
    return f'<figure title="{html.escape(str(r["path"]))}">{img}<figcaption>{text}</figcaption></figure>'


def _gallery(summary: dict, tables: dict, top: int) -> str:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>vestis audit</title><style>"
        "body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:4px;width:120px;"
        "vertical-align:top;font-size:11px}img{max-width:110px;max-height:110px}.group{border:1px solid #ccc;"
        "margin:4px 0;padding:4px}.missing{width:96px;height:96px;background:#eee}</style>",
        "<h1>vestis audit</h1><pre>" + html.escape(json.dumps(summary, indent=1)) + "</pre>",
    ]
    errors = tables["label_errors.csv"][:top]
    parts.append(f"<h2>Likely label errors (top {len(errors)} by margin)</h2>")
    parts += [
        _card(
            r,
            [
                f"#{r['rank']} id {r['id']}",
                f"given: {r['given']} ({r['p_given']:.2f})",
                f"model: {r['suggested']} ({r['p_suggested']:.2f})",
            ],
        )
        for r in errors
    ]
    for title, name, key in (
        ("Exact duplicates with conflicting labels", "label_conflicts.csv", "exact"),
        ("Near-duplicates with conflicting labels", "label_conflicts.csv", "near"),
    ):
        groups = defaultdict(list)
        for r in tables[name]:
            if r["kind"] == key:
                groups[r["group"]].append(r)
        shown = list(groups.items())[:top]
        parts.append(f"<h2>{title} ({len(groups)} groups; {len(shown)} shown)</h2>")
        for g, rows in shown:
            cards = "".join(_card(r, [f"id {r['id']}", str(r["label"])]) for r in rows)
            parts.append(f'<div class="group">group {g}: {cards}</div>')
    groups = defaultdict(list)
    for r in tables["near_duplicates.csv"]:
        groups[r["group"]].append(r)
    shown = list(groups.items())[: min(top, 20)]
    parts.append(f"<h2>Near-duplicate groups ({len(groups)}; largest {len(shown)} shown)</h2>")
    for g, rows in shown:
        cards = "".join(
            _card(r, [f"id {r['id']}", str(r["label"]), f"sim {r['nearest_similarity']}"]) for r in rows[:12]
        )
        parts.append(f'<div class="group">group {g} ({len(rows)} items): {cards}</div>')
    outliers = tables["outliers.csv"][:top]
    parts.append(
        f"<h2>Outliers (lowest mean similarity to their nearest neighbours, {len(outliers)} shown)</h2>"
    )
    parts += [
        _card(r, [f"#{r['rank']} id {r['id']}", str(r["label"]), f"knn sim {r['knn_similarity']}"])
        for r in outliers
    ]
    return "\n".join(parts)
