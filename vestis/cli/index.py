"""`vestis index build|add|remove|evaluate`, `vestis search`, `vestis audit`."""

from __future__ import annotations

import json
import sys


def _add_index(sub) -> None:
    from vestis.index.store import KINDS

    p = sub.add_parser("index", help="visual search index: build, add, remove, evaluate")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="embed a catalogue CSV or an image folder into a Faiss index")
    b.add_argument("source", help="catalogue .csv (every column kept as metadata) or image folder")
    b.add_argument("--images", help="catalogue CSV: image directory (default: images/ beside the CSV)")
    b.add_argument(
        "--model",
        help="run directory, .onnx file or backbone:NAME (pretrained features alone); "
        "default: the bundled model",
    )
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument(
        "--kind", choices=KINDS, default="auto", help="flat (exact; auto up to 200k items), hnsw, ivfpq"
    )
    b.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="index parameter, e.g. M=32 efSearch=128 (hnsw), nlist=1024 m=64 nprobe=16 (ivfpq)",
    )
    b.add_argument("--tta", action="store_true", help="embed the mirrored image too (queries follow)")
    b.add_argument("--pattern", default="{id}.jpg", help="catalogue CSV: image file name pattern")
    b.add_argument("--cache-dir", help="feature cache directory (default: $VESTIS_CACHE or ~/.cache/vestis)")
    b.add_argument("--workers", type=int, help="image decoding processes")
    b.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda (under torchrun: each process its own GPU, or gloo on CPU)",
    )
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_index_build)
    a = isub.add_parser("add", help="embed new items (folder or CSV) into an index; ids stay stable")
    a.add_argument("index")
    a.add_argument("source", help="image folder or catalogue .csv")
    a.add_argument("--images", help="catalogue CSV: image directory")
    a.add_argument("--pattern", default="{id}.jpg")
    a.add_argument("--model", help="must compute the index's features (default: the index's model)")
    a.add_argument("--cache-dir")
    a.add_argument("--quiet", action="store_true")
    _lock_timeout(a)
    a.set_defaults(func=_index_add)
    r = isub.add_parser("remove", help="remove items by id")
    r.add_argument("index")
    r.add_argument("ids", nargs="+")
    _lock_timeout(r)
    r.set_defaults(func=_index_remove)
    e = isub.add_parser(
        "evaluate", help="precision@k, recall@k, mAP@k (relevant = same label), leave-one-out"
    )
    e.add_argument("index")
    e.add_argument("--label", required=True, help="metadata column whose equality means relevant")
    e.add_argument("--k", type=int, default=10)
    e.add_argument(
        "--queries", type=int, default=2000, help="held-out queries, seeded sample (0: every item)"
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="MODEL",
        help="also embed the items with MODEL (e.g. backbone:lite0) and score it on the same queries",
    )
    e.add_argument("--cache-dir")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_index_evaluate)


def _lock_timeout(p) -> None:
    from vestis.index.files import LOCK_TIMEOUT

    p.add_argument(
        "--lock-timeout",
        type=float,
        default=LOCK_TIMEOUT,
        metavar="SECONDS",
        help=f"wait this long for another process writing the index (default {LOCK_TIMEOUT:.0f}; 0: fail at once)",
    )


def _index_build(args) -> int:
    from vestis.index.build import build_index

    params = dict(_kv(x) for x in args.param)
    _, report = build_index(
        args.source,
        args.out,
        images=args.images,
        model=args.model,
        kind=args.kind,
        params=params,
        tta=args.tta,
        pattern=args.pattern,
        cache_dir=args.cache_dir,
        workers=args.workers,
        progress=not args.quiet,
        device=args.device,
    )
    skipped = report.pop("skipped", [])  # under torchrun, rank 0 reports for all
    print(json.dumps({**report, "skipped": len(skipped)} if "out" in report else report))
    for item, reason in skipped[:10]:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    return 0


