"""Issue #10 on the shared catalogue (44k product images at 60x80, styles.csv): what a retailer runs.

    python benchmarks/bench_catalogue.py --out runs/bench-catalogue [--cache-dir DIR] [--parts cold,year,protocol,colour]

* cold: one fast-mode model with seven heads on a seeded stratified split (the split published multi-attribute
  figures use), timed from an empty feature cache (a fresh one under OUT unless --cache-dir names a warm one);
  test top-1 / top-5 / macro-F1 per head;
* year: the same options on the year split (even years train, odd years test), warm;
* protocol: articleType on the year split with --stages top:20,rest: the 20 most frequent types and the rest
  scored on test within their group (top-1, top-5), and the first group's change on validation (forgetting);
* colour: baseColour with and without --colour-stats, chosen on validation, test reported;
* fit: --fit crop (centre crop) vs pad (letterbox) on every 4th catalogue row (11k images, plain view only),
  three heads, chosen on validation, test reported.

Evaluation runs the saved models in PyTorch fp32 on the cached features (the ONNX Runtime fp32 features that
trained them share the cache key). Prints markdown tables; writes OUT/results.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from common import CATALOGUE  # benchmarks/, beside this script

import vestis
from vestis.runtime import cpu_info

DATA = CATALOGUE
HEADS = ["gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage"]


def _train(out: Path, cache: str, name: str, csv: Path = DATA / "styles.csv", **options):
    t = time.time()
    if csv != DATA / "styles.csv":
        options["images"] = str(DATA / "images")
    model = vestis.train(csv, out=out / name, cache_dir=cache, quiet=True, **options)
    seconds = time.time() - t
    log = json.loads((out / name / "train_log.json").read_text())
    print(f"{name}: trained in {seconds:.0f}s (features {log['seconds_features']:.0f}s)", flush=True)
    return model, seconds, log


def _evaluate(out: Path, cache: str, name: str) -> dict:
    model = vestis.load(out / name, runtime="torch", precision="fp32", cache_dir=cache)
    return model.evaluate(split="test", out=out / name / "eval-test")


def _head_rows(report: dict, val: dict) -> list[dict]:
    rows = []
    for h, m in report["heads"].items():
        top5 = m["top_k"].get("5") if len(m.get("per_class", [])) > 5 else None
        rows.append(
            {
                "head": h,
                "classes": len(m.get("per_class", [])),
                "n": m["n"],
                "val_top1": val[h]["top1"],
                "test_top1": m["top1"],
                "test_top5": top5,
                "test_macro_f1": m["macro_f1"],
            }
        )
    return rows


def _table(rows: list[dict], title: str) -> None:
    print(f"\n{title}\n\n| head | classes | test n | val top-1 | test top-1 | test top-5 | test macro-F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        top5 = "-" if r["test_top5"] is None else f"{r['test_top5']:.4f}"
        print(
            f"| {r['head']} | {r['classes']} | {r['n']} | {r['val_top1']:.4f} | {r['test_top1']:.4f} | {top5} "
            f"| {r['test_macro_f1']:.4f} |"
        )


def _test_groups(out: Path, cache: str, name: str) -> dict:
    """Test metrics of each stage's class group (within the group, as the published protocol scores them)."""
    from vestis.data import load_dataset
    from vestis.engine.features import infer_cached
    from vestis.models.run_config import resolve_data_load
    from vestis.train.history import group_metrics

    model = vestis.load(out / name, runtime="torch", precision="fp32", cache_dir=cache)
    card = model.card
    ds = load_dataset(**resolve_data_load(out / name, card))
    head = next(iter(model.classes))
    classes = model.classes[head]
    test = [s for s in ds.samples if s.split == "test" and s.labels.get(head) in classes]
    views = tuple(card["train_config"].get("views", ["plain"]))
    got = infer_cached(model.runner, [s.path for s in test], views, cache_dir=cache)
    y = np.array([classes.index(s.labels[head]) for s in test])
    keep = got.ok
    groups = card["train_config"]["groups"]
    res = {g["stage"]: group_metrics(y[keep], got.probs[head][keep], classes, g["classes"]) for g in groups}
    unseen = sum(1 for s in ds.samples if s.split == "test" and s.labels.get(head) not in classes)
    res["test_images_of_classes_without_training_images"] = unseen
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-catalogue")
    ap.add_argument(
        "--cache-dir", help="feature cache (default: a fresh OUT/cache, so the first run is cold)"
    )
    ap.add_argument("--parts", default="cold,year,protocol,colour")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"needs the shared catalogue at {DATA}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or str(out / "cache")
    parts = args.parts.split(",")
    saved = out / "results.json"  # parts run separately add to it
    results = {
        **(json.loads(saved.read_text()) if saved.is_file() else {}),
        "cpu": cpu_info(),
        "cache": cache,
    }
    print(json.dumps(results["cpu"]), flush=True)
    if "cold" in parts:
        model, seconds, log = _train(out, cache, "stratified", labels=HEADS)
        rows = _head_rows(_evaluate(out, cache, "stratified"), model.metrics["validation"])
        results["stratified"] = {
            "seconds": seconds,
            "seconds_features": log["seconds_features"],
            "features_runtime": log["features_runtime"],
            "selected": log["selected"],
            "heads": rows,
        }
        _table(rows, f"seeded stratified split, one 7-head model ({seconds / 60:.1f} min)")
    if "year" in parts:
        model, seconds, log = _train(out, cache, "year", labels=HEADS, split="year:even")
        rows = _head_rows(_evaluate(out, cache, "year"), model.metrics["validation"])
        results["year"] = {"seconds": seconds, "seconds_features": log["seconds_features"], "heads": rows}
        _table(rows, f"year split (even train, odd test), same options ({seconds / 60:.1f} min)")
    if "protocol" in parts:
        model, seconds, log = _train(
            out, cache, "protocol", labels=["articleType"], split="year:even", stages="top:20,rest"
        )
        groups = _test_groups(out, cache, "protocol")
        results["protocol"] = {"seconds": seconds, "test_groups": groups, "validation_groups": log["groups"]}
        print("\npublished protocol (year split, --stages top:20,rest), test, within each group:")
        print(json.dumps(groups, indent=1))
        print(
            "validation, effect of the second stage on the first group:", json.dumps(log["groups"]["effect"])
        )
    if "colour" in parts:
        results["colour"] = {}
        for name, extra in (("colour-plain", {}), ("colour-stats", {"colour_stats": True})):
            model, seconds, log = _train(out, cache, name, labels=["baseColour"], **extra)
            rows = _head_rows(_evaluate(out, cache, name), model.metrics["validation"])
            results["colour"][name] = {"seconds": seconds, "selected": log["selected"], "heads": rows}
            _table(rows, f"baseColour, {name}")
    if "fit" in parts:
        lines = (DATA / "styles.csv").read_text(encoding="utf-8", errors="replace").splitlines()
        subset = out / "every4th.csv"
        subset.write_text("\n".join([lines[0], *lines[1::4]]) + "\n")
        results["fit"] = {}
        for fit in ("crop", "pad"):
            name = f"fit-{fit}"
            model, seconds, log = _train(
                out,
                cache,
                name,
                csv=subset,
                labels=["articleType", "subCategory", "baseColour"],
                fit=fit,
                tta=False,
            )
            rows = _head_rows(_evaluate(out, cache, name), model.metrics["validation"])
            results["fit"][name] = {"seconds": seconds, "heads": rows}
            _table(rows, f"every 4th row, --fit {fit}, plain view ({seconds / 60:.1f} min)")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
