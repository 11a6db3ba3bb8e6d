"""`vestis data inspect`."""

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


def _inspect(args) -> int:
    from vestis.data import load_dataset
    from vestis.data.inspect import format_inspection, inspect_dataset

    ds = load_dataset(args.path, images=args.images, labels=args.labels, split=args.split)
    report = inspect_dataset(ds, check_images=args.check_images, progress=not (args.quiet or args.json))
    print(json.dumps(report, indent=1) if args.json else format_inspection(report))
    return 0
