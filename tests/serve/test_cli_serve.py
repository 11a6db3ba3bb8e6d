"""`vestis serve`: options checked before the model loads; a real process that prints its address, answers
and stops cleanly on SIGTERM."""

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
from vestis.cli import build_parser, main
from vestis.cli.serve import serve_config
from vestis.serve.options import ServeOptions

ROOT = Path(__file__).resolve().parents[2]


def test_serve_is_a_subcommand_with_its_options():
    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            "runs/x",
            "--index",
            "idx",
            "--port",
            "9000",
            "--workers",
            "2",
            "--max-batch",
            "8",
            "--allow-private-urls",
        ]
    )
    assert (args.model, args.index, args.port, args.workers, args.max_batch) == (
        ["runs/x"],
        "idx",
        9000,
        2,
        8,
    )
    assert args.allow_private_urls and args.host == "127.0.0.1"


def _options(*argv: str) -> dict:
    return serve_config(build_parser().parse_args(["serve", "--model", "runs/x", *argv]))["options"]


def test_thread_flags_reach_the_server_options():
    got = ServeOptions.from_dict(_options("--decode-threads", "2", "--model-threads", "3", "--ort-spinning"))
    assert (got.decode_threads, got.model_threads, got.ort_spinning) == (2, 3, True)
    got = ServeOptions.from_dict(_options("--ort-spinning", "--no-ort-spinning"))
    assert got.ort_spinning is False


def test_without_thread_flags_the_server_keeps_its_defaults():
    options = _options()
    assert "model_threads" not in options  # 0 in the server: the physical cores, shared out between workers
    got, default = ServeOptions.from_dict(options), ServeOptions()
    assert (got.decode_threads, got.model_threads, got.ort_spinning) == (
        default.decode_threads,
        default.model_threads,
        default.ort_spinning,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--decode-threads", "0"], "--decode-threads must be >= 1, got 0"),
        (["--model-threads", "0"], "--model-threads must be >= 1, got 0"),
        (["--max-batch", "0"], "max_batch must be an integer > 0"),
        (["--max-wait-ms", "-1"], "max_wait_ms must be a number >= 0"),
        (["--port", "70000"], "--port"),
        (["--top-k", "99"], "top_k"),
    ],
)
def test_invalid_options_are_errors(argv, message, capsys):
    assert main(["serve", "--model", "does/not/matter", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_process_prints_its_address_answers_and_stops_on_sigterm(tiny_run):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vestis",
            "serve",
            "--model",
            str(tiny_run[0]),
            "--runtime",
            "torch",
            "--port",
            "0",
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        line, deadline = "", time.monotonic() + 120
        while "vestis serve: http://" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "vestis serve: http://127.0.0.1:" in line, line
        base = line.split("vestis serve: ")[1].split()[0].rstrip("/")
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        r = httpx.post(
            f"{base}/v1/predict", files={"file": ("a.png", png_bytes((30, 40, 220)), "image/png")}, timeout=60
        )
        assert r.json()["predictions"]["label"][0]["label"] == "blue"
        assert "<title>vestis</title>" in httpx.get(base + "/").text
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal: the exit status says "terminated by SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in out, out
