"""Visual search and audit benchmarks (docs/BENCHMARKS.md, "Visual search and catalogue audit").

    flock /tmp/vestis-cpu.lock .venv/bin/python benchmarks/bench_index.py catalogue --out runs/bench_index
    flock /tmp/vestis-cpu.lock .venv/bin/python benchmarks/bench_index.py ann --n 1000000 --dim 128
    flock /tmp/vestis-cpu.lock .venv/bin/python benchmarks/bench_index.py audit --out runs/audit

catalogue: the shared catalogue (44k items) indexed with the bundled model: build time (embedding through the
feature cache, cold figure from a first run printed separately), index size, single-query latency p50/p99
(vector search, and image query end to end), articleType precision@10 / recall@10 / mAP@10 on 2,000
held-out queries (leave-one-out), with ``--compare backbone:lite0`` for pretrained-backbone features.
ann: N seeded clustered vectors: exact (flat) vs HNSW and IVF-PQ: build time, memory, recall@10 against
exact and single-query latency. audit: `vestis audit` on the catalogue, byte-identical groups checked
against an independent hash count; writes a contact sheet of the top-50 likely label errors to judge."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import CATALOGUE  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PRODUCTS = CATALOGUE


def _pct(times: list[float]) -> dict:
    a = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def catalogue(args) -> dict:
    from vestis.index import Index, build_index
    from vestis.index.evaluate import compare_models
    from vestis.runtime import cpu_info

    out = Path(args.out)
    t = time.perf_counter()
    index, report = build_index(PRODUCTS / "styles.csv", out, progress=False)
    build_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    vecs = index.vectors()
    q = vecs[rng.choice(len(vecs), 300, replace=False)]
    index.search_vectors(q[:5], k=10)
    lat = []
    for v in q:
        t = time.perf_counter()
        index.search_vectors(v[None], k=10)
        lat.append(time.perf_counter() - t)
    lat_f = []
    for v in q[:100]:
        t = time.perf_counter()
        index.search_vectors(v[None], k=10, where={"gender": ["Women"]})
        lat_f.append(time.perf_counter() - t)
    index = Index.open(out)
    paths = [index.paths[i] for i in rng.choice(len(index), 60, replace=False)]
    index.search(paths[:2], k=10)  # loads the model once
    lat_img = []
    for p in paths:
        t = time.perf_counter()
        index.search([p], k=10)
        lat_img.append(time.perf_counter() - t)
    quality = compare_models(index, "articleType", args.compare, k=10, queries=2000, progress=False)
    result = {
        "cpu": cpu_info(),
        "items": len(index),
        "build": {"total_s": round(build_s, 1), **report["seconds"]},
        "index_bytes": report["bytes"],
        "kind": index.kind,
        "vector_query": _pct(lat),
        "vector_query_where_gender": _pct(lat_f),
        "image_query_end_to_end": _pct(lat_img),
        "quality": quality,
    }
    return result


def _clustered(n: int, dim: int, seed: int = 0, centres: int = 2000) -> np.ndarray:
    """Unit vectors around seeded cluster centres (like embeddings: clustered, not uniform)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        out[s : s + m] = c[rng.integers(0, centres, m)] + 0.6 * rng.standard_normal((m, dim)).astype(
            np.float32
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ann(args) -> dict:
    import faiss

    from vestis.index.kinds import apply_params
    from vestis.index.store import Index
    from vestis.runtime import cpu_info

    x = _clustered(args.n, args.dim)
    rng = np.random.default_rng(1)
    q = x[rng.choice(len(x), args.queries, replace=False)] + 0.05 * rng.standard_normal(
        (args.queries, args.dim)
    ).astype(np.float32)
    paths = [""] * len(x)
    rows = []
    truth = None
    configs = [("flat", {}, {})] + [
        ("hnsw", {"M": args.M, "efConstruction": args.ef_construction}, {"efSearch": e})
        for e in (32, 64, 128)
    ]
    configs += [("ivfpq", {"nlist": 4096, "m": args.dim // 4, "nbits": 8}, {"nprobe": p}) for p in (16, 64)]
    built = {}
    for kind, build_params, search_params in configs:
        key = (kind, json.dumps(build_params, sort_keys=True))
        if key not in built:
            t = time.perf_counter()
            idx = Index.create(
                x, paths=paths, model={"fingerprint": "synthetic"}, kind=kind, params=build_params
            )
            built[key] = (idx, time.perf_counter() - t, len(faiss.serialize_index(idx.faiss)))
            print(f"built {kind} {build_params} in {built[key][1]:.1f}s", file=sys.stderr, flush=True)
        idx, build_s, nbytes = built[key]
        idx.manifest["index"]["params"].update(search_params)
        apply_params(idx.faiss, kind, idx.manifest["index"]["params"])
        lat, found = [], []
        for v in q:
            t = time.perf_counter()
            _, pos = idx.search_positions(v[None], 10)
            lat.append(time.perf_counter() - t)
            found.append(pos[0])
        found = np.array(found)
        if truth is None:
            truth = found
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))
        rows.append(
            {
                "kind": kind,
                "build": build_params,
                "search": search_params,
                "build_s": round(build_s, 1),
                "index_mb": round(nbytes / 2**20, 1),
                "recall@10": round(recall, 4),
                **_pct(lat),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {
        "cpu": cpu_info(),
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "faiss_threads": faiss.omp_get_max_threads(),
        "peak_rss_mb": round(_rss_mb()),
        "rows": rows,
    }


def audit(args) -> dict:
    from vestis.data.catalog import read_catalog
    from vestis.index.audit import AuditConfig, run_audit
    from vestis.runtime import cpu_info

    t = time.perf_counter()
    summary = run_audit(PRODUCTS / "styles.csv", args.out, config=AuditConfig(label="articleType"))
    seconds = time.perf_counter() - t
    # an independent count: MD5 of every catalogue image file (not the audit's SHA-1 digests)
    ds = read_catalog(PRODUCTS / "styles.csv", labels=[])
    by = defaultdict(list)
    for s in ds.samples:
        by[hashlib.md5(Path(s.path).read_bytes()).hexdigest()].append(s.meta["id"])
    groups = [g for g in by.values() if len(g) > 1]
    all_files = defaultdict(int)
    for p in (PRODUCTS / "images").iterdir():
        all_files[hashlib.md5(p.read_bytes()).hexdigest()] += 1
    _contact_sheet(Path(args.out))
    return {
        "cpu": cpu_info(),
        "seconds": round(seconds, 1),
        "summary": summary,
        "md5_groups_catalogue_rows": len(groups),
        "md5_items_catalogue_rows": sum(len(g) for g in groups),
        "md5_groups_all_image_files": sum(1 for c in all_files.values() if c > 1),
    }


def _contact_sheet(out: Path, n: int = 50) -> None:
    """label_errors_top50.png: the top-n likely label errors, image + given -> suggested, to judge by eye."""
    import csv

    from PIL import Image, ImageDraw

    with open(out / "label_errors.csv") as f:
        rows = list(csv.DictReader(f))[:n]
    w, h, cols = 150, 150, 10
    sheet = Image.new("RGB", (cols * w, ((len(rows) + cols - 1) // cols) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        img = Image.open(r["path"]).convert("RGB")
        img.thumbnail((w, h - 36))
        x, y = (i % cols) * w, (i // cols) * h
        sheet.paste(img, (x + (w - img.width) // 2, y))
        draw.text((x + 2, y + h - 36), f"{r['rank']}. {r['given'][:20]}", fill="red")
        draw.text((x + 2, y + h - 24), f"-> {r['suggested'][:20]}", fill="green")
        draw.text((x + 2, y + h - 12), f"m={float(r['margin']):.2f} id {r['id']}", fill="black")
    sheet.save(out / "label_errors_top50.png")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("catalogue", "ann", "audit"))
    p.add_argument("--out", default="runs/bench_index")
    p.add_argument("--compare", action="append", default=[], help="e.g. backbone:lite0")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--M", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--json", help="write the result here too")
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result = {"catalogue": catalogue, "ann": ann, "audit": audit}[args.what](args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
