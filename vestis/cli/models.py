"""`vestis models`, `profile`, `explain`."""

from __future__ import annotations

import json
from pathlib import Path


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
    from vestis.models.profile import format_profile, profile_model
    from vestis.models.registry import canonical_name, create_model
    from vestis.runtime import cpu_info

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


def _add_soup(sub) -> None:
    p = sub.add_parser(
        "soup",
        help="average the weights of fine-tuned runs of one network (a model soup), scored on validation",
    )
    p.add_argument(
        "runs", nargs="+", help="two or more fine-tuned run directories ('default': the bundled model)"
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per run (default: equal)")
    p.add_argument(
        "--greedy",
        action="store_true",
        help="keep only the runs that do not lower validation top-1, best first (a greedy soup)",
    )
    p.add_argument(
        "--no-validate", dest="validate", action="store_false", help="do not score it on validation"
    )
    p.add_argument("--fp16", action="store_true", help="store the weights in half precision")
    p.add_argument("--json", action="store_true", help="print the validation figures as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress lines (greedy soups)")
    p.set_defaults(func=_soup)


def _soup(args) -> int:
    from vestis.api import soup
    from vestis.evaluate.soup import validation_heads
    from vestis.models.run_config import read_config

    runs = args.runs  # 'default': the bundled model
    model = soup(
        runs,
        out=args.out,
        weights=args.weights,
        greedy=args.greedy,
        validate=args.validate,
        fp16=args.fp16,
        quiet=args.quiet or args.json,
    )
    if not (args.validate or args.greedy):
        print(f"wrote {args.out}")
        return 0
    soup_row = {h: m.get("top1") for h, m in model.metrics.get("validation", {}).items()}
    if args.greedy:
        record = read_config(args.out)["train_config"]["soup"]
        kept, greedy = record["members"], record["greedy"]
        if args.json:
            print(json.dumps({**greedy, "kept": kept, "soup": soup_row}))
            return 0
        for run, top1 in greedy["ingredients"].items():
            print(f"validation top-1  {top1:.4f}  {run}")
        print(
            f"validation top-1  {'  '.join(f'{h} {v:.4f}' for h, v in soup_row.items())}  soup ({args.out})"
        )
        print(f"kept {len(kept)} of {len(runs)}: {', '.join(kept)}")
        return 0
    # the members scored as the soup was, not the figures their trainers stored
    rows = {r: validation_heads(r) for r in runs}
    rows[f"soup ({args.out})"] = model.metrics.get("validation", {})
    if args.json:
        print(json.dumps({name: {h: m.get("top1") for h, m in v.items()} for name, v in rows.items()}))
        return 0
    for name, heads in rows.items():
        figures = "  ".join(f"{h} {m['top1']:.4f}" for h, m in heads.items() if "top1" in m)
        print(f"validation top-1  {figures or '-'}  {name}")
    return 0
