"""`vestis serve --workers 2`: two processes behind one socket (port 0 resolved and printed), each with its own
model and its share of the cores, answering; SIGTERM stops them all. Invalid worker counts are errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import png_bytes
from vestis.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            out |= {int(c) for c in f.read().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from /proc (Linux)")
def test_two_workers_share_the_socket_and_stop_together(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from vestis.engine.ort_runner import physical_cores

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VESTIS_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "vestis",
        "serve",
        "--model",
        str(tiny_run[0]),
        "--workers",
        "2",
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    workers: set[int] = set()
    try:
        line, deadline = "", time.monotonic() + 120
        while "vestis serve: http://" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "vestis serve: http://127.0.0.1:" in line and "2 workers" in line, line
        base = line.split("vestis serve: ")[1].split()[0].rstrip("/")
        assert not base.endswith(":0")  # port 0: the port actually bound is printed
        seen, deadline = set(), time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:  # each request on a new connection
            r = httpx.post(  # a liveness bound, not a speed check: a busy CI machine warms up slowly
                f"{base}/v1/predict",
                files={"file": ("a.png", png_bytes((30, 40, 220)), "image/png")},
                timeout=60,
            )
            assert r.json()["predictions"]["label"][0]["label"] == "blue"
            seen.add(httpx.get(f"{base}/healthz", timeout=60).json()["worker"])
        workers = seen
        assert len(seen) == 2 and seen <= _children(proc.pid), seen  # two worker processes answered
        card = httpx.get(f"{base}/v1/model").json()
        assert card["runtime"].startswith("onnx") and card["threads"] == max(1, physical_cores() // 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert out.count("Application shutdown complete") == 2, out
    assert not any(_alive(w) for w in workers)


def test_invalid_worker_counts_are_errors(capsys):
    assert main(["serve", "--model", "does/not/matter", "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    from vestis.serve.server import serve

    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        serve({}, workers=0)
