"""Robustness to shifted photos (issue 13, part 4): models scored on a clean split and on seeded shifted copies.

    flock /tmp/vestis-cpu.lock .venv/bin/python benchmarks/bench_robustness.py \\
        --model default=default --model fast=/work/robust/fast-lite1-crop --ensemble default+fast=default,fast \\
        [--splits validation test] [--shifts zoom_in blur ...] [--seed 0] [--limit N] [--json results.json]
        [--cache DIR]

The shifted copies come from :mod:`shifts` (made in memory, seeded per image, never written anywhere).

Each ``--model NAME=SOURCE`` (``default`` for the bundled model, or a run directory) is loaded with
``vestis.load`` (ONNX Runtime fp32 on a CPU) and run once per image on the plain and the mirrored view (the
engine's own loader and transform); its row is scored without and with flip TTA (the two views' probabilities
averaged, as ``predict_images(tta=True)`` does). ``--ensemble NAME=A,B`` rows average their members'
probabilities per head, as ``vestis.load([a, b])`` does; ``--check N`` compares both against the engine's own
TTA and ensemble on the first N clean images (max |Δp| printed and stored). Reported per split: top-1 on the
clean split and on each shift, their mean over shifts, the gap (clean − mean) and per-class recall (clean, mean
over shifts). ``--cache DIR`` keeps each model's probabilities per split and shift (keyed by the model's weights
and config, the images, the shift and the seed), so a later run adding a model scores only that one. Choose on validation; test is for reporting. Inference only: wrap the run in ``flock``."""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from common import CLOTHING, add_model_options, models_and_ensembles, report  # benchmarks/, beside it
from PIL import Image
from shifts import SHIFTS, background_mask, shifted  # benchmarks/shifts.py, beside this script

DATA = CLOTHING


# ---------------------------------------------------------------------------------------------- scoring


def view_probs(runner, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
    """(N, 2, C): the single head's probabilities on the plain and the mirrored view of each image (the
    engine's loader and transform, as ``predict_images`` uses them)."""
    from vestis.engine.infer import _flat, image_set
    from vestis.engine.loader import iterate_batches

    (head,) = runner.classes
    out = np.zeros((len(images), 2, len(runner.classes[head])), np.float32)
    ds = image_set(runner, images, ("plain", "flip"))
    for batch in iterate_batches(ds, batch_size, workers=0):
        if batch.errors:
            raise RuntimeError(f"images failed: {batch.errors[:3]}")
        p, _ = runner(_flat(batch.x))
        out[batch.idx] = p[head].reshape(len(batch.idx), 2, -1)
    return out


def model_key(source: str) -> str:
    """A key for a model's outputs: the bytes of its weights and config (the bundled one for 'default')."""
    import hashlib

    from vestis.models.run_config import resolve_model_dir

    d = resolve_model_dir(source)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update((d / name).read_bytes())
    return h.hexdigest()[:16]


def cached_view_probs(runner, images, cache: Path | None, key: str) -> np.ndarray:
    """:func:`view_probs`, stored in ``cache`` as ``key``.npy (``key``: model, split, images, shift, seed)."""
    path = cache / f"{key}.npy" if cache else None
    if path and path.is_file():
        return np.load(path)
    p = view_probs(runner, images)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, p)
    return p


def top1(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean())


