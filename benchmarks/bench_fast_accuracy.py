"""Fast-mode accuracy on clothing-dataset-small for each offline backbone: validation (used for every choice)
and test (reported, never used to choose), with the wall time of training (features included).

    .venv/bin/python benchmarks/bench_fast_accuracy.py [--backbones lite0 lite1 lite2 lite_ensemble] [--out runs/bench]
        [-- --head linear --loss focal ...]

Trains with ``vestis.train`` then scores with ``Model.evaluate(split="test")`` per backbone (the Python API
the CLI runs; feature cache in OUT/cache, delete it for cold timings) and prints a markdown table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import CLOTHING, train_options

DATA = CLOTHING


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", nargs="+", default=["lite0", "lite1", "lite2", "lite_ensemble"])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument(
        "--cache-dir", help="feature cache (default OUT/cache; a warm cache makes 'train s' head-only)"
    )
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `vestis train` options")
    args = ap.parse_args()
    import vestis

    extra = train_options(args.extra)
    if not DATA.exists():
        sys.exit(f"needs the shared data at {DATA}")
    out = Path(args.out)
    rows = []
    for b in args.backbones:
        run = out / b
        t = time.time()
        cache = args.cache_dir or str(out / "cache")
        model = vestis.train(DATA, backbone=b, out=run, cache_dir=cache, quiet=True, runtime="torch", **extra)
        train_s = time.time() - t
        test = model.evaluate(split="test", out=run / "eval-test")["heads"]["label"]
        val = model.metrics["validation"]["label"]
        sel = json.loads((run / "train_log.json").read_text()).get("selected") or model.card[
            "train_config"
        ].get("selected", {})
        sel = sel.get("label", sel)  # per head since issue #10
        rows.append((b, sel, val["top1"], val["macro_f1"], test["top1"], test["macro_f1"], train_s))
        print(f"{b}: val {val['top1']:.4f} test {test['top1']:.4f} ({train_s:.0f}s)", flush=True)
    print(
        "\n| backbone | head (chosen on val) | val top-1 | val macro-F1 | test top-1 | test macro-F1 | train s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for b, sel, vt, vf, tt, tf, s in rows:
        knob = ", ".join(f"{k}={v}" for k, v in sel.items() if k != "head")
        print(f"| {b} | {sel['head']} ({knob}) | {vt:.4f} | {vf:.4f} | {tt:.4f} | {tf:.4f} | {s:.0f} |")


if __name__ == "__main__":
    main()
