"""Fine-tuning throughput (full training steps: forward + backward + AdamW step, train-time augmentation
included): a naive eager-fp32 loop vs the trainer's speed settings, added one at a time, side by side.

Each variant runs in a fresh subprocess (the allocator setting is per process), on the same images, and adds
one thing to the variant named in brackets:
  fp32 eager baseline  glibc malloc defaults, NCHW, fp32, images decoded + augmented in the main process
  +malloc              vestis' allocator tuning (mallopt)
  +channels_last       model and batches in channels_last
  +bf16 autocast       bf16 autocast (a speed-up on CPUs with AMX; AVX512-BF16 alone is not enough)
  +workers             decoding + augmentation in DataLoader worker processes (the trainer's default count)
  +image cache         images decoded and resized once, kept in memory (the trainer's --image-cache)
  +freeze 3            stem + first two block stages frozen (--freeze 3): no backward through them
  +freeze-bn           every backbone BatchNorm on its pretrained statistics (--freeze-bn)
  +train 192px         random-resized crops of 192 px instead of the model's 224 (--train-size 192)
  +workers on 192px    the frozen, 192 px variant with decoding in worker processes
  +compile             torch.compile (only with --compile: compiling takes minutes)
Model, optimizer, train transform, loss, image set, cache and loader are the trainer's own (vestis.train);
its LR schedule and weight EMA are left out. The first --warmup steps (compilation, worker start-up) are not
timed; "data" is the time spent waiting for the next batch, "step" the forward + backward + optimizer step,
and end-to-end img/s counts both. Workers decode ahead of the model (prefetch), so with few timed steps a
queue filled during warm-up flatters +workers a little; record with more steps.

    .venv/bin/python benchmarks/bench_finetune_speed.py [--steps 10] [--batch 32] [--warmup 2]
        [--backbone tf_efficientnet_lite0] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from common import CLOTHING  # benchmarks/, beside this script

DATA = CLOTHING

BASE = dict(
    malloc=False,
    channels_last=False,
    precision="fp32",
    workers=False,
    cache=False,
    compile=False,
    freeze=0,
    freeze_bn=False,
    size=None,
)
VARIANTS = {"fp32 eager baseline": BASE}
BASED_ON = {}
for _name, _base, _change in (
    ("+malloc", "fp32 eager baseline", {"malloc": True}),
    ("+channels_last", "+malloc", {"channels_last": True}),
    ("+bf16 autocast", "+channels_last", {"precision": "bf16"}),
    ("+workers", "+channels_last", {"workers": True}),
    ("+image cache", "+channels_last", {"cache": True}),
    ("+freeze 3", "+channels_last", {"freeze": 3}),
    ("+freeze-bn", "+freeze 3", {"freeze_bn": True}),
    ("+train 192px", "+freeze 3", {"size": 192}),
    ("+workers on 192px", "+train 192px", {"workers": True}),
    ("+compile", "+train 192px", {"compile": True}),
):
    VARIANTS[_name], BASED_ON[_name] = {**VARIANTS[_base], **_change}, _base


def run_variant(name: str, backbone: str, paths: list[str], batch: int, warmup: int, steps: int) -> dict:
    import torch

    from vestis.engine.loader import ImageSet, default_workers
    from vestis.models import create_model, resolve_transform
    from vestis.runtime import autocast, tune_allocator
    from vestis.train.config import TrainConfig
    from vestis.train.losses import make_loss
    from vestis.train.recipe import make_optimizer
    from vestis.train.sampler import build_image_cache, make_loader

    v = VARIANTS[name]
    if v["malloc"]:
        tune_allocator()
    torch.manual_seed(0)
    cfg = TrainConfig(data=str(DATA), mode="finetune", backbone=backbone)
    classes = sorted({Path(p).parent.name for p in paths})
    y = torch.tensor([classes.index(Path(p).parent.name) for p in paths])
    model = create_model(backbone, heads={"label": classes})
    model.freeze(v["freeze"], v["freeze_bn"])
    pre = model.preprocess
    fmt = torch.channels_last if v["channels_last"] else torch.contiguous_format
    model.to(memory_format=fmt).train()
    opt = make_optimizer(model, cfg)
    net = torch.compile(model) if v["compile"] else model
    loss_fn = make_loss(cfg.loss, y.numpy(), len(classes), cfg.label_smoothing)
    workers = default_workers() if v["workers"] else 0
    cache, cache_s = None, 0.0
    if v["cache"]:
        t = time.perf_counter()
        cache = build_image_cache(paths, pre.resize_size, workers, progress=False)
        cache_s = time.perf_counter() - t
    tf = resolve_transform(
        pre, train=True, augment=cfg.augment, crop_scale=cfg.crop_scale, erase=cfg.erase, size=v["size"]
    )
    loader = make_loader(ImageSet(paths, tf, pre.resize_size, cache=cache), batch, workers, drop_last=True)

    dev, batches = torch.device("cpu"), iter(loader)
    data_s = step_s = first_s = 0.0
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        idx, xs, _ = next(batches)
        x = xs[:, 0].to(memory_format=fmt)
        t1 = time.perf_counter()
        with autocast(dev, v["precision"]):
            out = net(x)
        loss = loss_fn(out["label"].float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if k == 0:
            first_s = t2 - t0
        if k >= warmup:
            data_s, step_s = data_s + t1 - t0, step_s + t2 - t1
    return {
        "variant": name,
        "workers": workers,
        "data_s": data_s / steps,
        "step_s": step_s / steps,
        "end_to_end_img_s": steps * batch / (data_s + step_s),
        "first_step_s": first_s,
        "cache_build_s": cache_s,
        "loss": float(loss),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--json", help="write results here too")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"needs the shared data at {DATA}")
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        sys.exit("--steps and --batch must be >= 1, --warmup >= 0")
    every = sorted(str(p) for p in DATA.glob("train/*/*.jpg"))
    need = (args.warmup + args.steps) * args.batch
    paths = random.Random(0).sample(every, min(need, len(every)))  # every class, the same images each run
    paths = (paths * (need // len(paths) + 1))[:need]
    common = [
        "--backbone",
        args.backbone,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if args.variant:
        print(
            json.dumps(run_variant(args.variant, args.backbone, paths, args.batch, args.warmup, args.steps))
        )
        return
    rows = []
    for name, v in VARIANTS.items():
        if v["compile"] and not args.compile:
            continue
        env = dict(os.environ)
        env.pop("MALLOC_MMAP_MAX_", None)
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        if not v["malloc"]:
            env["VESTIS_NO_MALLOPT"] = "1"
        cmd = [sys.executable, __file__, "--variant", name, *common]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"variant {name!r} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        label = f"{name} ({BASED_ON[name]})" if name in BASED_ON else name
        print(
            f"{label:>36}: data {r['data_s']:.3f}s + step {r['step_s']:.3f}s per batch, "
            f"{r['end_to_end_img_s']:.1f} img/s (first step {r['first_step_s']:.1f}s)",
            flush=True,
        )

    import torch

    from vestis.runtime import cpu_supports_bf16

    base = rows[0]["end_to_end_img_s"]
    print(
        f"\n{args.backbone} fine-tuning, batch {args.batch}, {args.steps} timed steps after {args.warmup} "
        f"warm-up, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, bf16 units: {'yes' if cpu_supports_bf16() else 'no'}"
    )
    print(
        "| variant | adds to | data s/batch | step s/batch | end-to-end img/s | vs baseline | first step s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {BASED_ON.get(r['variant'], '')} | {r['data_s']:.3f} | {r['step_s']:.3f} | "
            f"{r['end_to_end_img_s']:.1f} | {r['end_to_end_img_s'] / base:.2f}x | {r['first_step_s']:.1f} |"
        )
    cached = [r for r in rows if r["cache_build_s"]]
    if cached:
        print(
            f"\nimage cache: built once in {cached[0]['cache_build_s']:.1f}s for {len(set(paths))} images "
            f"({cached[0]['workers']} workers), not counted above"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({**vars(args), "n": len(paths), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
