"""`vestis data inspect`, `vestis data mix`."""

from __future__ import annotations

import json


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
    m = dsub.add_parser(
        "mix",
        help="a new training folder: an image folder plus a catalogue's images mapped onto its classes",
    )
    m.add_argument(
        "folder", help="class-per-folder images (root/{train,validation,test}/CLASS/* or root/CLASS/*)"
    )
    m.add_argument("catalogue", help="catalogue CSV (e.g. styles.csv)")
    m.add_argument(
        "--map",
        dest="mapping",
        required=True,
        help="VALUE=CLASS pairs ('Tshirts=t-shirt,Jeans=pants') or a .json",
    )
    m.add_argument("--out", required=True, help="the new folder (must not exist)")
    m.add_argument("--column", default="articleType", help="catalogue column holding the mapped values")
    m.add_argument("--images", help="catalogue image directory (default: images/ beside the CSV)")
    m.add_argument("--where", action="append", default=[], help="COLUMN=V1,V2: only these rows (repeatable)")
    m.add_argument("--per-class", type=int, help="at most this many catalogue images per class (seeded)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument(
        "--exclude",
        help="file: catalogue rows to keep out (one image path, file name or id per line; # comments)",
    )
    m.add_argument("--copy", action="store_true", help="copy the files (default: symlinks)")
    m.add_argument("--json", action="store_true", help="print the report as one JSON line")
    m.set_defaults(func=_mix)


def _inspect(args) -> int:
    from vestis.data import load_dataset
    from vestis.data.inspect import format_inspection, inspect_dataset

    ds = load_dataset(args.path, images=args.images, labels=args.labels, split=args.split)
    report = inspect_dataset(ds, check_images=args.check_images, progress=not (args.quiet or args.json))
    print(json.dumps(report, indent=1) if args.json else format_inspection(report))
    return 0


def _mix(args) -> int:
    from pathlib import Path

    from vestis.data.mix import mix, parse_mapping, parse_where

    exclude = []
    if args.exclude:
        lines = Path(args.exclude).read_text(errors="replace").splitlines()
        exclude = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

    report = mix(
        args.folder,
        args.catalogue,
        args.out,
        parse_mapping(args.mapping),
        column=args.column,
        images=args.images,
        where=parse_where(args.where),
        per_class=args.per_class,
        seed=args.seed,
        copy=args.copy,
        exclude=exclude,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['out']}: {sum(report['added'].values())} catalogue images added to training")
    for cls, n in report["added"].items():
        print(f"  {cls:<16} {n:>6} of {report['available'][cls]}")
    if report["unmapped"]:
        top = ", ".join(f"{v} ({n})" for v, n in list(report["unmapped"].items())[:8])
        print(f"  not mapped: {len(report['unmapped'])} values, most frequent: {top}")
    if report["unmatched"]:
        print(f"  mapped, but no row holds: {', '.join(report['unmatched'])}")
    if report["held_out"]:
        print(f"  {report['held_out']} mapped rows held out (--exclude)")
    if report["skipped_rows"]:
        print(f"  {report['skipped_rows']} catalogue rows skipped (missing image or bad line)")
    return 0
