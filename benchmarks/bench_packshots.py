"""Children's garments (issue 13, part 4): clothing-photo models scored on the shared catalogue's images of the
same classes, children's (Boys, Girls) beside adults' (Men, Women).

    flock /tmp/vestis-cpu.lock .venv/bin/python benchmarks/bench_packshots.py \\
        --model default=default --model r256=/work/lite1/ft-lite0-robust-256 [--ensemble both=default,r256] \\
        [--adults-per-class 100] [--min-kids 20] [--kids-share 1] [--seed 0] [--cache DIR] [--json results.json]

The real photos the default model is checked on are about half children's clothes, which clothing-dataset-small
lacks; its test split cannot show that loss. The shared catalogue has children's garments of seven of the ten
classes (small 60x80 images). Mind what the two groups are: the catalogue shows children's garments mostly
flat (the garment alone on white) and adults' garments mostly worn by a model (a person, and other garments,
in the frame: a t-shirt over jeans, shorts above shoes). So the groups differ in presentation as well as in
age, and ``gap`` (adults - children) is not a children's loss; each group's figures stand on their own: the
children's rows say how children's garments shot alone are read, the adults' how garments on a person are.
Mapping (articleType → class, unambiguous ones only): Tshirts → t-shirt, Shirts → shirt, Dresses → dress,
Shorts → shorts, Skirts → skirt, Jeans/Trousers/Track Pants → pants, Casual/Sports/Formal Shoes → shoes,
Jackets → outwear, Caps/Hat → hat. Tops, Sweaters, Sweatshirts, Capris, Leggings and Unisex rows are left out
(they would be read as more than one class).

Every children's row of a class with at least ``--min-kids`` of them is scored (or a seeded ``--kids-share`` of
each class's, leaving the rest to train on: ``onmodel_folder.py``), and ``--adults-per-class`` adults' rows of
each such class (a seeded sample). Rows whose image is missing or unreadable are skipped and
counted. Each model is run on the plain and the mirrored view (as bench_robustness.py) and scored with flip
averaging: top-1 over all rows, macro recall over the classes (children's rows are 63 % t-shirts), per-class
recall, and what each class is read as. Inference only: wrap the run in ``flock``."""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from bench_robustness import cached_view_probs, model_key, rows_from  # benchmarks/, beside this script
from common import CATALOGUE, add_model_options, models_and_ensembles, report

CLASS_OF = {
    "Tshirts": "t-shirt",
    "Shirts": "shirt",
    "Dresses": "dress",
    "Shorts": "shorts",
    "Skirts": "skirt",
    "Jeans": "pants",
    "Trousers": "pants",
    "Track Pants": "pants",
    "Casual Shoes": "shoes",
    "Sports Shoes": "shoes",
    "Formal Shoes": "shoes",
    "Jackets": "outwear",
    "Caps": "hat",
    "Hat": "hat",
}
GROUPS = {"children": ("Boys", "Girls"), "adults": ("Men", "Women")}


def select_rows(
    samples: list, adults_per_class: int, min_kids: int, seed: int, kids_share: float = 1.0
) -> dict[str, list]:
    """{group: [(sample, class)]}: the children's rows of each class with ``min_kids`` or more (all of them, or
    a seeded ``kids_share`` of each class: the rest can train a model), and a seeded sample of
    ``adults_per_class`` adults' rows of those classes (sorted by path: the same rows every run)."""
    if not 0 < kids_share <= 1:
        raise ValueError(f"kids_share must be in (0, 1], got {kids_share}")
    by = {g: {} for g in GROUPS}
    for s in sorted(samples, key=lambda s: str(s.path)):
        c = CLASS_OF.get(s.labels.get("articleType"))
        group = next((g for g, genders in GROUPS.items() if s.meta.get("gender") in genders), None)
        if c is not None and group is not None:
            by[group].setdefault(c, []).append(s)
    classes = sorted(c for c, rows in by["children"].items() if len(rows) >= min_kids)
    rng = np.random.default_rng(seed)
    out = {"children": [(s, c) for c in classes for s in by["children"][c]], "adults": []}
    for c in classes:
        rows = by["adults"].get(c, [])
        pick = sorted(rng.choice(len(rows), min(adults_per_class, len(rows)), replace=False))
        out["adults"] += [(rows[i], c) for i in pick]
    if kids_share < 1:  # drawn after the adults' rows, so those stay the same rows for any share
        kept = []
        for c in classes:
            rows = by["children"][c]
            pick = sorted(rng.choice(len(rows), max(1, round(kids_share * len(rows))), replace=False))
            kept += [(rows[i], c) for i in pick]
        out["children"] = kept
    return out


