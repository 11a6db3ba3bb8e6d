"""A training folder for the on-model remedy (docs/BENCHMARKS.md, "The remedy, measured"): the clothing photos'
folder layout, with up to ``--per-class`` adults' on-model catalogue images of each mapped class added to
``train/`` (seeded; never a row that ``bench_packshots.py`` scores with the same settings). Everything is a
symlink: nothing is copied next to or out of the shared data.

    .venv/bin/python benchmarks/onmodel_folder.py --out /work/onmodel/data [--per-class 150] [--seed 1]
        [--photos DIR] [--catalogue DIR] [--adults-per-class 100] [--min-kids 20] [--bench-seed 0]

Prints the images added per class as one JSON line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_packshots import CATALOGUE, CLASS_OF, GROUPS, select_rows  # benchmarks/, beside this script
from bench_robustness import DATA


def build(photos: Path, catalogue: Path, out: Path, per_class: int, seed: int, bench: dict) -> dict[str, int]:
    """Write the folder (``out`` must not exist); returns {class: catalogue images added}."""
    from vestis.data.catalog import read_catalog

    if out.exists():
        raise SystemExit(f"{out}: exists (give a new folder)")
    samples = read_catalog(catalogue / "styles.csv", labels=("articleType",)).samples
    scored = select_rows(samples, bench["adults_per_class"], bench["min_kids"], bench["seed"])
    taken = {str(s.path) for rows in scored.values() for s, _ in rows}
    classes = {c for _, c in scored["children"]}
    pool: dict[str, list] = {}
    for s in sorted(samples, key=lambda s: str(s.path)):
        c = CLASS_OF.get(s.labels.get("articleType"))
        if c in classes and s.meta.get("gender") in GROUPS["adults"] and str(s.path) not in taken:
            pool.setdefault(c, []).append(s)
    for split in ("train", "validation", "test"):
        for class_dir in sorted(p for p in (photos / split).iterdir() if p.is_dir()):
            (out / split / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.iterdir()):
                (out / split / class_dir.name / f.name).symlink_to(f.resolve())
    rng = np.random.default_rng(seed)
    added = {}
    for c in sorted(pool):
        rows = pool[c]
        (out / "train" / c).mkdir(parents=True, exist_ok=True)
        for i in sorted(rng.choice(len(rows), min(per_class, len(rows)), replace=False)):
            path = Path(rows[i].path)
            (out / "train" / c / f"catalogue-{path.name}").symlink_to(path.resolve())
        added[c] = min(per_class, len(rows))
    return added


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--photos", default=str(DATA))
    p.add_argument("--catalogue", default=str(CATALOGUE))
    p.add_argument("--adults-per-class", type=int, default=100, help="as given to bench_packshots.py")
    p.add_argument("--min-kids", type=int, default=20, help="as given to bench_packshots.py")
    p.add_argument("--bench-seed", type=int, default=0, help="bench_packshots.py's --seed")
    a = p.parse_args(argv)
    bench = {"adults_per_class": a.adults_per_class, "min_kids": a.min_kids, "seed": a.bench_seed}
    added = build(Path(a.photos), Path(a.catalogue), Path(a.out), a.per_class, a.seed, bench)
    print(json.dumps(added))
    return 0


if __name__ == "__main__":
    sys.exit(main())
