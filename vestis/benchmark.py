"""``vestis benchmark``: every runtime on the same images in one run — decode, model and end-to-end images/s at
each batch size, and top-1 beside each where the folder is labelled (``DIR/CLASS/*``).

Variants: eager PyTorch fp32 and bf16 (autocast), ONNX Runtime fp32 and int8 (static QDQ, calibrated on the
run's training images). The ONNX files are exported into a temporary folder for the run. The CPU model and
its relevant flags head the table: bf16 is emulated (slow) on CPUs without AVX512-BF16/AMX."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vestis.data.images import is_image_path
from vestis.engine.infer import image_set, infer, top1
from vestis.engine.loader import default_workers, iterate_batches
from vestis.runtime import CPU_FLAGS, cpu_info

VARIANTS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")


@dataclass
class BenchmarkConfig:
    images: str
    n: int = 0  # at most this many images (0: all), a seeded sample
    batches: tuple[int, ...] = (1, 32)
    workers: int | None = None
    variants: tuple[str, ...] | None = None
    batch1_images: int = 64  # batch-1 passes use at most this many images (they are slow)
    progress: bool = True

    def __post_init__(self):
        unknown = set(self.variants or ()) - set(VARIANTS)
        if unknown:
            raise ValueError(
                f"unknown benchmark variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}"
            )
        if not self.batches or min(self.batches) < 1 or self.n < 0:
            raise ValueError("batch sizes must be >= 1 and n >= 0")


def labelled_images(folder: str | Path, n: int = 0, seed: int = 0) -> tuple[list[str], list[str | None]]:
    """Image paths under ``folder`` (recursive) and their class (the parent folder's name when the images sit
    in ``folder/CLASS/``, else None). ``n``: a seeded sample of at most n."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    if not paths:
        raise ValueError(f"{folder}: no images")
    if n and n < len(paths):
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
        paths = [paths[i] for i in keep]
    labels = [p.parent.name if p.parent != root else None for p in paths]
    return [str(p) for p in paths], labels


def _runner_for(variant: str, model, tmp: Path, quiet: bool):
    from vestis.engine.ort_runner import OnnxRunner
    from vestis.engine.torch_runner import TorchRunner

    if variant.startswith("torch"):
        return TorchRunner(model.torch_model(), "cpu", variant.split("-")[1]), None
    path = tmp / f"{variant}.onnx"
    report = model.export(path, int8=variant == "onnx-int8", progress=not quiet)
    return OnnxRunner(path, device="cpu"), report


def _measure(
    runner, variant: str, b: int, crops, paths, labels, model, cfg: BenchmarkConfig, workers
) -> dict:
    """One row: model-only images/s on the decoded crops, end-to-end images/s (decode included) and top-1."""
    n = len(crops) if b > 1 else min(len(crops), cfg.batch1_images)
    runner(crops[:b])  # warm-up
    t = time.perf_counter()
    for k in range(0, n, b):
        runner(crops[k : k + b])
    model_s = time.perf_counter() - t
    e2e_paths = paths if b > 1 else paths[:n]
    t = time.perf_counter()
    out = infer(runner, e2e_paths, batch_size=b, workers=workers)
    e2e_s = time.perf_counter() - t
    row = {
        "variant": variant,
        "runtime": runner.name,
        "batch": b,
        "images": len(e2e_paths),
        "model_images_per_s": round(n / model_s, 1),
        "end_to_end_images_per_s": round(len(e2e_paths) / e2e_s, 1),
        "top1": None,
    }
    if labels is not None:
        head = model.heads[0]
        row["top1"] = round(
            top1(out.probs, out.ok, {head: labels[: len(e2e_paths)]}, model.classes)["acc"][head], 4
        )
    return row


def run_benchmark(run=None, cfg: BenchmarkConfig | None = None) -> dict:
    """Measure every variant on the same images; returns {"cpu", "images", "labelled", "decode", "rows"}."""
    from vestis.api import load

    model = load(run, runtime="torch", device="cpu", precision="fp32")
    paths, labels = labelled_images(cfg.images, cfg.n)
    head = model.heads[0]
    known = set(model.classes[head])
    labelled = all(lab in known for lab in labels)
    workers = default_workers() if cfg.workers is None else cfg.workers

    # decode alone: the loader over every image, the crops kept for the model-only passes
    ds = image_set(model.runner, paths)
    t = time.perf_counter()
    crops = [b.x for b in iterate_batches(ds, 32, workers) if b.x is not None]
    decode_s = time.perf_counter() - t
    crops = np.concatenate(crops)[:, 0] if crops else np.zeros((0,))
    result = {
        "cpu": cpu_info(),
        "images": len(paths),
        "labelled": labelled,
        "head": head,
        "workers": workers,
        "decode": {"images_per_s": round(len(paths) / decode_s, 1)},
        "rows": [],
        "notes": [],
    }
    variants = cfg.variants or VARIANTS
    if cfg.variants is None and not {"avx512_bf16", "amx_bf16"} & set(result["cpu"]["flags"]):
        variants = tuple(v for v in variants if v != "torch-bf16")
        result["notes"].append(
            "torch-bf16 skipped: this CPU has no AVX512-BF16/AMX, bf16 is emulated and many "
            "times slower than fp32 (ask for it with --variants torch-bf16)"
        )
    with tempfile.TemporaryDirectory(prefix="vestis-bench-") as tmp:
        for variant in variants:
            try:
                runner, report = _runner_for(variant, model, Path(tmp), not cfg.progress)
            except (ValueError, RuntimeError, ImportError) as e:
                result["notes"].append(f"{variant}: skipped ({e})")
                continue
            if report and report.get("top1_int8"):
                result["notes"].append(
                    f"{variant}: validation top-1 at export: fp32 {report['top1_fp32']}, "
                    f"int8 {report['top1_int8']}"
                )
            for b in cfg.batches:
                row = _measure(
                    runner, variant, b, crops, paths, labels if labelled else None, model, cfg, workers
                )
                result["rows"].append(row)
                if cfg.progress:
                    print(format_row(row), flush=True)
    return result


def format_row(r: dict) -> str:
    top1 = f"{r['top1']:.4f}" if r.get("top1") is not None else "-"
    return (
        f"{r['variant']:<11} {r['batch']:>5}  {r['model_images_per_s']:>9.1f}  "
        f"{r['end_to_end_images_per_s']:>10.1f}  {top1:>7}  ({r['images']} images)"
    )


def format_benchmark(result: dict) -> str:
    cpu = result["cpu"]
    lines = [
        f"CPU: {cpu['model']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags']) or 'none of ' + ', '.join(CPU_FLAGS)}",
        f"{result['images']} images ({'labelled' if result['labelled'] else 'unlabelled'}); decode "
        f"{result['decode']['images_per_s']} img/s with {result['workers']} worker(s)",
        f"{'variant':<11} {'batch':>5}  {'model/s':>9}  {'e2e img/s':>10}  {'top-1':>7}",
    ]
    lines += [format_row(r) for r in result["rows"]]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
