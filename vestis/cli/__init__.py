"""Command line: each subcommand parses its options and calls one library function.

One module per group of subcommands (train, inference, models, data, index, serve); this one builds the
parser and runs the chosen subcommand."""

from __future__ import annotations

import argparse
import sys

from vestis import __version__
from vestis.cli.data import _add_data
from vestis.cli.index import _add_audit, _add_index, _add_search
from vestis.cli.inference import _add_benchmark, _add_evaluate, _add_export, _add_predict
from vestis.cli.models import _add_explain, _add_models, _add_profile, _add_soup
from vestis.cli.serve import _add_serve
from vestis.cli.train import _add_train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vestis", description=__doc__.split("\n\n")[0])
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
        _add_soup,
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
        print(
            f"vestis {args.command}: error: needs the module {e.name!r}: pip install 'vestis[{extra}]'",
            file=sys.stderr,
        )
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
