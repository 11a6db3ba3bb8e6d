"""Test-time resolution: score trained runs with only their evaluation size changed (crop fraction kept).

    .venv/bin/python benchmarks/bench_test_size.py validation runs/ft-lite0:224,256,288 runs/ft-lite1:240,272

Each RUN:SIZES is evaluated (``vestis evaluate``'s library function, the run's own data and split) once per
size, from a temporary copy of the run whose config.json differs only in ``preprocess.input_size``."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from vestis.evaluate.runner import evaluate_run


def score_at(run: Path, size: int, split: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        copy.mkdir()
        for name in ("model.safetensors", "skipped.json"):
            if (run / name).exists():
                os.symlink((run / name).resolve(), copy / name)
        config = json.loads((run / "config.json").read_text())
        config["preprocess"]["input_size"] = size
        (copy / "config.json").write_text(json.dumps(config))
        return evaluate_run(str(copy), split=split, out=copy / "eval", quiet=True)["heads"]


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    split = sys.argv[1]
    print(f"| run | size | {split} top-1 | {split} macro-F1 |\n|---|---:|---:|---:|")
    for spec in sys.argv[2:]:
        run, _, sizes = spec.rpartition(":")
        for size in sizes.split(","):
            for head, m in score_at(Path(run), int(size), split).items():
                name = run if head == "label" else f"{run} · {head}"
                print(f"| {name} | {size} | {m['top1']:.4f} | {m['macro_f1']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
