"""A tiny trained model (seconds) and its app, shared by the server tests."""

from __future__ import annotations

import contextlib
import http.server
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COLOURS, make_image, stable_seed, train_tiny


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A fast-mode run of the tiny test backbone on separable colours: red / green / blue."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "colours"
    for split, k in {"train": 8, "validation": 3, "test": 3}.items():
        for c, rgb in COLOURS.items():
            for i in range(k):
                make_image(data / split / c / f"{c}{i}.png", rgb, seed=stable_seed("serve", split, c, i))
    assert train_tiny(data, root / "run", root / "cache") == 0
    return root / "run", data


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    import vestis

    return vestis.load(tiny_run[0], runtime="torch", device="cpu", precision="fp32")


def png_bytes(colour=(220, 30, 30), size=(40, 48), fmt="PNG") -> bytes:
    rng = np.random.default_rng(0)
    a = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(
        np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


class SlowRunner:
    """A runner that takes ``delay`` seconds per forward pass and records each batch's size."""

    def __init__(self, runner, delay: float):
        self.inner, self.delay, self.batches = runner, delay, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x):
        import time

        self.batches.append(len(x[0]) if isinstance(x, tuple) else len(x))
        time.sleep(self.delay)
        return self.inner(x)


def slow_model(model, delay: float):
    from vestis.api import Model

    return Model(SlowRunner(model.runner, delay), model.card, model.source)


@contextlib.contextmanager
def live_server(app, timeout_graceful_shutdown: int = 10):
    """The app under a real uvicorn server in a thread, on a free loopback port: yields (server, base URL)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    """Routes of the local image server (see ``image_server``)."""

    routes: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404)
            return
        status, headers, body, delay = route
        if delay:
            time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


@contextlib.contextmanager
def image_server(routes: dict, host: str = "127.0.0.1"):
    """A local http.server: ``routes`` = {path: (status, headers, body, delay_s)}; yields its base URL."""
    handler = type("Handler", (_ImageHandler,), {"routes": routes})
    srv = http.server.ThreadingHTTPServer((host, 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
