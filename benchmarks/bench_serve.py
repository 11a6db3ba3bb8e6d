"""Load test of `vestis serve` on loopback: micro-batching vs batch size 1 side by side, then overload.

    .venv/bin/python benchmarks/bench_serve.py [--model RUN] [--runtime auto] [--clients 16] [--duration 20]
        [--configs tuned untuned] [--max-batch 32] [--max-wait-ms 5] [--decode-threads 2]
        [--overload-clients 64] [--overload-queue 8] [--no-overload] [--components] [--images DIR]
        [--client raw|httpx] [--json out.json]

Each row is a real server process (``vestis.serve.server.serve``, what `vestis serve` runs, on port 0) with
the same code and options except the batch size: micro-batching (``--max-batch``/``--max-wait-ms``) and batch
size 1. ``--configs``: ``tuned`` (the server's defaults: ONNX Runtime threads not spinning, ``--decode-threads``)
and/or ``untuned`` (ONNX Runtime's threads spinning: the server before issue #12's tuning).

The clients run in this process: ``raw`` (default) is a minimal HTTP/1.1 keep-alive client on asyncio
streams with the multipart bodies built once, so the load generator takes as little as possible of the
cores it shares with the server; ``httpx`` is httpx.AsyncClient. Each client posts one photo (the clothing
test split, cycled; synthetic photos when it is absent) and the next as soon as the answer comes, for
``--duration`` seconds after a warm-up. Per row: answers by status, errors (anything but 200), p50/p99
latency at the client, throughput, mean batch size, and where the time and CPU went: the server's mean
seconds per request per stage (read/parse, waiting for a decoder, decode+resize, queued, model; from
/metrics) and CPU milliseconds per answered request of the server (its event-loop thread, its decoding
threads, the rest: the model's threads) and of the load generator.

``--components``: the same costs without HTTP, in this process: decode+resize ms/image, and model ms/image
at batch 1..32 with ONNX Runtime's threads spinning or not (best of 5 rounds).

Overload: ``--overload-clients`` clients against a server admitting ``--overload-queue`` requests (clients
retry a 503 at once): the statuses seen (200 and 503 only expected), the server's RSS before / after / peak,
and whether /healthz answers afterwards."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from common import CLOTHING  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
CLOTHES = CLOTHING / "test"
TICK = os.sysconf("SC_CLK_TCK")
STAGES = ("read", "decode_wait", "decode", "queue", "model")
# the server before #12's tuning: ONNX Runtime's threads spinning (its default)
UNTUNED = {"ort_spinning": True}


def photos(folder: Path | None, n: int = 200) -> list[bytes]:
    if folder and folder.is_dir():
        files = sorted(p for p in folder.rglob("*.jpg"))[:n]
        if files:
            return [p.read_bytes() for p in files]
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(32):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (533, 400, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def rss_kb(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        k: int(line.split()[1])
        for line in status.splitlines()
        for k in ("VmRSS", "VmHWM")
        if line.startswith(k + ":")
    }


def cpu_seconds(stat: str) -> float:
    """utime + stime of a /proc/.../stat line."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def server_cpu(pid: int) -> dict:
    """CPU seconds of the whole server process and of its main (event-loop) thread."""
    return {
        "total": cpu_seconds(Path(f"/proc/{pid}/stat").read_text()),
        "loop": cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat").read_text()),
    }


