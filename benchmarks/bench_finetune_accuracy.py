"""Fine-tuning accuracy on clothing-dataset-small: train one fine-tuned model (timed), then score it, a fast-mode
run and their ensemble (class probabilities averaged) on validation (for every choice) and test (reported, never
used to choose).

    .venv/bin/python benchmarks/bench_finetune_accuracy.py --backbone lite0 --out runs/ft-lite0 \\
        --fast runs/fast-lite1 [--skip-train] [-- more `vestis train` options]

OUT holds the fine-tuned run; --fast names a fast-mode run to ensemble with (the tables in docs/BENCHMARKS.md
used `vestis train DATA --backbone lite1 --out runs/fast-lite1`, the bundled default before issue #3);
--skip-train scores an OUT that is already trained. Prints a markdown table (and writes OUT/bench.json)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import CLOTHING, train_options

DATA = CLOTHING


def scores(runs: list[str], split: str, out: Path) -> dict:
    import vestis

    report = vestis.load(runs, runtime="torch").evaluate(split=split, out=out)
    m = report["heads"]["label"]
    return {"top1": m["top1"], "macro_f1": m["macro_f1"], "n": m["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="lite0")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fast", required=True, help="fast-mode run to ensemble with")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `vestis train` options")
    args = ap.parse_args()
    import vestis

    if not DATA.exists():
        sys.exit(f"needs the shared data at {DATA}")
    extra = train_options(args.extra)
    out = Path(args.out)
    train_s = None
    if not args.skip_train:
        print(
            f"vestis.train({DATA}, mode='finetune', backbone={args.backbone!r}, out={str(out)!r}, **{extra})"
        )
        t = time.time()
        vestis.train(DATA, mode="finetune", backbone=args.backbone, out=out, runtime="torch", **extra)
        train_s = time.time() - t
    rows = []
    for name, runs in (
        (f"fine-tuned {args.backbone}", [str(out)]),
        ("fast", [args.fast]),
        ("ensemble", [str(out), args.fast]),
    ):
        val = scores(runs, "validation", out / f"bench-{name.split()[0]}-validation")
        test = scores(runs, "test", out / f"bench-{name.split()[0]}-test")
        rows.append({"model": name, "runs": runs, "validation": val, "test": test})
        print(f"{name}: val {val['top1']:.4f} test {test['top1']:.4f}", flush=True)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["validation"]["top1"])
    print(
        f"\n{args.backbone}, options {extra or '(defaults)'}: {len(log)} epochs, training "
        + (f"{train_s / 60:.1f} min" if train_s else "(not timed here)")
        + f", chosen on validation: {best['model']}"
    )
    print("| model | val top-1 | val macro-F1 | test top-1 | test macro-F1 |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        v, t = r["validation"], r["test"]
        print(
            f"| {r['model']} | {v['top1']:.4f} | {v['macro_f1']:.4f} | {t['top1']:.4f} | {t['macro_f1']:.4f} |"
        )
    summary = {"backbone": args.backbone, "options": extra, "train_s": train_s, "epochs": log, "rows": rows}
    (out / "bench.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
