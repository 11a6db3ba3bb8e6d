"""Prediction from URLs (a local http.server: never the network)."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.predict.helpers import png_bytes, run
from vestis import __version__
from vestis.data.images import ImageError
from vestis.predict import fetch_url

GOOD = png_bytes(0)
SEEN_AGENTS: list[str] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status: int, ctype: str, body: bytes, length: bool = True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up: expected
            self.respond()

    def respond(self):
        SEEN_AGENTS.append(self.headers.get("User-Agent", ""))
        if self.path == "/good.png":
            self.send(200, "image/png", GOOD)
        elif self.path == "/page":
            self.send(200, "text/html; charset=utf-8", b"<html>hello</html>")
        elif self.path == "/big.png":
            self.send(200, "image/png", GOOD + b"\0" * 5000)
        elif self.path == "/big-unsized.png":  # no Content-Length: the reader must stop by itself
            self.send(200, "image/png", GOOD + b"\0" * 5000, length=False)
        elif self.path == "/huge.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(30 * 2**20))
            self.end_headers()
        elif self.path == "/slow.png":
            time.sleep(1.0)
            self.send(200, "image/png", GOOD)
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        else:
            self.send(404, "text/plain", b"nope")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_fetch_url(server):
    SEEN_AGENTS.clear()
    assert fetch_url(f"{server}/good.png", 5, 2**20) == GOOD
    assert SEEN_AGENTS[-1] == f"vestis/{__version__}"
    assert len(fetch_url(f"{server}/big-unsized.png", 5, 2**20)) == len(GOOD) + 5000
    cases = {
        f"{server}/missing.png": "download failed: HTTP 404",
        f"{server}/page": "not an image (content-type text/html)",
        f"{server}/big.png": "download larger than 1000 bytes",
        f"{server}/big-unsized.png": "download larger than 1000 bytes",
        f"{server}/slow.png": "download failed: timed out",
        f"{server}/to-file": "download failed",
        "ftp://127.0.0.1/x.png": "unsupported URL scheme 'ftp'",
        "file:///etc/passwd": "unsupported URL scheme 'file'",
        "http://127.0.0.1:1/x.png": "download failed",  # nothing listens on port 1
    }
    for url, reason in cases.items():
        with pytest.raises(ImageError) as e:
            fetch_url(url, 0.3, 1000)
        assert str(e.value).startswith(reason), (url, str(e.value))
    with pytest.raises(ImageError, match="^download larger than 20 MB$"):
        fetch_url(f"{server}/huge.png", 5, 20 * 2**20)  # refused on its Content-Length alone


def test_predict_urls_mixed_with_files(model, files, server):
    inputs = [
        f"{server}/good.png",
        files["good1"],
        f"{server}/missing.png",
        f"{server}/page",
        f"{server}/big.png",
        "ftp://127.0.0.1/x.png",
        files["corrupt"],
        f"{server}/good.png",
    ]
    results = run(model, inputs, max_bytes=len(GOOD) + 100, batch_size=2)
    assert [r["input"] for r in results] == [str(i) for i in inputs]
    assert ["error" in r for r in results] == [False, False, True, True, True, True, True, False]
    assert results[2]["error"].startswith("download failed: HTTP 404")
    assert results[3]["error"] == "not an image (content-type text/html)"
    assert results[4]["error"].startswith("download larger than")
    assert results[5]["error"].startswith("unsupported URL scheme")
    # the downloaded image is predicted exactly like the same file on disk
    assert results[0]["predictions"] == run(model, [files["good0"]])[0]["predictions"]
    assert results[0]["predictions"] == results[-1]["predictions"]
