"""`vestis serve`."""

from __future__ import annotations

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
