"""Load test of `vestis serve` on loopback: micro-batching vs batch size 1 side by side, then overload.

    .venv/bin/python benchmarks/bench_serve.py [--model RUN] [--runtime auto] [--clients 16] [--duration 20]
        [--overload-clients 64] [--overload-queue 8] [--images DIR] [--json out.json]

Each configuration is a real `vestis serve` process (``--port 0``); the clients are asyncio + httpx in this
process, each posting one photo (the clothing test split, cycled; synthetic photos when it is absent) and
posting the next as soon as the answer comes, for ``--duration`` seconds after a warm-up. Reported per
configuration: answers by status, errors (anything but 200), p50/p99 latency, throughput and the server's
mean batch size (from /metrics). Overload: ``--overload-clients`` clients against a server admitting only
``--overload-queue`` requests (clients retry a 503 at once): the statuses seen (200 and 503 expected only),
the server's RSS before / after / peak, and whether /healthz answers afterwards."""

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

ROOT = Path(__file__).resolve().parents[1]
CLOTHES = ROOT.parent / "shared" / "data" / "clothing-dataset-small" / "test"


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


class Server:
    def __init__(self, args, *options: str):
        cmd = [
            sys.executable,
            "-m",
            "vestis",
            "serve",
            "--port",
            "0",
            "--log-level",
            "warning",
            "--runtime",
            args.runtime,
            *(["--model", args.model] if args.model else []),
            *options,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
        )
        line, deadline = "", time.monotonic() + 300
        while "vestis serve: http://" not in line:
            line = self.proc.stdout.readline()
            if (not line and self.proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {line}")
        self.base = line.split("vestis serve: ")[1].split()[0].rstrip("/")

    def metrics(self) -> dict:
        text = httpx.get(f"{self.base}/metrics").text
        vals = {}
        for line in text.splitlines():
            if line.startswith(("vestis_batch_size_sum", "vestis_batch_size_count")):
                name, value = line.split()
                vals[name] = float(value)
        return vals

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.returncode


async def load(
    base: str, images: list[bytes], clients: int, duration: float, retry_503: bool = False
) -> dict:
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        end = time.perf_counter() + duration

        async def one(worker: int):
            i = worker
            while time.perf_counter() < end:
                body = images[i % len(images)]
                i += clients
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", files={"file": ("p.jpg", body, "image/jpeg")})
                    key = str(r.status_code)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t)
                except httpx.HTTPError as e:
                    key = type(e).__name__
                statuses[key] = statuses.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(clients)))
        elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    ok = statuses.get("200", 0)
    return {
        "statuses": statuses,
        "errors": sum(v for k, v in statuses.items() if k != "200"),
        "ok": ok,
        "seconds": round(elapsed, 2),
        "throughput": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def run_config(args, images, name: str, *options: str) -> dict:
    server = Server(args, *options)
    try:
        asyncio.run(load(server.base, images, args.clients, 3.0))  # warm-up
        before = server.metrics()
        row = asyncio.run(load(server.base, images, args.clients, args.duration))
        after = server.metrics()
        n = after["vestis_batch_size_count"] - before["vestis_batch_size_count"]
        row["mean_batch"] = round(
            (after["vestis_batch_size_sum"] - before["vestis_batch_size_sum"]) / max(n, 1), 2
        )
    finally:
        server.stop()
    row["config"], row["options"] = name, " ".join(options)
    print(json.dumps(row), flush=True)
    return row


def run_overload(args, images) -> dict:
    opts = ("--max-batch", "8", "--queue-size", str(args.overload_queue))
    server = Server(args, *opts)
    try:
        asyncio.run(load(server.base, images, 4, 2.0))  # warm-up
        before = rss_kb(server.proc.pid)
        row = asyncio.run(load(server.base, images, args.overload_clients, args.duration))
        after = rss_kb(server.proc.pid)
        health = httpx.get(f"{server.base}/healthz", timeout=5)
    finally:
        server.stop()
    row.update(
        config="overload",
        options=" ".join(opts),
        clients=args.overload_clients,
        rss_before_mb=round(before["VmRSS"] / 1024, 1),
        rss_after_mb=round(after["VmRSS"] / 1024, 1),
        rss_peak_mb=round(after["VmHWM"] / 1024, 1),
        healthz=health.status_code,
        only_200_503=set(row["statuses"]) <= {"200", "503"},
    )
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run directory or .onnx (default: the bundled model)")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per configuration")
    ap.add_argument("--overload-clients", type=int, default=64)
    ap.add_argument("--overload-queue", type=int, default=8)
    ap.add_argument("--images", type=Path, default=CLOTHES)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from vestis.runtime import cpu_info

    images = photos(args.images)
    print(
        f"cpu: {cpu_info()}; {len(images)} photos, mean {np.mean([len(b) for b in images]) / 1024:.0f} kB",
        flush=True,
    )
    rows = [
        run_config(
            args, images, "micro-batching", "--max-batch", "32", "--max-wait-ms", "5", "--queue-size", "256"
        ),
        run_config(
            args, images, "batch size 1", "--max-batch", "1", "--max-wait-ms", "0", "--queue-size", "256"
        ),
    ]
    rows.append(run_overload(args, images))
    speedup = rows[0]["throughput"] / max(rows[1]["throughput"], 1e-9)
    print(f"micro-batching / batch size 1 throughput: {speedup:.2f}x", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_info(), "rows": rows, "speedup": speedup, "pid": os.getpid()}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
