"""`vestis evaluate`, `predict`, `export`, `benchmark`: thin over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vestis.cli.common import _add_runtime


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="metrics, confusion matrix, error gallery and report for a trained run"
    )
    p.add_argument(
        "run",
        nargs="*",
        help="run directory or .onnx file (default: the bundled model); several run "
        "directories: their ensemble (class probabilities averaged)",
    )
    p.add_argument("--split", default="test", help="train, validation, test or all (default: test)")
    p.add_argument("--data", help="evaluate on other labelled data (folder or CSV) instead of the run's own")
    p.add_argument("--images", help="with --data CSV: the image directory")
    p.add_argument("--out", help="report directory (default: RUN/eval-SPLIT)")
    p.add_argument("--cache-dir", help="feature cache directory (default: $VESTIS_CACHE or ~/.cache/vestis)")
    tta = p.add_mutually_exclusive_group()
    tta.add_argument(
        "--tta", dest="tta", action="store_true", default=None, help="average with flipped images"
    )
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="plain images only")
    _add_runtime(p, default_runtime="torch")
    p.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="Grad-CAM overlays (predicted class) on the first N images of the error gallery",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_evaluate)


def _evaluate(args) -> int:
    from vestis.evaluate.runner import evaluate_run

    report = evaluate_run(
        args.run or None,
        split=args.split,
        data=args.data,
        images=args.images,
        out=args.out,
        tta=args.tta,
        quiet=args.quiet,
        cache_dir=args.cache_dir,
        runtime=args.runtime,
        device=args.device,
        precision=args.precision,
        explain=args.explain,
    )
    if args.quiet:
        print(
            json.dumps({h: {k: m[k] for k in ("n", "top1", "macro_f1")} for h, m in report["heads"].items()})
        )
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="labels for image files, folders, globs and http(s) URLs")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or http(s) URLs")
    p.add_argument(
        "--model",
        action="append",
        metavar="RUN",
        help="run directory or exported .onnx file (default: the bundled model); repeat it to average "
        "several runs' probabilities (an ensemble: same heads and classes)",
    )
    p.add_argument("--top-k", type=int, default=3)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON Lines, one object per input")
    out.add_argument("--csv", metavar="FILE", help="also write a CSV with one row per prediction")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    p.add_argument(
        "--consistent",
        action="store_true",
        help="decode the heads of the model's label hierarchy (e.g. articleType > subCategory > masterCategory) "
        "jointly, over the combinations seen in training",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="image decoding processes (default: one per core, at most 4)")
    _add_runtime(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per URL download")
    p.add_argument("--max-mb", type=float, default=20.0, help="largest URL download accepted")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    from vestis.api import load
    from vestis.predict import write_results

    if args.csv and (Path(args.csv).is_dir() or not Path(args.csv).resolve().parent.is_dir()):
        raise ValueError(
            f"--csv {args.csv}: "
            + ("is a directory; give a file name" if Path(args.csv).is_dir() else "its folder does not exist")
        )

    model = load(
        args.model,
        runtime=args.runtime,
        device=args.device,
        precision=args.precision,
        quiet=args.quiet or args.json,
    )
    if args.consistent and not model.hierarchy:
        name = ", ".join(args.model or ["the bundled model"])
        print(f"note: {name} stores no label hierarchy; --consistent changes nothing", file=sys.stderr)
    consistent = args.consistent and bool(model.hierarchy)
    results = model.predict_iter(
        args.inputs,
        top_k=args.top_k,
        tta=args.tta,
        batch_size=args.batch_size,
        consistent=consistent,
        workers=args.workers,
        progress=not args.quiet and not args.json,
        timeout=args.timeout,
        max_bytes=int(args.max_mb * 2**20),
    )
    n_ok, n_failed = write_results(
        results, "json" if args.json else "table", sys.stdout, Path(args.csv) if args.csv else None
    )
    if n_failed and not args.json:
        print(f"{n_failed} of {n_ok + n_failed} inputs failed", file=sys.stderr)
    return 1 if n_failed else 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run (default: the bundled model) to ONNX, with a parity check"
    )
    p.add_argument("run", nargs="?", help="run directory (default: the bundled model)")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", required=True, help="file to write, e.g. model.onnx")
    p.add_argument(
        "--int8",
        action="store_true",
        help="static int8 (QDQ), calibrated on training images; fp32 vs int8 top-1 on validation printed",
    )
    p.add_argument("--calibrate", type=int, default=256, help="training images used for int8 calibration")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from vestis.api import load

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as {out / 'model.onnx'}")
    model = load(args.run, runtime="torch", device="cpu", precision="fp32")
    report = model.export(
        out, format=args.format, int8=args.int8, calibrate=args.calibrate, progress=not args.quiet
    )
    print(json.dumps(report) if args.quiet else format_export(report))
    return 0


def format_export(report: dict) -> str:
    """The export report as the lines `vestis export` prints."""
    lines = [f"wrote {report['path']} ({report['precision']}, {report['bytes'] / 2**20:.1f} MB)"]
    lines.append(
        f"parity vs PyTorch fp32: max |probability difference| {report['parity_max_abs_diff']:.2e} on "
        f"{report['parity_images']} {report['parity_source']} images"
    )
    if "int8_max_abs_diff" in report:
        lines.append(f"int8 vs PyTorch fp32: max |probability difference| {report['int8_max_abs_diff']:.3f}")
    for head, fp32 in (report.get("top1_fp32") or {}).items():
        lines.append(
            f"validation top-1 · {head}: fp32 {fp32:.4f}  int8 {report['top1_int8'][head]:.4f}  "
            f"(n={report['n'][head]})"
        )
    return "\n".join(lines)


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="images/s (decode, model, end to end) and top-1 of every runtime")
    p.add_argument("run", nargs="?", help="run directory (default: the bundled model)")
    p.add_argument(
        "--images", required=True, help="folder of images (CLASS/ subfolders: top-1 is measured too)"
    )
    p.add_argument("--n", type=int, default=0, help="use at most N images (0: all)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes (default: 1 32)")
    p.add_argument("--variants", nargs="+", help="subset of: torch-fp32 torch-bf16 onnx-fp32 onnx-int8")
    p.add_argument("--workers", type=int, help="decoding processes for the end-to-end pass")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_benchmark)


def _benchmark(args) -> int:
    from vestis.benchmark import BenchmarkConfig, format_benchmark, run_benchmark

    cfg = BenchmarkConfig(
        images=args.images,
        n=args.n,
        batches=tuple(args.batch),
        workers=args.workers,
        variants=tuple(args.variants) if args.variants else None,
        progress=not args.quiet,
    )
    result = run_benchmark(args.run, cfg)
    print(format_benchmark(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0
