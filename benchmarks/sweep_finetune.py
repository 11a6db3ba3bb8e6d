"""Screen fine-tuning settings side by side: one `vestis train --mode finetune` per variant (and seed), each
scored by its best validation epoch. Test is never read.

    .venv/bin/python benchmarks/sweep_finetune.py DATA --out runs/sweep --base "--backbone lite0" \\
        --variant base= --variant mixup="--mixup 0.2" --variant cutmix="--cutmix 1.0" [--seeds 0 1]

Each --variant is NAME=OPTIONS (OPTIONS added to --base). Prints a markdown table (mean over seeds of the
best validation top-1 and macro-F1, the epoch it came at, and wall time) and writes OUT/sweep.json."""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_variant(data: str, out: Path, options: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "vestis",
        "train",
        data,
        "--mode",
        "finetune",
        "--out",
        str(out),
        "--quiet",
        "--no-tensorboard",
        *options,
    ]
    t = time.time()
    subprocess.run(cmd, check=True)
    seconds = time.time() - t
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(log, key=lambda r: r["val_top1"])
    return {
        "val_top1": best["val_top1"],
        "val_macro_f1": best["val_macro_f1"],
        "best_epoch": best["epoch"],
        "epochs": len(log),
        "seconds": seconds,
        "curve": [round(r["val_top1"], 4) for r in log],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="", help="options every variant gets")
    ap.add_argument("--variant", action="append", required=True, help="NAME=OPTIONS (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    out = Path(args.out)
    results = {}
    for spec in args.variant:
        name, sep, opts = spec.partition("=")
        if not sep or not name:
            ap.error(f"--variant {spec!r}: expected NAME=OPTIONS")
        runs = []
        for seed in args.seeds:
            # the variant's options come last, so a variant may set its own seed
            options = [*shlex.split(args.base), "--seed", str(seed), *shlex.split(opts)]
            runs.append(run_variant(args.data, out / f"{name}-s{seed}", options))
            print(
                f"{name} seed {seed}: val {runs[-1]['val_top1']:.4f} at epoch {runs[-1]['best_epoch']} "
                f"({runs[-1]['seconds']:.0f} s) curve {runs[-1]['curve']}",
                flush=True,
            )
        results[name] = {"options": opts, "runs": runs}
        (out / "sweep.json").write_text(
            json.dumps({"base": args.base, "seeds": args.seeds, "results": results}, indent=1)
        )
    print(f"\nbase options: {args.base or '(defaults)'}; seeds {args.seeds}\n")
    print(
        "| variant | options | val top-1 | val macro-F1 | best epoch | seconds |\n|---|---|---:|---:|---:|---:|"
    )
    for name, r in results.items():
        runs = r["runs"]
        mean = {k: statistics.mean(x[k] for x in runs) for k in ("val_top1", "val_macro_f1", "seconds")}
        spread = f" ± {statistics.stdev(x['val_top1'] for x in runs):.4f}" if len(runs) > 1 else ""
        print(
            f"| {name} | `{r['options']}` | {mean['val_top1']:.4f}{spread} | {mean['val_macro_f1']:.4f} | "
            f"{'/'.join(str(x['best_epoch']) for x in runs)} | {mean['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