def recall(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> dict[str, float]:
    pred = probs.argmax(1)
    return {c: float((pred[y == k] == k).mean()) for k, c in enumerate(classes) if (y == k).any()}


def load_split(data: Path, split: str, limit: int | None):
    from vestis.data import load_dataset, load_image

    ds = load_dataset(data)
    samples = sorted(ds.split(split), key=lambda s: str(s.path))
    if limit:
        samples = samples[:: max(1, len(samples) // limit)][:limit]
    keys = [str(Path(s.path).relative_to(data / split)) for s in samples]
    return [load_image(s.path) for s in samples], [s.labels["label"] for s in samples], keys


def rows_from(models: dict, ensembles: dict, probs: dict) -> dict[str, np.ndarray]:
    """Row name -> (N, C) probabilities: every model and ensemble, plain and with flip TTA."""
    rows = {}
    for name in [*models, *ensembles]:
        members = ensembles.get(name, [name])
        p = np.mean([probs[m] for m in members], axis=0)  # (N, 2, C), members averaged per view
        rows[name] = p[:, 0]
        rows[f"{name} +flip"] = p.mean(1)
    return rows


def check_engine(models: dict, sources: dict, ensembles: dict, images: list, mine: dict) -> dict:
    """max |Δp| between these rows and the engine's own TTA (``predict_images(tta=True)``) / ensembles
    (``vestis.load([a, b])``) on ``images``."""
    import vestis

    out = {}
    for name in [*models, *ensembles]:
        if name in ensembles:
            model = vestis.load([sources[m] for m in ensembles[name]])
        else:
            model = models[name]
        (head,) = model.classes
        classes = model.classes[head]
        res = model.predict_images(images, top_k=len(classes), tta=True)
        theirs = np.array(
            [[{p["label"]: p["score"] for p in r["predictions"][head]}[c] for c in classes] for r in res]
        )
        out[f"{name} +flip"] = float(np.abs(theirs - mine[f"{name} +flip"][: len(images)]).max())
    return out


def score(args) -> dict:
    import vestis

    sources, ensembles = models_and_ensembles(args)
    models = {n: vestis.load(None if s == "default" else s) for n, s in sources.items()}
    keys_of = {n: model_key(s) for n, s in sources.items()}
    cache = Path(args.cache) if args.cache else None
    classes = None
    for name, m in models.items():
        (head,) = m.classes
        if classes is None:
            classes = m.classes[head]
        elif m.classes[head] != classes:
            raise SystemExit(f"{name}: classes {m.classes[head]} differ from {classes}")
    shifts = ["clean", *args.shifts]
    result = {
        "seed": args.seed,
        "data": str(args.data),
        "models": sources,
        "ensembles": ensembles,
        "runtimes": {n: m.runtime for n, m in models.items()},
        "shifts": args.shifts,
        "splits": {},
    }
    from vestis.runtime import cpu_info

    result["cpu"] = cpu_info()
    for split in args.splits:
        t0 = time.time()
        images, labels, keys = load_split(Path(args.data), split, args.limit)
        images_key = zlib.crc32("\n".join(keys).encode())
        y = np.array([classes.index(c) for c in labels])
        per_shift: dict[str, dict] = {}
        secs = {n: 0.0 for n in models}
        cover = {}
        for shift in shifts:
            t = time.time()
            imgs = [shifted(im, shift, args.seed, k) for im, k in zip(images, keys, strict=True)]
            if shift.startswith("bg_"):
                c = np.array([background_mask(im).mean() for im in images])
                cover[shift] = {"mean": float(c.mean()), "images_over_10pct": float((c > 0.1).mean())}
            make_s = time.time() - t
            probs = {}
            for name, m in models.items():
                t = time.time()
                key = f"{keys_of[name]}-{split}-{images_key:08x}-{shift}-{args.seed}"
                probs[name] = cached_view_probs(m.runner, imgs, cache, key)
                secs[name] += time.time() - t
            rows = rows_from(models, ensembles, probs)
            per_shift[shift] = {
                r: {"top1": top1(p, y), "recall": recall(p, y, classes)} for r, p in rows.items()
            }
            if shift == "clean" and args.check:
                result.setdefault("check_max_abs_dp", {})[split] = check_engine(
                    models, sources, ensembles, imgs[: args.check], rows
                )
            line = "  ".join(f"{r} {v['top1']:.4f}" for r, v in per_shift[shift].items())
            print(f"[{split}] {shift:<10} ({make_s:.0f}s to make) {line}", flush=True)
        summary = {}
        for r in per_shift["clean"]:
            clean = per_shift["clean"][r]["top1"]
            mean = float(np.mean([per_shift[s][r]["top1"] for s in args.shifts])) if args.shifts else None
            summary[r] = {
                "clean": clean,
                "mean_shifted": mean,
                "gap": None if mean is None else clean - mean,
                "worst": min(args.shifts, key=lambda s: per_shift[s][r]["top1"]) if args.shifts else None,
                "recall_clean": per_shift["clean"][r]["recall"],
                "recall_mean_shifted": {
                    c: float(np.mean([per_shift[s][r]["recall"][c] for s in args.shifts]))
                    for c in per_shift["clean"][r]["recall"]
                }
                if args.shifts
                else None,
            }
        result["splits"][split] = {
            "n": len(images),
            "per_shift": per_shift,
            "summary": summary,
            "background_cover": cover,
            "model_seconds": secs,
            "seconds": time.time() - t0,
        }
    return result


def markdown(result: dict) -> str:
    """The summary table (both splits) and the per-shift table of each split."""
    splits = list(result["splits"])
    rows = list(result["splits"][splits[0]]["summary"])
    head = "| model | " + " | ".join(f"{s} clean | {s} shifted (mean) | {s} gap" for s in splits) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(splits))]
    for r in rows:
        cells = []
        for s in splits:
            v = result["splits"][s]["summary"][r]
            cells += [f"{v['clean']:.4f}", f"{v['mean_shifted']:.4f}", f"{v['gap']:+.4f}"]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    for s in splits:
        shifts = ["clean", *result["shifts"]]
        lines += ["", f"{s} (n = {result['splits'][s]['n']}), top-1 per shift:", ""]
        lines.append("| model | " + " | ".join(shifts) + " |")
        lines.append("|---|" + "---:|" * len(shifts))
        for r in rows:
            ps = result["splits"][s]["per_shift"]
            lines.append(f"| {r} | " + " | ".join(f"{ps[sh][r]['top1']:.3f}" for sh in shifts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA))
    add_model_options(p)
    p.add_argument("--splits", nargs="+", default=["validation", "test"])
    p.add_argument("--shifts", nargs="*", default=list(SHIFTS), choices=list(SHIFTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="score only N images per split (a smoke run)")
    p.add_argument("--check", type=int, default=32, help="clean images compared against the engine (0: off)")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--cache", default=None, help="folder keeping each model's probabilities per split and shift"
    )
    args = p.parse_args(argv)
    result = score(args)
    return report(result, args.json, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