def _kv(text: str) -> tuple[str, float | int | str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--param {text!r}: expected NAME=VALUE")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def _index_add(args) -> int:
    from vestis.index.build import add_to_index

    report = add_to_index(
        args.index,
        args.source,
        images=args.images,
        model=args.model,
        pattern=args.pattern,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
        lock_timeout=args.lock_timeout,
    )
    skipped = report.pop("skipped")
    print(json.dumps({**report, "ids": report["ids"][:20], "skipped": len(skipped)}))
    for item, reason in skipped[:10]:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    return 0


def _index_remove(args) -> int:
    from vestis.index.build import remove_from_index

    print(json.dumps(remove_from_index(args.index, args.ids, lock_timeout=args.lock_timeout)))
    return 0


def _index_evaluate(args) -> int:
    from vestis.index import Index
    from vestis.index.evaluate import compare_models

    rows = compare_models(
        Index.open(args.index),
        args.label,
        args.compare,
        k=args.k,
        queries=args.queries,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=not args.json,
    )
    for r in rows:
        print(json.dumps(r) if args.json else "  ".join(f"{k} {v}" for k, v in r.items()))
    return 0


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="most similar indexed items to image files, folders, globs, URLs")
    p.add_argument("index", help="index directory (`vestis index build`)")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or http(s) URLs")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="metadata filter (repeat: all must hold; COL=A|B: either)",
    )
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per query")
    p.add_argument("--model", help="query model (default: the index's; another model's features are refused)")
    p.set_defaults(func=_search)


def _search(args) -> int:
    from vestis.index import Index
    from vestis.index.build import open_model

    index = Index.open(args.index)
    model = open_model(args.model) if args.model else None
    results = index.search(args.inputs, k=args.k, where=args.where, model=model)
    if args.json:
        for r in results:
            print(json.dumps(r, ensure_ascii=False))
    else:
        print(format_table(results))
    failed = sum("error" in r for r in results)
    if failed and not args.json:
        print(f"{failed} of {len(results)} queries failed", file=sys.stderr)
    return 1 if failed else 0


def _add_audit(sub) -> None:
    from vestis.index.audit import AuditConfig

    d = AuditConfig
    p = sub.add_parser(
        "audit", help="catalogue hygiene: duplicates, near-duplicates, label conflicts and errors"
    )
    p.add_argument("source", help="catalogue .csv or image folder (sub-folder = label)")
    p.add_argument("--images", help="catalogue CSV: image directory")
    p.add_argument("--label", default=d.label, help="label column to check (default: articleType)")
    p.add_argument("--out", required=True, help="report directory (CSVs, summary.json, index.html)")
    p.add_argument("--model", help="run directory, .onnx file or backbone:NAME (default: the bundled model)")
    p.add_argument("--near", type=float, default=d.near, help="cosine similarity for near-duplicates")
    p.add_argument("--neighbours", type=int, default=d.neighbours, help="k for outlier scores")
    p.add_argument("--folds", type=int, default=d.folds, help="cross-validation folds for label errors")
    p.add_argument("--top", type=int, default=d.top, help="findings per gallery section")
    p.add_argument("--pattern", default="{id}.jpg")
    p.add_argument("--cache-dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_audit)


def _audit(args) -> int:
    from vestis.index.audit import AuditConfig, run_audit

    cfg = AuditConfig(
        label=args.label, near=args.near, neighbours=args.neighbours, folds=args.folds, top=args.top
    )
    summary = run_audit(
        args.source,
        args.out,
        images=args.images,
        model=args.model,
        config=cfg,
        pattern=args.pattern,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    print(json.dumps(summary) if args.quiet else json.dumps(summary, indent=1))
    return 0


_PREFERRED = ("articleType", "gender", "baseColour", "productDisplayName", "folder")


def format_table(results: list[dict], width: int = 40) -> str:
    """Search results as the table `vestis search` prints: per query its input, then one line per result
    (rank, score, id, a few metadata columns, path)."""
    lines = []
    for r in results:
        lines.append(str(r["input"]))
        if "error" in r:
            lines.append(f"  ERROR: {r['error']}")
            continue
        rows = r["results"]
        if not rows:
            lines.append("  (no results)")
            continue
        meta = [c for c in rows[0] if c not in ("id", "path", "score")]
        shown = [c for c in _PREFERRED if c in meta][:4] or meta[:4]
        cells = [["#", "score", "id", *shown, "path"]]
        for n, row in enumerate(rows, 1):
            vals = [str(row.get(c) if row.get(c) is not None else "-")[:width] for c in shown]
            cells.append([str(n), f"{row['score']:.4f}", str(row["id"]), *vals, row["path"]])
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
        lines += [
            "  " + "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() for c in cells
        ]
    return "\n".join(lines)
