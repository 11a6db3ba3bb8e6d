"""`vestis predict` throughput over the shared catalogue (decode included) and top-1 on the clothing test split,
for every runtime, in one run, through the Python API (what `vestis predict` runs).

    .venv/bin/python benchmarks/bench_predict.py [--run RUN] [--eager-n 1500] [--n 0] [--embed-n 0] [--json out.json]

Each runtime predicts the same catalogue images (a cold run: no feature cache is involved; the ONNX files
are exported before the clock starts). Eager PyTorch (fp32, and bf16 where the CPU has bf16 units) is
slow, so it runs on a seeded sample of ``--eager-n`` of those images; every row states how many it ran.
Top-1 is measured on the clothing test split (372 photos) with the same runners."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import SHARED  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
CATALOG = SHARED / "fashion-product-images-small" / "images"
CLOTHES = SHARED / "clothing-dataset-small" / "test"


def timed_predict(model, paths: list[str], batch_size: int, workers: int | None) -> tuple[float, int]:
    t = time.perf_counter()
    n_ok = sum("predictions" in r for r in model.predict_iter(paths, batch_size=batch_size, workers=workers))
    return time.perf_counter() - t, n_ok


def clothing_top1(model) -> float:
    from vestis.benchmark import labelled_images
    from vestis.engine.infer import infer, top1

    paths, labels = labelled_images(CLOTHES)
    head = model.heads[0]
    out = infer(model.runner, paths, batch_size=32)
    return top1(out.probs, out.ok, {head: labels}, model.classes)["acc"][head]


def main() -> int:
    import vestis
    from vestis.runtime import cpu_info

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run directory (default: the bundled fine-tuned Lite0)")
    ap.add_argument("--n", type=int, default=0, help="catalogue images for the fast runtimes (0: all)")
    ap.add_argument("--eager-n", type=int, default=1500, help="catalogue images for eager PyTorch")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, help="decoding processes (default: vestis' default)")
    ap.add_argument("--embed-n", type=int, default=0, help="also time Model.embed_items on this many images")
    ap.add_argument("--variants", nargs="+", default=["torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"])
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    if not CATALOG.is_dir():
        print(f"needs the shared catalogue at {CATALOG}", file=sys.stderr)
        return 1

    paths = sorted(str(p) for p in CATALOG.iterdir() if p.suffix == ".jpg")
    rng = np.random.default_rng(0)
    if args.n:
        paths = [paths[i] for i in np.sort(rng.choice(len(paths), args.n, replace=False))]
    eager = [
        paths[i]
        for i in np.sort(
            np.random.default_rng(1).choice(len(paths), min(args.eager_n, len(paths)), replace=False)
        )
    ]
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {cpu['flags']}; {len(paths)} catalogue images")
    base = vestis.load(args.run, runtime="torch", device="cpu", precision="fp32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            runtime, precision = variant.split("-")
            if variant == "torch-bf16" and not any(f in cpu["flags"] for f in ("avx512_bf16", "amx_bf16")):
                rows.append(
                    {"variant": variant, "skipped": "no AVX512-BF16/AMX: bf16 is emulated (slower than fp32)"}
                )
                print(rows[-1])
                continue
            if runtime == "torch":
                model = vestis.load(args.run, runtime="torch", device="cpu", precision=precision)
                subset = eager
            else:
                out = Path(tmp) / f"{variant}.onnx"
                t = time.perf_counter()
                base.export(out, int8=precision == "int8")
                export_s = time.perf_counter() - t
                model = vestis.load(out)
                subset = paths
            seconds, n_ok = timed_predict(model, subset, args.batch_size, args.workers)
            row = {
                "variant": variant,
                "runtime": model.runtime,
                "images": len(subset),
                "predicted": n_ok,
                "seconds": round(seconds, 1),
                "images_per_s": round(len(subset) / seconds, 1),
                "clothing_test_top1": round(clothing_top1(model), 4),
            }
            if runtime == "onnx":
                row["export_seconds"] = round(export_s, 1)
            if args.embed_n:  # embedding (the index's path): the same images, right after predicting them
                some = subset[: args.embed_n]
                t = time.perf_counter()
                model.embed_items(some, batch_size=args.batch_size, workers=args.workers)
                row["embed_images"] = len(some)
                row["embed_images_per_s"] = round(len(some) / (time.perf_counter() - t), 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    ref = next((r for r in rows if r["variant"] == "torch-fp32" and "images_per_s" in r), None)
    if ref:
        for r in rows:
            if "images_per_s" in r:
                r["speedup_vs_eager_fp32"] = round(r["images_per_s"] / ref["images_per_s"], 2)
                r["top1_change_points"] = round(
                    100 * (r["clothing_test_top1"] - ref["clothing_test_top1"]), 2
                )
    print("\n| variant | runtime | images | img/s (decode included) | × eager fp32 | clothing test top-1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "images_per_s" in r:
            print(
                f"| {r['variant']} | {r['runtime']} | {r['images']} | {r['images_per_s']} | "
                f"{r.get('speedup_vs_eager_fp32', '-')} | {r['clothing_test_top1']:.4f} |"
            )
        else:
            print(f"| {r['variant']} | skipped: {r['skipped']} | | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
