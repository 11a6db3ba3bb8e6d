"""Sharp photos (issue #10 part 7): a model trained on small copies of the photos, scored on the sharp originals.

    .venv/bin/python benchmarks/bench_sharp.py [--variants letterbox squash] [--size 60x80] [--no-resaug]
        [--work DIR] [--lock /tmp/vestis-cpu.lock] [--json results.json]

For each variant, 60x80 copies of clothing-dataset-small's train/validation/test are made in a temporary
directory (letterbox: the photo fitted inside 60x80 on white, aspect ratio kept; squash: resized to exactly
60x80; Lanczos, PNG) and a fast-mode model is trained on them (``vestis.train``, default backbone, the native
size measured and recorded: 60x80). Each split is then scored

* (a) on the 60x80 copies (what the model was trained on),
* (b) on the sharp originals without native-size handling: the same run with ``native_size`` removed from its
  config.json (exactly an older checkpoint; the heads are the same, and the 60x80 training images were never
  downscaled, so this is the model that ``--native-size off`` trains),
* (c) on the sharp originals with it (the default: larger inputs box-downscaled to 60x80 first).

``--resaug`` (default on) also trains with resolution augmentation: the training split's copies again at half
the size (30x40, box filter) as extra training images (their features as extra views), scored without and
with native-size handling. Choices are read on validation; test is reported. Each training and scoring step
holds ``--lock`` (flock) while it runs, so other CPU-heavy jobs can interleave between steps."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import CLOTHING  # benchmarks/, beside this script
from PIL import Image, ImageOps

DATA = CLOTHING
SPLITS = ("train", "validation", "test")


@contextlib.contextmanager
def cpu_lock(path: str | None):
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def small_copy(img: Image.Image, size: tuple[int, int], variant: str) -> Image.Image:
    """A photo as a small catalogue image: letterboxed on white (aspect kept) or squashed to ``size``."""
    if variant == "letterbox":
        return ImageOps.pad(img, size, method=Image.Resampling.LANCZOS, color=(255, 255, 255))
    if variant == "squash":
        return img.resize(size, Image.Resampling.LANCZOS)
    raise ValueError(f"unknown variant {variant!r}")


def make_copies(src: Path, dst: Path, size: tuple[int, int], variant: str, splits=SPLITS) -> int:
    from vestis.data import load_image
    from vestis.data.images import is_image_path

    n = 0
    for split in splits:
        for path in sorted((src / split).rglob("*")):
            if not path.is_file() or not is_image_path(path):
                continue
            out = (dst / split / path.relative_to(src / split)).with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            small_copy(load_image(path), size, variant).save(out)
            n += 1
    return n


def half_copies(src: Path, dst: Path) -> int:
    """The training split's small copies at half their size (box filter), as extra training images."""
    n = 0
    for path in sorted((src / "train").rglob("*.png")):
        img = Image.open(path).convert("RGB")
        out = dst / "train" / path.relative_to(src / "train").with_name(f"half-{path.name}")
        out.parent.mkdir(parents=True, exist_ok=True)
        img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.BOX).save(out)
        shutil.copy(path, dst / "train" / path.relative_to(src / "train"))
        n += 1
    for split in ("validation", "test"):
        shutil.copytree(src / split, dst / split)
    return n


def without_native(run: Path, dst: Path) -> Path:
    """A copy of the run with no native size in its config (what older checkpoints look like)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("eval-*"))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["preprocess"].pop("native_size", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def score(run: Path, data: Path, split: str, lock) -> float:
    import vestis

    with cpu_lock(lock):
        return vestis.load(run).evaluate(data=str(data), split=split)["heads"]["label"]["top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="clothing-dataset-small (train/validation/test)")
    ap.add_argument("--variants", nargs="+", default=["letterbox", "squash"], choices=["letterbox", "squash"])
    ap.add_argument("--size", default="60x80", help="the small copies' WxH (the catalogue's 60x80)")
    ap.add_argument("--no-resaug", dest="resaug", action="store_false", help="skip resolution augmentation")
    ap.add_argument("--work", help="working directory (default: a temporary one, removed at the end)")
    ap.add_argument(
        "--lock", default="/tmp/vestis-cpu.lock", help="flock held by each heavy step ('' for none)"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    import vestis
    from vestis.data.resolution import parse_setting
    from vestis.runtime import cpu_info

    data = Path(args.data)
    if not data.exists():
        sys.exit(f"needs the shared data at {data}")
    size = parse_setting(args.size)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="vestis-sharp-")
    work = Path(args.work or tmp.name)
    results = {"cpu": cpu_info(), "size": list(size), "variants": {}}
    try:
        plan = []  # every variant's base run first, then the augmented ones: the main table comes first
        for variant in args.variants:
            small = work / variant / "small"
            if not small.exists():
                print(f"{variant}: {make_copies(data, small, size, variant)} copies", flush=True)
            plan.append((variant, "base", small, small, None))
        for variant in args.variants if args.resaug else []:
            small, aug = work / variant / "small", work / variant / "small-resaug"
            if not aug.exists():
                half_copies(small, aug)
            # the median of the mixed sizes is not the native size: it is given
            plan.append((variant, "resaug", small, aug, f"{size[0]}x{size[1]}"))
        for variant, name, small, train_data, native in plan:
            run = work / variant / f"run-{name}"
            t = time.time()
            with cpu_lock(args.lock):
                model = vestis.train(
                    train_data,
                    out=run,
                    mode="fast",
                    quiet=True,
                    native_size=native or "auto",
                )
            recorded = model.preprocess.native_size
            plain = without_native(run, work / variant / f"run-{name}-plain")
            row = {"native_size": list(recorded) if recorded else None, "train_s": round(time.time() - t)}
            for split in ("validation", "test"):
                row[split] = {
                    "a_small": score(run, small, split, args.lock),
                    "b_sharp_plain": score(plain, data, split, args.lock),
                    "c_sharp_native": score(run, data, split, args.lock),
                }
            results["variants"].setdefault(variant, {})[name] = row
            print(f"{variant} {name}: {json.dumps(row)} ({time.time() - t:.0f}s)", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"\nCPU: {results['cpu']}\n")
    print(
        "| copies | training | split | (a) 60x80 copies | (b) sharp, no handling | (c) sharp, native size |"
    )
    print("|---|---|---|---:|---:|---:|")
    for variant, res in results["variants"].items():
        for name, row in res.items():
            for split in ("validation", "test"):
                r = row[split]
                print(
                    f"| {variant} | {name} | {split} | {r['a_small']:.4f} | {r['b_sharp_plain']:.4f} "
                    f"| {r['c_sharp_native']:.4f} |"
                )


if __name__ == "__main__":
    main()
