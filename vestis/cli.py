"""Command line: each subcommand parses its options and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from vestis import __version__


def _add_train(sub) -> None:
    from vestis.train.config import HEADS, LOSSES, MODES, TrainConfig

    p = sub.add_parser("train", help="train a classifier on an image folder or a catalogue CSV")
    p.add_argument(
        "data", help="image folder (root/{train,validation,test}/CLASS/* or root/CLASS/*) or catalogue .csv"
    )
    p.add_argument("--out", default="runs/train", help="run directory to write (default: runs/train)")
    p.add_argument(
        "--images", help="catalogue CSV: directory holding the images (default: images/ beside the CSV)"
    )
    p.add_argument("--label", dest="labels", action="append", help="label column (repeat for several heads)")
    p.add_argument("--split", help="split rule for catalogues: year:even (even years train, odd years test)")
    p.add_argument(
        "--val", type=float, default=0.1, help="validation share when the data has no validation split"
    )
    p.add_argument("--test", type=float, default=0.1, help="test share when the data has no splits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--backbone", default=TrainConfig.backbone, help="registered backbone or timm name (`vestis models`)"
    )
    p.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="random initial backbone weights"
    )
    p.add_argument(
        "--mode", choices=MODES, default="fast", help="fast: frozen backbone + cached features (default)"
    )
    p.add_argument(
        "--head", choices=HEADS, default=TrainConfig.head, help="head type; auto chooses on validation"
    )
    p.add_argument("--hidden", type=int, default=TrainConfig.hidden, help="MLP head width")
    p.add_argument("--dropout", type=float, default=TrainConfig.dropout)
    p.add_argument("--loss", choices=LOSSES, default="ce", help="ce, weighted (class-weighted ce) or focal")
    p.add_argument("--label-smoothing", type=float, default=TrainConfig.label_smoothing)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument(
        "--weight-decay", type=float, nargs="+", help="candidate weight decays (chosen on validation)"
    )
    p.add_argument(
        "--select", choices=("top1", "macro_f1"), default="top1", help="validation metric for selection"
    )
    p.add_argument(
        "--no-tta", dest="tta", action="store_false", help="no flipped views (train and test time)"
    )
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--workers", type=int, help="image decoding processes (default: one per core, at most 4)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--no-cache", dest="cache", action="store_false", help="do not read or write the feature cache"
    )
    p.add_argument("--cache-dir", help="feature cache directory (default: $VESTIS_CACHE or ~/.cache/vestis)")
    p.add_argument("--min-per-class", type=int, default=1, help="drop classes with fewer training images")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    _add_finetune(p)
    p.set_defaults(func=_train, _config_fields={f.name for f in fields(TrainConfig)})


def _add_finetune(p) -> None:
    from vestis.train.config import AUGMENTS, HEAD_INITS, SAMPLERS, TrainConfig

    d = TrainConfig
    g = p.add_argument_group(
        "fine-tuning (--mode finetune; --epochs defaults to 15 per stage, --lr is the head's)"
    )
    g.add_argument(
        "--backbone-lr-scale", type=float, default=d.backbone_lr_scale, help="backbone lr = lr * this"
    )
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up, then cosine")
    g.add_argument("--min-lr-scale", type=float, default=d.min_lr_scale, help="cosine ends at lr * this")
    g.add_argument("--augment", choices=AUGMENTS, default=d.augment, help="after random-resized-crop (+flip)")
    g.add_argument(
        "--crop-scale", type=float, default=d.crop_scale, help="random-resized-crop: smallest area"
    )
    g.add_argument("--erase", type=float, default=d.erase, help="random-erasing probability")
    g.add_argument(
        "--train-size", type=int, help="training crop size (default: the model's; faster when smaller)"
    )
    g.add_argument("--freeze", type=int, default=d.freeze, help="backbone layer groups kept frozen (1: stem, "
                   "2: + first stage ...); saves their backward pass")  # fmt: skip
    bn = g.add_mutually_exclusive_group()
    bn.add_argument("--freeze-bn", dest="freeze_bn", action="store_true", default=None,
                    help="backbone BatchNorms keep their pretrained statistics (default when pretrained)")  # fmt: skip
    bn.add_argument(
        "--train-bn", dest="freeze_bn", action="store_false", help="BatchNorm statistics follow the data"
    )
    g.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0: off)")
    g.add_argument(
        "--sampler", choices=SAMPLERS, default=d.sampler, help="balanced: classes drawn equally often"
    )
    g.add_argument("--ema-decay", type=float, default=d.ema_decay, help="weight EMA decay (0: off)")
    g.add_argument("--patience", type=int, default=d.patience, help="early stopping epochs (0: off)")
    g.add_argument("--head-init", choices=HEAD_INITS, default=d.head_init, help="probe: linear probe first")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--image-cache", action="store_true", help="decode and resize each image once, in memory")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no RUN/tb events")
    g.add_argument("--stages", help="staged classes, e.g. top:20,rest (then: rest = the other classes only, "
                   "all = every class)")  # fmt: skip
    g.add_argument("--resume", metavar="RUN", help="continue an interrupted finetune run from RUN/last")


def _train(args) -> int:
    from vestis.train import TrainConfig, train

    cfg = TrainConfig.from_dict({k: v for k, v in vars(args).items() if k in args._config_fields})
    summary = train(cfg)
    if cfg.quiet:
        print(json.dumps({"out": summary["out"], "validation": summary["metrics"].get("validation", {})}))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="metrics, confusion matrix, error gallery and report for a trained run"
    )
    p.add_argument("run", nargs="*", help="run directory or .onnx file (default: the bundled model); several run "
                   "directories: their ensemble (class probabilities averaged)")  # fmt: skip
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


def _add_runtime(p, default_runtime: str = "auto") -> None:
    from vestis.engine.load import PRECISIONS, RUNTIMES

    p.add_argument("--runtime", choices=RUNTIMES, default=default_runtime,
                   help="auto: ONNX Runtime fp32 on a CPU when installed (same answers, faster), else PyTorch")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="PyTorch: auto (bf16 where the CPU/GPU has fast bf16 units, else fp32), fp32, bf16")  # fmt: skip


def _evaluate(args) -> int:
    from vestis.evaluate.runner import evaluate_run

    report = evaluate_run(args.run or None, split=args.split, data=args.data, images=args.images, out=args.out,
                          tta=args.tta, quiet=args.quiet, cache_dir=args.cache_dir, runtime=args.runtime,
                          device=args.device, precision=args.precision, explain=args.explain)  # fmt: skip
    if args.quiet:
        print(
            json.dumps({h: {k: m[k] for k in ("n", "top1", "macro_f1")} for h, m in report["heads"].items()})
        )
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="labels for image files, folders, globs and http(s) URLs")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or http(s) URLs")
    p.add_argument("--model", action="append", metavar="RUN",
                   help="run directory or exported .onnx file (default: the bundled model); repeat it to average "
                   "several runs' probabilities (an ensemble: same heads and classes)")  # fmt: skip
    p.add_argument("--top-k", type=int, default=3)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON Lines, one object per input")
    out.add_argument("--csv", metavar="FILE", help="also write a CSV with one row per prediction")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
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
        raise ValueError(f"--csv {args.csv}: " + ("is a directory; give a file name" if Path(args.csv).is_dir()
                                                  else "its folder does not exist"))  # fmt: skip

    model = load(args.model, runtime=args.runtime, device=args.device, precision=args.precision,
                 quiet=args.quiet or args.json)  # fmt: skip
    results = model.predict_iter(args.inputs, top_k=args.top_k, tta=args.tta, batch_size=args.batch_size,
                                 workers=args.workers, progress=not args.quiet and not args.json,
                                 timeout=args.timeout, max_bytes=int(args.max_mb * 2**20))  # fmt: skip
    n_ok, n_failed = write_results(results, "json" if args.json else "table", sys.stdout,
                                   Path(args.csv) if args.csv else None)  # fmt: skip
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
    p.add_argument("--int8", action="store_true",
                   help="static int8 (QDQ), calibrated on training images; fp32 vs int8 top-1 on validation printed")  # fmt: skip
    p.add_argument("--calibrate", type=int, default=256, help="training images used for int8 calibration")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from vestis.api import load

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file name such as {out / 'model.onnx'}")
    model = load(args.run, runtime="torch", device="cpu", precision="fp32")
    report = model.export(out, format=args.format, int8=args.int8, calibrate=args.calibrate,
                          progress=not args.quiet)  # fmt: skip
    print(json.dumps(report) if args.quiet else format_export(report))
    return 0


def format_export(report: dict) -> str:
    """The export report as the lines `vestis export` prints."""
    lines = [f"wrote {report['path']} ({report['precision']}, {report['bytes'] / 2**20:.1f} MB)"]
    lines.append(f"parity vs PyTorch fp32: max |probability difference| {report['parity_max_abs_diff']:.2e} on "
                 f"{report['parity_images']} {report['parity_source']} images")  # fmt: skip
    if "int8_max_abs_diff" in report:
        lines.append(f"int8 vs PyTorch fp32: max |probability difference| {report['int8_max_abs_diff']:.3f}")
    for head, fp32 in (report.get("top1_fp32") or {}).items():
        lines.append(f"validation top-1 · {head}: fp32 {fp32:.4f}  int8 {report['top1_int8'][head]:.4f}  "
                     f"(n={report['n'][head]})")  # fmt: skip
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

    cfg = BenchmarkConfig(images=args.images, n=args.n, batches=tuple(args.batch), workers=args.workers,
                          variants=tuple(args.variants) if args.variants else None, progress=not args.quiet)  # fmt: skip
    result = run_benchmark(args.run, cfg)
    print(format_benchmark(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="registered backbones (offline weights) and timm names")
    p.add_argument(
        "--timm", metavar="PATTERN", help="list timm architectures matching PATTERN (weights from the hub)"
    )
    p.set_defaults(func=_models)


def _models(args) -> int:
    from vestis.models.registry import describe_backbones, timm_names

    print(timm_names(args.timm) if args.timm else describe_backbones())
    return 0


def _add_profile(sub) -> None:
    p = sub.add_parser(
        "profile", help="params, MACs/FLOPs, receptive field per stage, img/s of a backbone or run"
    )
    p.add_argument(
        "target", help="a backbone name (`vestis models`), a run directory, or 'default' (bundled)"
    )
    p.add_argument("--input", type=int, help="input side in pixels (default: the model's own)")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--no-speed", dest="speed", action="store_false", help="skip the img/s measurement")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per batch size (default: 2)")
    p.set_defaults(func=_profile)


def _profile(args) -> int:
    from vestis.benchmark import cpu_info
    from vestis.models.profile import format_profile, profile_model
    from vestis.models.registry import canonical_name, create_model

    target = args.target
    if target == "default" or Path(target).exists():
        from vestis.models.ensemble import load_models

        model = load_models([None if target == "default" else target])[0]
        name = "the bundled model" if target == "default" else target
    else:
        model, name = create_model(target, pretrained=False), canonical_name(target)  # weights do not matter
    prof = profile_model(model, name, args.input, speed=args.speed, seconds=args.seconds)
    cpu = cpu_info() if args.speed else None
    if args.json:
        print(json.dumps({**prof.to_dict(), "cpu": cpu}, indent=1))
    else:
        where = f"{cpu['model']}, {cpu['cores']} cores, torch {_torch_threads()} threads" if cpu else None
        print(format_profile(prof, where))
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM: where in the image the model looked for a class")
    p.add_argument("run", help="run directory, or 'default' (the bundled model)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--out", default="cam.png", help="output PNG (one image), or a folder (several); crop | overlay"
    )
    p.add_argument("--head", help="the head to explain (default: the first)")
    p.add_argument(
        "--class", dest="cls", help="the class to explain, name or index (default: the predicted one)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON line per image")
    p.set_defaults(func=_explain)


def _explain(args) -> int:
    from vestis.api import load
    from vestis.engine.explain import side_by_side

    model = load(None if args.run == "default" else args.run, runtime="torch", device="cpu")
    out = Path(args.out)
    if len(args.images) > 1:
        out.mkdir(parents=True, exist_ok=True)
    for image in args.images:
        e = model.explain(image, head=args.head, cls=args.cls)
        path = out / f"{Path(image).stem}-cam.png" if len(args.images) > 1 else out
        path.parent.mkdir(parents=True, exist_ok=True)
        side_by_side(e).save(path)
        row = {
            "input": image,
            "head": e.head,
            "class": e.cls,
            "score": round(e.score, 4),
            "predicted": e.predicted,
            "out": str(path),
        }
        text = f"{image}: {e.head} = {e.cls} ({e.score:.3f}; predicted {e.predicted}) -> {path}"
        print(json.dumps(row) if args.json else text)
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="data tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("inspect", help="counts per class and split, unreadable files, duplicates, conflicts")
    q.add_argument("path", help="image folder or catalogue CSV")
    q.add_argument("--images", help="catalogue CSV: image directory")
    q.add_argument("--label", dest="labels", action="append", help="label column (repeatable)")
    q.add_argument("--split", help="split rule (year:even)")
    q.add_argument(
        "--no-check-images", dest="check_images", action="store_false", help="hash only, do not decode"
    )
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_inspect)


def _inspect(args) -> int:
    from vestis.data import load_dataset
    from vestis.data.inspect import format_inspection, inspect_dataset

    ds = load_dataset(args.path, images=args.images, labels=args.labels, split=args.split)
    report = inspect_dataset(ds, check_images=args.check_images, progress=not (args.quiet or args.json))
    print(json.dumps(report, indent=1) if args.json else format_inspection(report))
    return 0


def _add_index(sub) -> None:
    from vestis.index.store import KINDS

    p = sub.add_parser("index", help="visual search index: build, add, remove, evaluate")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="embed a catalogue CSV or an image folder into a Faiss index")
    b.add_argument("source", help="catalogue .csv (every column kept as metadata) or image folder")
    b.add_argument("--images", help="catalogue CSV: image directory (default: images/ beside the CSV)")
    b.add_argument(
        "--model",
        help="run directory, .onnx file or backbone:NAME (pretrained features alone); "
        "default: the bundled model",
    )
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument(
        "--kind", choices=KINDS, default="auto", help="flat (exact; auto up to 200k items), hnsw, ivfpq"
    )
    b.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="index parameter, e.g. M=32 efSearch=128 (hnsw), nlist=1024 m=64 nprobe=16 (ivfpq)",
    )
    b.add_argument("--tta", action="store_true", help="embed the mirrored image too (queries follow)")
    b.add_argument("--pattern", default="{id}.jpg", help="catalogue CSV: image file name pattern")
    b.add_argument("--cache-dir", help="feature cache directory (default: $VESTIS_CACHE or ~/.cache/vestis)")
    b.add_argument("--workers", type=int, help="image decoding processes")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_index_build)
    a = isub.add_parser("add", help="embed new items (folder or CSV) into an index; ids stay stable")
    a.add_argument("index")
    a.add_argument("source", help="image folder or catalogue .csv")
    a.add_argument("--images", help="catalogue CSV: image directory")
    a.add_argument("--pattern", default="{id}.jpg")
    a.add_argument("--model", help="must compute the index's features (default: the index's model)")
    a.add_argument("--cache-dir")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=_index_add)
    r = isub.add_parser("remove", help="remove items by id")
    r.add_argument("index")
    r.add_argument("ids", nargs="+")
    r.set_defaults(func=_index_remove)
    e = isub.add_parser(
        "evaluate", help="precision@k, recall@k, mAP@k (relevant = same label), leave-one-out"
    )
    e.add_argument("index")
    e.add_argument("--label", required=True, help="metadata column whose equality means relevant")
    e.add_argument("--k", type=int, default=10)
    e.add_argument(
        "--queries", type=int, default=2000, help="held-out queries, seeded sample (0: every item)"
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="MODEL",
        help="also embed the items with MODEL (e.g. backbone:lite0) and score it on the same queries",
    )
    e.add_argument("--cache-dir")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_index_evaluate)


def _index_build(args) -> int:
    from vestis.index.build import build_index

    params = dict(_kv(x) for x in args.param)
    _, report = build_index(
        args.source,
        args.out,
        images=args.images,
        model=args.model,
        kind=args.kind,
        params=params,
        tta=args.tta,
        pattern=args.pattern,
        cache_dir=args.cache_dir,
        workers=args.workers,
        progress=not args.quiet,
    )
    skipped = report.pop("skipped")
    report["skipped"] = len(skipped)
    print(json.dumps(report))
    for item, reason in skipped[:10]:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    return 0


def _kv(text: str) -> tuple[str, float | int | str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--param {text!r}: expected NAME=VALUE")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def _index_add(args) -> int:
    from vestis.index.build import add_to_index

    report = add_to_index(
        args.index,
        args.source,
        images=args.images,
        model=args.model,
        pattern=args.pattern,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    skipped = report.pop("skipped")
    print(json.dumps({**report, "ids": report["ids"][:20], "skipped": len(skipped)}))
    for item, reason in skipped[:10]:
        print(f"skipped {item}: {reason}", file=sys.stderr)
    return 0


def _index_remove(args) -> int:
    from vestis.index.build import remove_from_index

    print(json.dumps(remove_from_index(args.index, args.ids)))
    return 0


def _index_evaluate(args) -> int:
    from vestis.index import Index
    from vestis.index.evaluate import compare_models

    rows = compare_models(
        Index.open(args.index),
        args.label,
        args.compare,
        k=args.k,
        queries=args.queries,
        seed=args.seed,
        cache_dir=args.cache_dir,
        progress=not args.json,
    )
    for r in rows:
        print(json.dumps(r) if args.json else "  ".join(f"{k} {v}" for k, v in r.items()))
    return 0


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="most similar indexed items to image files, folders, globs, URLs")
    p.add_argument("index", help="index directory (`vestis index build`)")
    p.add_argument("inputs", nargs="+", help="image files, folders, glob patterns or http(s) URLs")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="metadata filter (repeat: all must hold; COL=A|B: either)",
    )
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per query")
    p.add_argument("--model", help="query model (default: the index's; another model's features are refused)")
    p.set_defaults(func=_search)


def _search(args) -> int:
    from vestis.index import Index
    from vestis.index.build import format_table, open_model

    index = Index.open(args.index)
    model = open_model(args.model) if args.model else None
    results = index.search(args.inputs, k=args.k, where=args.where, model=model)
    if args.json:
        for r in results:
            print(json.dumps(r, ensure_ascii=False))
    else:
        print(format_table(results))
    failed = sum("error" in r for r in results)
    if failed and not args.json:
        print(f"{failed} of {len(results)} queries failed", file=sys.stderr)
    return 1 if failed else 0


def _add_audit(sub) -> None:
    from vestis.index.audit import AuditConfig

    d = AuditConfig
    p = sub.add_parser(
        "audit", help="catalogue hygiene: duplicates, near-duplicates, label conflicts and errors"
    )
    p.add_argument("source", help="catalogue .csv or image folder (sub-folder = label)")
    p.add_argument("--images", help="catalogue CSV: image directory")
    p.add_argument("--label", default=d.label, help="label column to check (default: articleType)")
    p.add_argument("--out", required=True, help="report directory (CSVs, summary.json, index.html)")
    p.add_argument("--model", help="run directory, .onnx file or backbone:NAME (default: the bundled model)")
    p.add_argument("--near", type=float, default=d.near, help="cosine similarity for near-duplicates")
    p.add_argument("--neighbours", type=int, default=d.neighbours, help="k for outlier scores")
    p.add_argument("--folds", type=int, default=d.folds, help="cross-validation folds for label errors")
    p.add_argument("--top", type=int, default=d.top, help="findings per gallery section")
    p.add_argument("--pattern", default="{id}.jpg")
    p.add_argument("--cache-dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_audit)


def _audit(args) -> int:
    from vestis.index.audit import AuditConfig, run_audit

    cfg = AuditConfig(
        label=args.label, near=args.near, neighbours=args.neighbours, folds=args.folds, top=args.top
    )
    summary = run_audit(
        args.source,
        args.out,
        images=args.images,
        model=args.model,
        config=cfg,
        pattern=args.pattern,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    print(json.dumps(summary) if args.quiet else json.dumps(summary, indent=1))
    return 0


def _add_serve(sub) -> None:
    from vestis.serve.options import ServeOptions as d

    p = sub.add_parser("serve", help="web page + HTTP API (predict, search) with micro-batching")
    p.add_argument(
        "--model",
        action="append",
        metavar="RUN",
        help="run directory or .onnx file (default: the bundled model); repeat for an ensemble",
    )
    p.add_argument("--index", metavar="DIR", help="a search index (vestis index build): enables /v1/search")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    _add_runtime(p)
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch", type=int, default=d.max_batch, help="images per forward pass at most")
    g.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="wait for a batch to fill")
    g.add_argument("--queue-size", type=int, default=d.queue_size, help="requests at once; more get 503")
    g.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20)
    g.add_argument("--url-timeout", type=float, default=d.url_timeout, help="seconds per image URL")
    g.add_argument("--max-url-mb", type=float, default=d.max_url_bytes / 2**20)
    g.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let image URLs reach loopback, private and link-local addresses",
    )
    g.add_argument("--top-k", type=int, default=d.top_k, help="predictions per head by default")
    g.add_argument("--tta", action="store_true", help="average with the mirrored image (2x the model work)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from vestis.serve.options import ServeOptions
    from vestis.serve.server import serve

    if not 0 <= args.port <= 65535 or args.workers < 1:
        raise ValueError("--port must be 0..65535 and --workers >= 1")
    options = {
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "queue_size": args.queue_size,
        "max_upload_bytes": int(args.max_upload_mb * 2**20),
        "url_timeout": args.url_timeout,
        "max_url_bytes": int(args.max_url_mb * 2**20),
        "allow_private_urls": args.allow_private_urls,
        "top_k": args.top_k,
        "tta": args.tta,
    }
    ServeOptions.from_dict(options)  # invalid options fail here, before the model loads
    config = {
        "model": args.model,
        "index": args.index,
        "runtime": args.runtime,
        "device": args.device,
        "precision": args.precision,
        "options": options,
    }
    return serve(config, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vestis", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vestis {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_export,
        _add_benchmark,
        _add_models,
        _add_profile,
        _add_explain,
        _add_data,
        _add_index,
        _add_search,
        _add_audit,
        _add_serve,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        return args.func(args)
    except ModuleNotFoundError as e:  # an optional dependency this command needs
        extra = "runtime" if e.name and e.name.startswith("onnxruntime") else "torch"
        if e.name in ("onnx", "onnxscript"):
            extra = "export"
        if e.name in ("fastapi", "uvicorn", "starlette", "python_multipart", "prometheus_client"):
            extra = "serve"
        print(f"vestis {args.command}: error: needs the module {e.name!r}: pip install 'vestis[{extra}]'",
              file=sys.stderr)  # fmt: skip
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except (
        ValueError,
        OSError,
        RuntimeError,
    ) as e:  # OSError: FileNotFoundError, PermissionError, disk full ...
        print(f"vestis {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
