"""Micro-batching, overload and shutdown: the batcher alone, then the app under a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.conftest import live_server, png_bytes, slow_model
from vestis.serve import ServeOptions, create_app
from vestis.serve.batcher import MicroBatcher, Overloaded

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_items_share_a_batch_in_order():
    seen = []

    def fn(items):
        seen.append(list(items))
        time.sleep(0.05)
        return [x * 10 for x in items]

    async def main():
        b = MicroBatcher(fn, max_batch=4, max_wait_ms=20, capacity=100)
        await b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return out

    assert _run(main()) == [i * 10 for i in range(10)]
    assert [len(s) for s in seen] == [4, 4, 2] and sum(seen, []) == list(range(10))


def test_max_wait_bounds_the_wait_of_a_lone_request():
    async def main():
        b = MicroBatcher(lambda xs: xs, max_batch=64, max_wait_ms=30, capacity=10)
        await b.start()
        t0 = time.perf_counter()
        assert await b.submit("x") == "x"
        took = time.perf_counter() - t0
        await b.stop()
        return took

    assert 0.025 < _run(main()) < 0.5


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    def fn(items):
        if "bad" in items:
            raise RuntimeError("model failed")
        return items

    async def main():
        b = MicroBatcher(fn, max_batch=8, max_wait_ms=10, capacity=10)
        await b.start()
        got = await asyncio.gather(b.submit("bad"), b.submit("ok"), return_exceptions=True)
        after = await b.submit("fine")
        await b.stop()
        return got, after

    got, after = _run(main())
    assert all(isinstance(g, RuntimeError) for g in got) and after == "fine"


def test_admission_is_bounded_and_stop_finishes_queued_work():
    done = []

    def fn(items):
        time.sleep(0.05)
        done.extend(items)
        return items

    async def main():
        b = MicroBatcher(fn, max_batch=2, max_wait_ms=0, capacity=2)
        await b.start()
        with b.admit(), b.admit(), pytest.raises(Overloaded), b.admit():
            pass
        tasks = [asyncio.create_task(b.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        await b.stop()  # queued items still run
        results = await asyncio.gather(*tasks)
        with pytest.raises(Overloaded, match="stopping"), b.admit():
            pass
        return results

    assert _run(main()) == list(range(5)) and sorted(done) == list(range(5))


# ---- under uvicorn -----------------------------------------------------------------------------------------


def _post(base, colour, timeout=30.0):
    r = httpx.post(
        f"{base}/v1/predict",
        files={"file": ("a.png", png_bytes(COLOURS[colour]), "image/png")},
        timeout=timeout,
    )
    return r


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tiny_model):
    model = slow_model(tiny_model, 0.3)
    with live_server(create_app(model, options=ServeOptions(max_batch=8, max_wait_ms=50))) as (_, base):
        names = ["red", "green", "blue"] * 4
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda c: _post(base, c), names))
        metrics = httpx.get(f"{base}/metrics").text
    assert [a.status_code for a in answers] == [200] * 12
    assert [a.json()["predictions"]["label"][0]["label"] for a in answers] == names
    assert max(model.runner.batches) > 1 and sum(model.runner.batches) == 12
    assert len(model.runner.batches) < 12
    assert "vestis_batch_size_count" in metrics


def test_overload_answers_503_with_retry_after_and_stays_healthy(tiny_model):
    model = slow_model(tiny_model, 0.25)
    opts = ServeOptions(max_batch=2, max_wait_ms=0, queue_size=2, retry_after_s=3)
    with live_server(create_app(model, options=opts)) as (_, base):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda c: _post(base, c), ["red"] * 16))
        codes = [a.status_code for a in answers]
        assert set(codes) == {200, 503} and codes.count(200) >= 2
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["retry-after"] == "3" and "busy" in busy.json()["error"]
        health = httpx.get(f"{base}/healthz").json()
        assert health == {"status": "ok", "queue_depth": 0, "in_progress": 0, "worker": os.getpid()}
        assert "vestis_overload_rejections_total" in httpx.get(f"{base}/metrics").text
        assert _post(base, "blue").status_code == 200


def test_graceful_shutdown_finishes_requests_in_flight(tiny_model):
    model = slow_model(tiny_model, 0.6)
    with live_server(create_app(model, options=ServeOptions(max_batch=2, max_wait_ms=0))) as (server, base):
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_post, base, c) for c in ("red", "green", "blue", "red")]
            time.sleep(0.3)  # all four are in: two running, two queued
            server.should_exit = True
            answers = [f.result() for f in futures]
        deadline = time.monotonic() + 10
        while server.started and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.json()["predictions"]["label"][0]["label"] for a in answers] == ["red", "green", "blue", "red"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)


def test_upload_cap_is_enforced_while_the_body_streams_in(tiny_model):
    """A chunked upload with no Content-Length is cut off once over the cap, not read to its end."""
    with live_server(create_app(tiny_model, options=ServeOptions(max_upload_bytes=100_000))) as (_, base):
        host, port = base.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=BOUND\r\n\r\n"
        )
        head = b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        total, sent, chunk = 200 * 2**20, 0, b"\0" * 65536
        reply = b""
        stopped = threading.Event()
        try:
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if sent % (2**20) == 0:  # has the answer come already?
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        reply += sock.recv(65536)
                    sock.setblocking(True)
                    if reply:
                        stopped.set()
                        break
        except OSError:  # the server closed the connection on us
            stopped.set()
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in reply:
                got = sock.recv(65536)
                if not got:
                    break
                reply += got
        sock.close()
    assert stopped.is_set() and sent < total / 4, sent
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
