"""Running the app under uvicorn: ``vestis serve`` and ``make run``."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, replace

import uvicorn

from vestis.serve.options import ServeOptions

ENV = "VESTIS_SERVE_CONFIG"  # the configuration handed to worker processes (--workers > 1)
log = logging.getLogger("vestis.serve")


def open_index(path: str | None, model=None):
    """(index, None) or (None, why search is off). The index module (``vestis.index``) is imported here, lazily:
    without it the server runs with search off and says so. An index built with another model is refused."""
    if not path:
        return None, None
    try:
        from vestis.index import Index
    except ImportError as e:
        return (
            None,
            f"search is off: --index needs the vestis.index module, which this installation lacks ({e})",
        )
    index = Index.open(path)
    if model is not None:
        from vestis.index.build import check_model

        check_model(index, model)
    return index, None


def build_app(config: dict):
    """The app from a plain configuration (what ``vestis serve`` parsed; JSON-able, for worker processes)."""
    from vestis.api import load
    from vestis.serve.app import create_app

    options = ServeOptions.from_dict(config.get("options", {}))
    model = load(
        config.get("model"),
        runtime=config.get("runtime", "auto"),
        device=config.get("device", "auto"),
        precision=config.get("precision", "auto"),
        quiet=True,
    )
    index, note = open_index(config.get("index"), model)
    if note:
        log.warning(note)
    return create_app(model, index, options, index_note=note)


def app_from_env():
    """uvicorn's factory in each worker process."""
    return build_app(json.loads(os.environ[ENV]))


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    config: dict, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info"
) -> int:
    """Serve until Ctrl-C / SIGTERM (requests in flight are finished first). Prints the address once listening.

    ``workers`` > 1: that many processes (uvicorn's supervisor; each loads its own model and batches its own
    requests) share one listening socket, bound before they start (``port`` 0: a free port, printed). The
    model is loaded once here first, so a bad model or index fails before any worker starts. ONNX Runtime
    gets the physical cores shared out between the workers unless ``model_threads`` is set."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    opts = ServeOptions.from_dict(config.get("options", {}))
    if workers > 1 and not opts.model_threads:
        from vestis.engine.ort_runner import physical_cores

        opts = replace(opts, model_threads=max(1, physical_cores() // workers))
    config = {**config, "options": asdict(opts)}  # one image-signing key for every worker
    timeout = int(opts.shutdown_timeout_s)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        build_app(config)  # fail here, once, on a bad model or index (and export the ONNX model once)
        os.environ[ENV] = json.dumps(config)
        uv = uvicorn.Config(
            "vestis.serve.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=timeout,
        )
        sock = uv.bind_socket()
        sock.listen(uv.backlog)  # connections wait in the backlog while the workers load the model
        bound = sock.getsockname()[1]
        print(
            f"vestis serve: {url_of(host, bound)}  (web page; API docs at /docs; {workers} workers)",
            flush=True,
        )
        Multiprocess(uv, sockets=[sock]).run()
        return 0
    app = build_app(config)
    server = _AnnouncingServer(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=timeout)
    )
    server.run()
    return 0 if server.started else 1


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing the page's address once its socket is bound."""

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            print(
                f"vestis serve: {url_of(self.config.host, port)}  (web page; API docs at /docs)", flush=True
            )
