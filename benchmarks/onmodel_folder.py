"""A training folder for the on-model remedy (docs/BENCHMARKS.md, "The remedy, measured"): the clothing photos'
folder layout, with up to ``--per-class`` adults' on-model catalogue images of each mapped class added to
``train/`` and, with ``--kids-per-class``, up to that many children's images of each (seeded; never a row that
``bench_packshots.py`` scores with the same settings: give it the same ``--adults-per-class``, ``--kids-share``
and seed). Everything is a symlink: nothing is copied next to or out of the shared data.

    .venv/bin/python benchmarks/onmodel_folder.py --out /work/onmodel/data [--per-class 150] [--kids-per-class 0]
        [--every-class] [--seed 1] [--photos DIR] [--catalogue DIR] [--adults-per-class 100] [--kids-share 1]
        [--min-kids 20] [--bench-seed 0]

Prints the images added per class as one JSON line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from bench_packshots import CLASS_OF, GROUPS, select_rows  # benchmarks/, beside this script
from common import CATALOGUE, CLOTHING


def build(
    photos: Path,
    catalogue: Path,
    out: Path,
    per_class: int,
    seed: int,
    bench: dict,
    kids_per_class: int = 0,
    every_class: bool = False,
) -> dict[str, dict[str, int]]:
    """Write the folder (``out`` must not exist); returns {group: {class: catalogue images added}}. Only the
    classes the benchmark scores gain images, or with ``every_class`` every mapped one (hats, outerwear)."""
    from vestis.data.catalog import read_catalog
    from vestis.data.mix import add_rows, catalogue_pools, mirror_folder

    if out.exists():
        raise SystemExit(f"{out}: exists (give a new folder)")
    samples = read_catalog(catalogue / "styles.csv", labels=("articleType",)).samples
    scored = select_rows(
        samples, bench["adults_per_class"], bench["min_kids"], bench["seed"], bench.get("kids_share", 1.0)
    )
    taken = [s.path for rows in scored.values() for s, _ in rows]
    classes = set(CLASS_OF.values()) if every_class else {c for _, c in scored["children"]}
    mapping = {value: c for value, c in CLASS_OF.items() if c in classes}
    pools = {
        g: catalogue_pools(samples, mapping, "articleType", {"gender": GROUPS[g]}, taken) for g in GROUPS
    }
    mirror_folder(photos, out)
    rng = np.random.default_rng(seed)
    caps = (("adults", per_class), ("children", kids_per_class))
    return {group: add_rows(out / "train", pools[group], cap, rng) for group, cap in caps if cap > 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument(
        "--kids-per-class", type=int, default=0, help="children's catalogue images added per class"
    )
    p.add_argument(
        "--every-class", action="store_true", help="add to every mapped class, not only scored ones"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--photos", default=str(CLOTHING))
    p.add_argument("--catalogue", default=str(CATALOGUE))
    p.add_argument("--adults-per-class", type=int, default=100, help="as given to bench_packshots.py")
    p.add_argument("--kids-share", type=float, default=1.0, help="as given to bench_packshots.py")
    p.add_argument("--min-kids", type=int, default=20, help="as given to bench_packshots.py")
    p.add_argument("--bench-seed", type=int, default=0, help="bench_packshots.py's --seed")
    a = p.parse_args(argv)
    bench = {
        "adults_per_class": a.adults_per_class,
        "kids_share": a.kids_share,
        "min_kids": a.min_kids,
        "seed": a.bench_seed,
    }
    added = build(
        Path(a.photos),
        Path(a.catalogue),
        Path(a.out),
        a.per_class,
        a.seed,
        bench,
        a.kids_per_class,
        a.every_class,
    )
    print(json.dumps(added))
    return 0


if __name__ == "__main__":
    sys.exit(main())
