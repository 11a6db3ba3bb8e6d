"""Shared by the benchmark scripts: `vestis train` command-line options turned into the keyword arguments of
the Python API's ``vestis.train`` (so a benchmark takes the options a user types, and runs the API), and the
way a result is kept and shown."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path


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
