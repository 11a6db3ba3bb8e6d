"""Shared by the benchmark scripts: `vestis train` command-line options turned into the keyword arguments of
the Python API's ``vestis.train`` (so a benchmark takes the options a user types, and runs the API)."""

from __future__ import annotations

from dataclasses import fields


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
