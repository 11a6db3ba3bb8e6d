"""Feature-extraction throughput, decode included: the naive eager-fp32 pipeline vs vestis' paths, side by side.

Each variant runs in a fresh subprocess (the allocator setting is per process), on the same images:
  naive      PIL full decode + transforms in the main process, eager fp32, glibc malloc defaults
  +malloc    same, with vestis' allocator tuning (mallopt)
  +workers   + decoding in DataLoader worker processes (draft JPEG decode), fp32
  vestis     + bf16 autocast (AMX): what `vestis train` / `predict` use by default
Also measures decode alone (PIL full decode vs vestis' loader) and model alone, per variant.

    .venv/bin/python benchmarks/bench_features.py --n 384 [--backbone tf_efficientnet_lite0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import CLOTHING  # benchmarks/, beside this script

DATA = CLOTHING

VARIANTS = {
    "naive": dict(malloc=False, workers=0, precision="fp32", loader="pil"),
    "+malloc": dict(malloc=True, workers=0, precision="fp32", loader="pil"),
    "+workers": dict(malloc=True, workers=None, precision="fp32", loader="vestis"),
    "vestis": dict(malloc=True, workers=None, precision="bf16", loader="vestis"),
}


def run_variant(name: str, backbone: str, paths: list[str], batch: int) -> dict:
    import torch
    from PIL import Image

    from vestis.data.images import load_image
    from vestis.engine.features import extract_features
    from vestis.models import create_model, resolve_transform
    from vestis.runtime import autocast, tune_allocator

    v = VARIANTS[name]
    if v["malloc"]:
        tune_allocator()
    model = create_model(backbone).eval()
    tf = resolve_transform(model.preprocess)
    size = model.preprocess.resize_size

    def decode(p):
        return Image.open(p).convert("RGB") if v["loader"] == "pil" else load_image(p, size)

    t = time.perf_counter()
    xs = [tf(decode(p)) for p in paths]
    decode_s = time.perf_counter() - t
    x = torch.stack(xs)
    dev = torch.device("cpu")
    with torch.inference_mode(), autocast(dev, v["precision"]):
        model.features(x[:batch])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            model.features(x[i : i + batch])
        model_s = time.perf_counter() - t

    t = time.perf_counter()
    if v["workers"] == 0:  # the naive loop: decode a batch, run it, repeat
        with torch.inference_mode(), autocast(dev, v["precision"]):
            for i in range(0, len(paths), batch):
                model.features(torch.stack([tf(decode(p)) for p in paths[i : i + batch]]))
    else:
        extract_features(
            model,
            paths,
            batch_size=batch,
            workers=v["workers"],
            precision=v["precision"],
            cache=False,
            progress=False,
        )
    total_s = time.perf_counter() - t
    n = len(paths)
    return {
        "variant": name,
        "decode_img_s": n / decode_s,
        "model_img_s": n / model_s,
        "end_to_end_img_s": n / total_s,
    }


def decode_large(paths: list[str], size: int = 256) -> list[dict]:
    """Phone-sized photos (the shared ones upscaled to 2000 px on the long side): full decode vs draft decode."""
    import tempfile

    from PIL import Image

    from vestis.data.images import load_image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big = []
        for i, p in enumerate(paths):
            im = Image.open(p).convert("RGB")
            s = 2000 / max(im.size)
            im.resize((int(im.width * s), int(im.height * s))).save(f"{tmp}/{i}.jpg", quality=90)
            big.append(f"{tmp}/{i}.jpg")
        for name, fn in (
            ("PIL full decode", lambda p: Image.open(p).convert("RGB")),
            ("vestis load_image (draft)", lambda p: load_image(p, size)),
        ):
            t = time.perf_counter()
            for p in big:
                fn(p)
            rows.append({"decoder": name, "img_s": len(big) / (time.perf_counter() - t)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=384, help="images (from the clothing test+validation splits)")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", help="write results here too")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"needs the shared data at {DATA}")
    paths = sorted(str(p) for p in DATA.glob("test/*/*.jpg")) + sorted(
        str(p) for p in DATA.glob("validation/*/*.jpg")
    )
    paths = paths[: args.n]
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.backbone, paths, args.batch)))
        return
    rows = []
    for name in VARIANTS:
        env = dict(os.environ)
        env.pop("MALLOC_MMAP_MAX_", None)
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        if not VARIANTS[name]["malloc"]:
            env["VESTIS_NO_MALLOPT"] = "1"
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            name,
            "--n",
            str(args.n),
            "--backbone",
            args.backbone,
            "--batch",
            str(args.batch),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(
            f"{name:>9}: " + "  ".join(f"{k}={v:.1f}" for k, v in rows[-1].items() if k != "variant"),
            flush=True,
        )
    base = rows[0]["end_to_end_img_s"]
    print(
        f"\n{args.backbone}, {len(paths)} images, batch {args.batch}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}"
    )
    print("| variant | decode img/s | model img/s | end-to-end img/s | vs naive |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['decode_img_s']:.0f} | {r['model_img_s']:.0f} | {r['end_to_end_img_s']:.0f} | "
            f"{r['end_to_end_img_s'] / base:.1f}x |"
        )
    print("\n| decoder, 2000 px JPEGs (one core) | img/s |\n|---|---:|")
    large = decode_large(paths[:48])
    for r in large:
        print(f"| {r['decoder']} | {r['img_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"backbone": args.backbone, "n": len(paths), "rows": rows, "large": large}, indent=1)
        )


if __name__ == "__main__":
    main()