class Server:
    """A server process: ``serve(config)`` as `vestis serve` calls it, with every ServeOptions field at hand."""

    CODE = (
        "import json, sys; from vestis.serve.server import serve; "
        "sys.exit(serve(json.loads(sys.argv[1]), port=0, log_level='warning'))"
    )

    def __init__(self, args, options: dict):
        config = {"model": args.model, "runtime": args.runtime, "options": options}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        line, deadline = "", time.monotonic() + 300
        while "vestis serve: http://" not in line:
            line = self.proc.stdout.readline()
            if (not line and self.proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {line}")
        self.base = line.split("vestis serve: ")[1].split()[0].rstrip("/")

    def metrics(self) -> dict:
        text = httpx.get(f"{self.base}/metrics").text
        vals = {"cpu": server_cpu(self.proc.pid)}
        for line in text.splitlines():
            if line.startswith(
                (
                    "vestis_batch_size_sum",
                    "vestis_batch_size_count",
                    "vestis_stage_seconds_",
                    "vestis_decode_cpu",
                )
            ):
                name, value = line.rsplit(" ", 1)
                vals[name] = float(value)
        return vals

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.returncode


def multipart(body: bytes, boundary: str = "vestisbenchboundary") -> tuple[bytes, str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class RawClient:
    """One keep-alive HTTP/1.1 connection posting prepared requests (reconnects when the server closes)."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.conn = host, port, None

    async def post(self, request: bytes) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.conn
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, close = int(head[9:12]), 0, False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            raise
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


async def load(
    base: str, images: list[bytes], clients: int, duration: float, client_kind: str = "raw"
) -> dict:
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    host, port = base.split("//")[1].split(":")
    port = int(port)
    bodies = [multipart(b) for b in images]
    requests = [
        (
            f"POST /v1/predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body, ctype in bodies
    ]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    hx = httpx.AsyncClient(base_url=base, timeout=60, limits=limits) if client_kind == "httpx" else None
    end = time.perf_counter() + duration

    async def one(worker: int):
        i, raw = worker, RawClient(host, port)
        try:
            while time.perf_counter() < end:
                k = i % len(images)
                i += clients
                t = time.perf_counter()
                try:
                    if hx is not None:
                        r = await hx.post("/v1/predict", files={"file": ("p.jpg", images[k], "image/jpeg")})
                        status, ok = r.status_code, b'"predictions"' in r.content
                    else:
                        status, body = await raw.post(requests[k])
                        ok = b'"predictions"' in body
                    key = str(status) if status != 200 or ok else "200 without predictions"
                    if key == "200":
                        latencies.append(time.perf_counter() - t)
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as e:
                    key = type(e).__name__
                statuses[key] = statuses.get(key, 0) + 1
        finally:
            raw.close()

    cpu0, t0 = os.times(), time.perf_counter()
    try:
        await asyncio.gather(*(one(w) for w in range(clients)))
    finally:
        if hx is not None:
            await hx.aclose()
    elapsed, cpu1 = time.perf_counter() - t0, os.times()
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    ok = statuses.get("200", 0)
    client_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "statuses": statuses,
        "errors": sum(v for k, v in statuses.items() if k != "200"),
        "ok": ok,
        "seconds": round(elapsed, 2),
        "throughput": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "client_cpu_ms_per_req": round(client_cpu / max(ok, 1) * 1000, 2),
    }


def breakdown(before: dict, after: dict, ok: int, seconds: float) -> dict:
    """Mean seconds per request per stage and CPU ms per answered request, from two /metrics snapshots."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if k != "cpu"}
    out = {}
    for s in STAGES:
        n = d.get(f'vestis_stage_seconds_count{{stage="{s}"}}', 0.0)
        out[f"{s}_ms"] = round(d.get(f'vestis_stage_seconds_sum{{stage="{s}"}}', 0.0) / max(n, 1) * 1000, 2)
    total = after["cpu"]["total"] - before["cpu"]["total"]
    loop = after["cpu"]["loop"] - before["cpu"]["loop"]
    decode = d.get("vestis_decode_cpu_seconds_total", 0.0)
    per = 1000 / max(ok, 1)
    out.update(
        server_cpu_ms_per_req=round(total * per, 2),
        loop_cpu_ms_per_req=round(loop * per, 2),
        decode_cpu_ms_per_req=round(decode * per, 2),
        model_and_other_cpu_ms_per_req=round((total - loop - decode) * per, 2),
        server_cores_busy=round(total / seconds, 2),
    )
    n = d.get("vestis_batch_size_count", 0.0)
    out["mean_batch"] = round(d.get("vestis_batch_size_sum", 0.0) / max(n, 1), 2)
    return out


def run_config(args, images, name: str, options: dict) -> dict:
    server = Server(args, options)
    try:
        asyncio.run(load(server.base, images, args.clients, 3.0, args.client))  # warm-up
        before = server.metrics()
        row = asyncio.run(load(server.base, images, args.clients, args.duration, args.client))
        after = server.metrics()
        row.update(breakdown(before, after, row["ok"], row["seconds"]))
    finally:
        server.stop()
    row["config"], row["options"] = name, options
    print(json.dumps(row), flush=True)
    return row


def run_overload(args, images, tuned: dict) -> dict:
    opts = {**tuned, "max_batch": 8, "queue_size": args.overload_queue}
    server = Server(args, opts)
    try:
        asyncio.run(load(server.base, images, 4, 2.0, args.client))  # warm-up
        before = rss_kb(server.proc.pid)
        row = asyncio.run(load(server.base, images, args.overload_clients, args.duration, args.client))
        after = rss_kb(server.proc.pid)
        health = httpx.get(f"{server.base}/healthz", timeout=5)
    finally:
        server.stop()
    row.update(
        config="overload",
        options=opts,
        clients=args.overload_clients,
        rss_before_mb=round(before["VmRSS"] / 1024, 1),
        rss_after_mb=round(after["VmRSS"] / 1024, 1),
        rss_peak_mb=round(after["VmHWM"] / 1024, 1),
        healthz=health.status_code,
        only_200_503=set(row["statuses"]) <= {"200", "503"},
    )
    print(json.dumps(row), flush=True)
    return row


def components(args, images) -> dict:
    """Decode ms/image and model ms/image by batch size, in this process, without HTTP."""
    import vestis
    from vestis.engine.infer import image_set
    from vestis.serve.app import serving_runner
    from vestis.serve.options import ServeOptions

    model = vestis.load(args.model, runtime=args.runtime)
    runner = model.runner

    def best(fn, rounds: int = 5) -> float:
        fn()
        return min(fn() for _ in range(rounds))

    def decode_round() -> float:
        t = time.perf_counter()
        for b in images:
            image_set(runner, [b])[0]
        return (time.perf_counter() - t) / len(images) * 1000

    x = np.concatenate([image_set(runner, [b])[0][1] for b in images[:64]])
    out = {"decode_ms_per_image": round(best(decode_round, 3), 2), "model_ms_per_image": {}}
    variants = {"spinning": True, "not spinning": False} if runner.runtime == "onnx" else {runner.name: True}
    for label, spin in variants.items():
        r = serving_runner(runner, ServeOptions(ort_spinning=spin))
        row = {}
        for bs in (1, 2, 4, 8, 16, 32):

            def model_round(bs=bs, r=r) -> float:
                t, n = time.perf_counter(), 0
                while n < 64:
                    r(x[n % 32 : n % 32 + bs])
                    n += bs
                return (time.perf_counter() - t) / n * 1000

            row[bs] = round(best(model_round), 2)
        out["model_ms_per_image"][label] = row
        print(f"model ms/image, {label}: {row}", flush=True)
    print(f"decode+resize ms/image: {out['decode_ms_per_image']}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run directory or .onnx (default: the bundled model)")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per configuration")
    ap.add_argument("--configs", nargs="+", default=["tuned", "untuned"], choices=("tuned", "untuned"))
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--decode-threads", type=int, default=None, help="default: the server's default")
    ap.add_argument("--overload-clients", type=int, default=64)
    ap.add_argument("--overload-queue", type=int, default=8)
    ap.add_argument("--no-overload", action="store_true")
    ap.add_argument("--components", action="store_true", help="also time decode and model alone")
    ap.add_argument("--client", default="raw", choices=("raw", "httpx"))
    ap.add_argument("--images", type=Path, default=CLOTHES)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from vestis.runtime import cpu_info

    images = photos(args.images)
    print(
        f"cpu: {cpu_info()}; {len(images)} photos, mean {np.mean([len(b) for b in images]) / 1024:.0f} kB",
        flush=True,
    )
    result: dict = {"cpu": cpu_info(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    if args.components:
        result["components"] = components(args, images)
    tuned = {} if args.decode_threads is None else {"decode_threads": args.decode_threads}
    batching = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "queue_size": 256}
    single = {"max_batch": 1, "max_wait_ms": 0, "queue_size": 256}
    for cfg in args.configs:
        base = tuned if cfg == "tuned" else UNTUNED
        rows = [
            run_config(args, images, f"{cfg}: micro-batching", {**base, **batching}),
            run_config(args, images, f"{cfg}: batch size 1", {**base, **single}),
        ]
        speedup = rows[0]["throughput"] / max(rows[1]["throughput"], 1e-9)
        print(f"{cfg}: micro-batching / batch size 1 throughput: {speedup:.2f}x", flush=True)
        result["rows"] += rows
        result[f"speedup_{cfg}"] = round(speedup, 2)
    if not args.no_overload:
        result["rows"].append(run_overload(args, images, tuned))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
