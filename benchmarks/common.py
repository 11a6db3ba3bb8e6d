"""Shared by the benchmark scripts: `vestis train` command-line options turned into the keyword arguments of
the Python API's ``vestis.train`` (so a benchmark takes the options a user types, and runs the API), and the
way a result is kept and shown."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

# ../shared/data, beside the repository
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLOTHING = SHARED / "clothing-dataset-small"
CATALOGUE = SHARED / "fashion-product-images-small"


def train_options(argv: list[str]) -> dict:
    """``["--freeze", "3", "--seed", "1"]`` -> ``{"freeze": 3, "seed": 1}``: parsed by the real `vestis train`
    parser, so types, defaults and errors are the CLI's; only the options given are returned."""
    from vestis.cli import build_parser
    from vestis.train.config import TrainConfig

    argv = [a for a in argv if a != "--"]
    parser = build_parser()
    given = vars(parser.parse_args(["train", "DATA", *argv]))
    defaults = vars(parser.parse_args(["train", "DATA"]))
    names = {f.name for f in fields(TrainConfig)} - {"data", "out"}
    return {k: v for k, v in given.items() if k in names and v != defaults.get(k)}


def report(result: dict, json_path: str | None, markdown: str) -> int:
    """Write ``result`` to ``json_path`` (if given, folders made) and print its ``markdown``; the exit code 0."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    print(markdown)
    return 0


def add_model_options(p) -> None:
    """``--model NAME=SOURCE`` (repeated; 'default' is the bundled model) and ``--ensemble NAME=A,B``."""
    p.add_argument("--model", action="append", default=[], help="NAME=SOURCE ('default' or a run directory)")
    p.add_argument("--ensemble", action="append", default=[], help="NAME=A,B (probabilities averaged)")


def models_and_ensembles(args) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({name: source}, {ensemble: [member names]}) from :func:`add_model_options`' options (no ``--model``: the
    bundled model); an ensemble naming a model not given is an error."""
    sources = dict(m.split("=", 1) for m in args.model or ["default=default"])
    ensembles = {n: v.split(",") for n, v in (e.split("=", 1) for e in args.ensemble)}
    for name, members in ensembles.items():
        if unknown := [m for m in members if m not in sources]:
            raise SystemExit(f"--ensemble {name}: unknown models {unknown} (give them with --model)")
    return sources, ensembles