def group_scores(probs: np.ndarray, truth: list[str], classes: list[str]) -> dict:
    """Flip-averaged ``probs`` (N, C) against class names: top-1, macro recall, per-class recall, and what each
    class is read as ({class: {predicted: count}}, most frequent first)."""
    pred = [classes[k] for k in probs.argmax(1)]
    hit = np.array([p == t for p, t in zip(pred, truth, strict=True)])
    recall = {c: float(hit[[t == c for t in truth]].mean()) for c in sorted(set(truth))}
    return {
        "n": len(truth),
        "top1": float(hit.mean()),
        "macro_recall": float(np.mean(list(recall.values()))),
        "recall": recall,
        "read_as": {
            c: dict(Counter(p for p, t in zip(pred, truth, strict=True) if t == c).most_common())
            for c in recall
        },
    }


def score(args) -> dict:
    import vestis
    from vestis.data import load_image
    from vestis.data.catalog import read_catalog
    from vestis.runtime import cpu_info

    csv = Path(args.catalogue) / "styles.csv"
    ds = read_catalog(csv, labels=("articleType",))
    chosen = select_rows(ds.samples, args.adults_per_class, args.min_kids, args.seed, args.kids_share)
    sources, ensembles = models_and_ensembles(args)
    models = {n: vestis.load(None if s == "default" else s) for n, s in sources.items()}
    keys_of = {n: model_key(s) for n, s in sources.items()}
    for name, members in ensembles.items():
        if any(models[m].classes != models[members[0]].classes for m in members):
            raise SystemExit(f"--ensemble {name}: its models' classes differ")
    classes_of = {n: next(iter(m.classes.values())) for n, m in models.items()}
    classes_of |= {n: classes_of[members[0]] for n, members in ensembles.items()}
    result = {
        "cpu": cpu_info(),
        "catalogue": str(args.catalogue),
        "models": sources,
        "ensembles": ensembles,
        "seed": args.seed,
        "adults_per_class": args.adults_per_class,
        "kids_share": args.kids_share,
        "skipped_rows_of_csv": len(ds.skipped),
        "groups": {},
    }
    cache = Path(args.cache) if args.cache else None
    for group, rows in chosen.items():
        images, truth, unreadable = [], [], []
        for s, c in rows:
            try:
                images.append(load_image(s.path))
                truth.append(c)
            except Exception as e:  # a missing or damaged catalogue image: counted, not scored
                unreadable.append(f"{s.path}: {e}")
        key_rows = zlib.crc32("\n".join(str(s.path) for s, _ in rows).encode())
        views, seconds = {}, {}
        for name, m in models.items():
            t = time.time()
            key = f"{keys_of[name]}-packshots-{group}-{key_rows:08x}"
            views[name] = cached_view_probs(m.runner, images, cache, key)
            seconds[name] = time.time() - t
        flipped = rows_from(models, ensembles, views)  # members averaged as vestis.load([a, b]) does
        per_model = {
            name: group_scores(flipped[f"{name} +flip"], truth, classes_of[name]) for name in classes_of
        }
        for name, t in seconds.items():
            per_model[name]["seconds"] = t
        for name, r in per_model.items():
            print(
                f"[{group}] {name}: top-1 {r['top1']:.4f}  macro recall {r['macro_recall']:.4f}  ({len(truth)} images)",
                flush=True,
            )
        result["groups"][group] = {
            "n": len(truth),
            "per_class": dict(Counter(truth)),
            "unreadable": len(unreadable),
            "unreadable_examples": unreadable[:5],
            "models": per_model,
        }
    for name in [*models, *ensembles]:
        kid, adult = (result["groups"][g]["models"][name] for g in ("children", "adults"))
        result.setdefault("gap", {})[name] = {
            "top1": adult["top1"] - kid["top1"],
            "macro_recall": adult["macro_recall"] - kid["macro_recall"],
        }
    return result


def markdown(result: dict) -> str:
    groups = result["groups"]
    classes = sorted(groups["children"]["per_class"])
    head = "| model | group | n | top-1 | macro recall | " + " | ".join(classes) + " |"
    lines = [head, "|---|---|---:|---:|---:|" + "---:|" * len(classes)]
    names = list(groups["children"]["models"])
    for name in names:
        for g in ("adults", "children"):
            s = groups[g]["models"][name]
            rec = " | ".join(f"{s['recall'].get(c, float('nan')):.3f}" for c in classes)
            lines.append(f"| {name} | {g} | {s['n']} | {s['top1']:.4f} | {s['macro_recall']:.4f} | {rec} |")
    lines.append("")
    for name in names:
        for g in ("adults", "children"):
            wrong = {
                c: ", ".join(f"{p} {k}" for p, k in reads.items() if p != c)
                for c, reads in groups[g]["models"][name]["read_as"].items()
            }
            lines.append(f"{name}, {g}, misread as: " + "; ".join(f"{c}: {w}" for c, w in wrong.items() if w))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalogue", default=str(CATALOGUE))
    add_model_options(p)
    p.add_argument("--adults-per-class", type=int, default=100)
    p.add_argument("--min-kids", type=int, default=20, help="classes with fewer children's rows are left out")
    p.add_argument(
        "--kids-share",
        type=float,
        default=1.0,
        help="score this seeded share of each class's children's rows",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--cache", default=None, help="folder keeping each model's probabilities")
    args = p.parse_args(argv)
    result = score(args)
    return report(result, args.json, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
