"""Robustness to shifted photos (issue 13, part 4): models scored on a clean split and on seeded shifted copies.

    flock /tmp/vestis-cpu.lock .venv/bin/python benchmarks/bench_robustness.py \\
        --model default=default --model fast=/work/robust/fast-lite1-crop --ensemble default+fast=default,fast \\
        [--splits validation test] [--shifts zoom_in blur ...] [--seed 0] [--limit N] [--json results.json]
        [--cache DIR]

The shifted copies are made in memory, image by image, from the split's photos (never written anywhere): each
shift is a function ``(PIL image, numpy Generator) -> PIL image`` (:data:`SHIFTS`), and the generator of an
image is seeded by ``(--seed, the shift's name, the image's path relative to the split)``, so a copy is the
same in every run and for every model, whatever the order or ``--limit``. The shifts:

* ``zoom_in`` (a tighter crop: 60-75 % of each side, random position, resized back),
* ``zoom_out`` (a looser one: the photo shrunk to 55-70 % and pasted on a canvas of its own border colour),
* ``lowres`` (downscaled to a 64-96 px short side, then upscaled back: a small or distant garment),
* ``bg_plain`` / ``bg_texture`` (the background, found as the pixels close to the border colour that touch
  the border, replaced by another plain colour / by stripes, checks or blotches of two colours),
* ``bright`` (darker ×0.45-0.6 or brighter ×1.45-1.7), ``contrast`` (×0.4-0.55), ``temp`` (colour
  temperature: red and blue scaled by 1±0.15-0.25 in opposite directions, warm or cool),
* ``blur`` (Gaussian, radius 1.5-2.5 px per 400 px of short side), ``jpeg`` (quality 8-15),
* ``rotate`` (10-20° either way, corners filled with the border colour),
* ``combo`` (two of the above, drawn per image, one after the other).

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
import io
import json
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clothing-dataset-small"
RESAMPLE = Image.Resampling.BICUBIC


# ---------------------------------------------------------------------------------------------- the shifts


def border_colour(img: Image.Image, frac: float = 0.03) -> tuple[int, int, int]:
    """Median colour of the outer ring of the image (``frac`` of the short side wide, at least 1 px)."""
    a = np.asarray(img.convert("RGB"))
    b = max(1, round(min(a.shape[:2]) * frac))
    ring = np.concatenate(
        [a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3), a[:, :b].reshape(-1, 3), a[:, -b:].reshape(-1, 3)]
    )
    return tuple(int(v) for v in np.median(ring, axis=0))


def background_mask(img: Image.Image, tol: float = 40.0) -> np.ndarray:
    """(H, W) bool: pixels within ``tol`` (RGB distance) of the border colour, in regions touching the border."""
    from scipy import ndimage

    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    close = np.linalg.norm(a - np.array(border_colour(img), np.float32), axis=-1) < tol
    lab, _ = ndimage.label(close)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return np.isin(lab, edge[edge > 0])


def _colour_far_from(rng: np.random.Generator, c, dist: float = 120.0) -> np.ndarray:
    for _ in range(20):
        new = rng.integers(0, 256, 3)
        if np.linalg.norm(new - np.array(c)) >= dist:
            return new.astype(np.float32)
    return (255 - np.array(c)).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, c) -> np.ndarray:
    """(H, W, 3) float32: stripes, checks or blotches of two colours, both far from the old background ``c``."""
    from scipy import ndimage

    c1, c2 = _colour_far_from(rng, c), _colour_far_from(rng, c)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(3))
    period = float(rng.uniform(8, 24)) * min(h, w) / 400
    if kind == 0:  # stripes at a random angle
        t = float(rng.uniform(0, np.pi))
        m = (np.floor((xx * np.cos(t) + yy * np.sin(t)) / period) % 2).astype(np.float32)
    elif kind == 1:  # checks
        m = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:  # blotches: smoothed noise, thresholded softly
        z = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), period)
        m = 1 / (1 + np.exp(-z / (z.std() + 1e-6) * 4))
    tex = m[..., None] * c1 + (1 - m[..., None]) * c2
    return tex + rng.normal(0, 6, tex.shape).astype(np.float32)


def _replace_background(img: Image.Image, rng: np.random.Generator, textured: bool) -> Image.Image:
    from scipy import ndimage

    img = img.convert("RGB")
    a = np.asarray(img, dtype=np.float32)
    mask = background_mask(img)
    c = border_colour(img)
    h, w = mask.shape
    bg = _texture(rng, h, w, c) if textured else np.broadcast_to(_colour_far_from(rng, c), a.shape)
    m = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)[..., None]  # a soft 1-px seam
    return Image.fromarray(np.clip(a * (1 - m) + bg * m, 0, 255).astype(np.uint8))


def zoom_in(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    f = rng.uniform(0.6, 0.75)
    cw, ch = round(w * f), round(h * f)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch)).resize((w, h), RESAMPLE)


def zoom_out(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    s = rng.uniform(0.55, 0.7)
    small = img.resize((max(1, round(w * s)), max(1, round(h * s))), RESAMPLE)
    canvas = Image.new("RGB", (w, h), border_colour(img))
    x, y = int(rng.integers(0, w - small.width + 1)), int(rng.integers(0, h - small.height + 1))
    canvas.paste(small, (x, y))
    return canvas


def lowres(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    f = min(1.0, rng.uniform(64, 96) / min(w, h))
    small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    return small.resize((w, h), RESAMPLE)


def bg_plain(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _replace_background(img, rng, textured=False)


def bg_texture(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _replace_background(img, rng, textured=True)


def bright(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    f = rng.uniform(0.45, 0.6) if rng.random() < 0.5 else rng.uniform(1.45, 1.7)
    return ImageEnhance.Brightness(img).enhance(f)


def contrast(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(rng.uniform(0.4, 0.55))


def temp(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    t = rng.uniform(0.15, 0.25) * (1 if rng.random() < 0.5 else -1)  # + warm, - cool
    a = np.asarray(img.convert("RGB"), dtype=np.float32) * np.array([1 + t, 1, 1 - t], np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 2.5) * min(img.size) / 400))


def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(8, 16)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(10, 20) * (1 if rng.random() < 0.5 else -1)
    return img.convert("RGB").rotate(angle, resample=RESAMPLE, fillcolor=border_colour(img))


def combo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    names = [n for n in SHIFTS if n != "combo"]
    for k in rng.choice(len(names), size=2, replace=False):
        img = SHIFTS[names[int(k)]](img, rng)
    return img


SHIFTS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    f.__name__: f
    for f in (
        zoom_in,
        zoom_out,
        lowres,
        bg_plain,
        bg_texture,
        bright,
        contrast,
        temp,
        blur,
        jpeg,
        rotate,
        combo,
    )
}


def shift_rng(seed: int, shift: str, key: str) -> np.random.Generator:
    """The generator of one shifted copy: the same for (seed, shift, image key) in every run."""
    return np.random.default_rng([seed, zlib.crc32(shift.encode()), zlib.crc32(key.encode())])


def shifted(img: Image.Image, shift: str, seed: int, key: str) -> Image.Image:
    """``img`` under ``shift`` ('clean': unchanged), drawn for (``seed``, ``key``); always RGB, same size."""
    img = img.convert("RGB")
    return img if shift == "clean" else SHIFTS[shift](img, shift_rng(seed, shift, key))


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

    sources = dict(m.split("=", 1) for m in args.model)
    ensembles = {n: v.split(",") for n, v in (e.split("=", 1) for e in args.ensemble)}
    for name, members in ensembles.items():
        if unknown := [m for m in members if m not in sources]:
            raise SystemExit(f"--ensemble {name}: unknown models {unknown} (give them with --model)")
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
    p.add_argument("--model", action="append", default=[], help="NAME=SOURCE ('default' or a run directory)")
    p.add_argument("--ensemble", action="append", default=[], help="NAME=A,B (probabilities averaged)")
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
    if not args.model:
        args.model = ["default=default"]
    result = score(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
