"""`vestis serve`."""

from __future__ import annotations

import argparse

from vestis.cli.common import _add_runtime


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
    t = p.add_argument_group("threads")
    t.add_argument(
        "--decode-threads",
        type=int,
        default=d.decode_threads,
        metavar="N",
        help=f"threads decoding and resizing uploaded images, per worker (default: {d.decode_threads})",
    )
    t.add_argument(
        "--model-threads",
        type=int,
        metavar="N",
        help="ONNX Runtime threads per forward pass (default: the physical cores, shared out between workers)",
    )
    t.add_argument(
        "--ort-spinning",
        action=argparse.BooleanOptionalAction,
        default=d.ort_spinning,
        help="let ONNX Runtime's idle threads busy-wait (off unless given): faster for a lone caller, but "
        "takes the decoders' cores",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from vestis.serve.server import serve

    if not 0 <= args.port <= 65535 or args.workers < 1:
        raise ValueError("--port must be 0..65535 and --workers >= 1")
    config = serve_config(args)
    return serve(config, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level)


def serve_config(args) -> dict:
    """The server's config (:func:`vestis.serve.server.serve`) from the parsed arguments; a ``ValueError``
    naming the option when one is invalid, before any model loads."""
    from vestis.serve.options import ServeOptions

    for flag, value in (("--decode-threads", args.decode_threads), ("--model-threads", args.model_threads)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
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
        "decode_threads": args.decode_threads,
        "ort_spinning": args.ort_spinning,
        **({"model_threads": args.model_threads} if args.model_threads is not None else {}),
    }
    ServeOptions.from_dict(options)  # invalid options fail here, before the model loads
    return {
        "model": args.model,
        "index": args.index,
        "runtime": args.runtime,
        "device": args.device,
        "precision": args.precision,
        "options": options,
    }
