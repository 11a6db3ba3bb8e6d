"""Prediction from files, folders, globs and URLs (a local http.server: never the network)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from vestis import __version__
from vestis.data.images import ImageError
from vestis.engine.torch_runner import TorchRunner
from vestis.models import create_model
from vestis.predict import (
    PredictConfig,
    expand_inputs,
    fetch_url,
    predict,
    predict_images,
    write_results,
)

HEADS = {"label": ["a", "b", "c"], "colour": ["red", "blue"]}


def png_bytes(seed: int, size: int = 32, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def fast(**kw) -> PredictConfig:
    return PredictConfig(**{"workers": 0, "progress": False, **kw})


def R(model) -> TorchRunner:
    return TorchRunner(model, "cpu", "fp32")


def run(model, inputs, **kw) -> list[dict]:
    return list(predict(R(model), [str(i) for i in inputs], fast(**kw)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("test_tiny", heads=HEADS).eval()


@pytest.fixture
def files(tmp_path):
    """Distinct good images plus every kind of bad input, with their paths."""
    f = {}
    for n in range(4):
        f[f"good{n}"] = tmp_path / f"good{n}.png"
        f[f"good{n}"].write_bytes(png_bytes(n))
    f["corrupt"] = tmp_path / "corrupt.png"
    f["corrupt"].write_bytes(png_bytes(9)[:60])
    f["empty"] = tmp_path / "empty.jpg"
    f["empty"].write_bytes(b"")
    f["text"] = tmp_path / "notes.txt"
    f["text"].write_text("not an image")
    folder = tmp_path / "shop"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.png").write_bytes(png_bytes(10))
    (folder / "sub" / "a.jpg").write_bytes(png_bytes(11))  # a PNG named .jpg still loads
    (folder / "readme.txt").write_text("skipped: not an image extension")
    f["folder"] = folder
    (tmp_path / "empty_dir").mkdir()
    f["empty_dir"] = tmp_path / "empty_dir"
    return f


def check_prediction(r: dict, top_k: int) -> None:
    assert set(r) == {"input", "predictions"}
    assert isinstance(r["input"], str)
    assert list(r["predictions"]) == list(HEADS)
    for head, preds in r["predictions"].items():
        assert len(preds) == min(top_k, len(HEADS[head]))
        labels = [p["label"] for p in preds]
        assert len(set(labels)) == len(labels) and set(labels) <= set(HEADS[head])
        scores = [p["score"] for p in preds]
        for p in preds:
            assert set(p) == {"label", "score"} and type(p["score"]) is float and type(p["label"]) is str
            assert 0.0 <= p["score"] <= 1.0 and p["score"] == round(p["score"], 6)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) <= 1 + 1e-5
        if len(preds) == len(HEADS[head]):
            assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def check_error(r: dict) -> None:
    assert set(r) == {"input", "error"}
    assert isinstance(r["input"], str) and isinstance(r["error"], str) and r["error"]


def test_result_shapes(model, files):
    ok, bad = run(model, [files["good0"], files["corrupt"]], top_k=2)
    check_prediction(ok, top_k=2)
    assert ok["input"] == str(files["good0"])
    check_error(bad)
    assert bad["input"] == str(files["corrupt"])


def test_top_k_is_capped_per_head(model, files):
    (r,) = run(model, [files["good1"]], top_k=10)
    check_prediction(r, top_k=10)
    assert [len(v) for v in r["predictions"].values()] == [3, 2]
    (r,) = run(model, [files["good1"]], top_k=1)
    assert [len(v) for v in r["predictions"].values()] == [1, 1]


def test_expand_inputs(files, tmp_path):
    got = expand_inputs(
        [
            str(files["folder"]),
            str(files["empty_dir"]),
            str(tmp_path / "good*.png"),
            str(tmp_path / "*.nothing"),
            str(tmp_path / "missing.png"),
            "https://example.com/x.jpg",
            str(files["text"]),
        ]
    )
    assert got == [
        (str(files["folder"] / "b.png"), None),
        (str(files["folder"] / "sub" / "a.jpg"), None),
        (str(files["empty_dir"]), "no images in this folder"),
        *[(str(files[f"good{n}"]), None) for n in range(4)],
        (str(tmp_path / "*.nothing"), "no file matches this pattern"),
        (str(tmp_path / "missing.png"), "file not found"),
        ("https://example.com/x.jpg", None),
        (str(files["text"]), None),  # named explicitly: tried, and fails as an image later
    ]


def test_order_kept_and_bad_inputs_never_stop_the_batch(model, files, tmp_path):
    inputs = [
        files["good0"],
        files["corrupt"],
        files["empty"],
        files["good1"],
        files["text"],
        tmp_path / "missing.png",
        files["folder"],
        files["empty_dir"],
        tmp_path / "good[23].png",
        tmp_path / "*.nothing",
        files["good0"],
    ]
    results = run(model, inputs, batch_size=2, top_k=3)  # errors land inside several batches
    expected_inputs = [
        str(files["good0"]),
        str(files["corrupt"]),
        str(files["empty"]),
        str(files["good1"]),
        str(files["text"]),
        str(tmp_path / "missing.png"),
        str(files["folder"] / "b.png"),
        str(files["folder"] / "sub" / "a.jpg"),
        str(files["empty_dir"]),
        str(files["good2"]),
        str(files["good3"]),
        str(tmp_path / "*.nothing"),
        str(files["good0"]),
    ]
    assert [r["input"] for r in results] == expected_inputs
    errors = {r["input"]: r["error"] for r in results if "error" in r}
    assert set(errors) == {str(files[k]) for k in ("corrupt", "empty", "text", "empty_dir")} | {
        str(tmp_path / "missing.png"),
        str(tmp_path / "*.nothing"),
    }
    assert errors[str(files["empty"])] == "empty file"
    assert errors[str(files["text"])].startswith("not an image")
    assert errors[str(tmp_path / "missing.png")] == "file not found"
    for r in results:
        check_prediction(r, 3) if "predictions" in r else check_error(r)
    # each prediction belongs to its own input: equal to predicting that file alone
    for r in results:
        if "predictions" in r:
            assert run(model, [r["input"]])[0] == r
    assert results[0] == results[-1]
    assert results[0]["predictions"] != results[3]["predictions"]  # distinct images are told apart


def test_worker_processes_keep_order(model, files):
    inputs = [files["good3"], files["empty"], files["good1"], files["good2"], files["corrupt"]]
    serial = run(model, inputs, batch_size=2)
    assert run(model, inputs, batch_size=2, workers=1) == serial


def test_tta_keeps_the_shape_and_averages_the_flip(model, files, tmp_path):
    plain = run(model, [files["good0"], files["corrupt"]])
    tta = run(model, [files["good0"], files["corrupt"]], tta=True)
    check_prediction(tta[0], 3)
    check_error(tta[1])
    assert [set(r) for r in tta] == [set(r) for r in plain]
    flipped = tmp_path / "flipped.png"
    Image.open(files["good0"]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    (mirror,) = run(model, [flipped])

    def probs(r):
        return {(h, p["label"]): p["score"] for h, ps in r["predictions"].items() for p in ps}

    a, b, t = probs(plain[0]), probs(mirror), probs(tta[0])
    assert t != a
    for key in t:
        assert t[key] == pytest.approx((a[key] + b[key]) / 2, abs=1e-4)


def test_predict_images_in_memory(model, files):
    data = files["good0"].read_bytes()
    rgba = Image.open(io.BytesIO(png_bytes(5, mode="RGBA")))
    out = predict_images(R(model), [data, b"garbage", Image.open(io.BytesIO(data)), rgba, b""], top_k=2)
    assert [set(r) for r in out] == [{"predictions"}, {"error"}, {"predictions"}, {"predictions"}, {"error"}]
    for r in (out[0], out[2], out[3]):
        check_prediction({"input": "", **r}, top_k=2)
    assert out[0] == out[2]  # bytes and the decoded image give the same answer
    assert out[0]["predictions"] == run(model, [files["good0"]], top_k=2)[0]["predictions"]
    assert out[4] == {"error": "empty file"}
    assert [set(r) for r in predict_images(R(model), [data], tta=True)] == [{"predictions"}]
    assert predict_images(R(model), []) == []


# --- URLs -------------------------------------------------------------------------------------------

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


# --- output -----------------------------------------------------------------------------------------


@pytest.fixture
def results(model, files, tmp_path):
    return run(model, [files["good0"], tmp_path / "missing.png", files["good1"]], top_k=2)


def test_write_json_lines(results):
    out = io.StringIO()
    assert write_results(iter(results), "json", out) == (2, 1)
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == results


def test_write_csv(results, tmp_path):
    path = tmp_path / "out.csv"
    out = io.StringIO()
    assert write_results(results, "json", out, csv_path=path) == (2, 1)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input", "head", "rank", "label", "score", "error"]
    assert len(rows) == 2 * (2 + 2) + 1
    first = results[0]["predictions"]
    assert rows[0] == {
        "input": results[0]["input"],
        "head": "label",
        "rank": "1",
        "label": first["label"][0]["label"],
        "score": str(first["label"][0]["score"]),
        "error": "",
    }
    assert [r["head"] for r in rows[:4]] == ["label", "label", "colour", "colour"]
    assert [r["rank"] for r in rows[:4]] == ["1", "2", "1", "2"]
    assert rows[4] == {
        "input": results[1]["input"],
        "head": "",
        "rank": "",
        "label": "",
        "score": "",
        "error": "file not found",
    }
    assert {r["input"] for r in rows[5:]} == {results[2]["input"]}


def test_write_table(results):
    out = io.StringIO()
    assert write_results(results, "table", out) == (2, 1)
    text = out.getvalue()
    assert "ERROR: file not found" in text
    assert all(r["input"] in text for r in results)
    label = results[0]["predictions"]["label"][0]
    assert f"{label['label']} {label['score']:.1%}" in text
    lines = text.splitlines()
    assert lines[0].split() == ["input", "head", "top", "predictions"]
    # aligned: every head column starts at the same offset
    col = lines[0].index("head")
    assert all(line[col:].startswith(("label", "colour", "ERROR")) for line in lines[1:])
    with pytest.raises(ValueError, match="unknown format"):
        write_results(results, "xml", out)


@pytest.mark.parametrize(
    "kw",
    [
        {"top_k": 0},
        {"batch_size": 0},
        {"timeout": 0},
        {"timeout": -1.0},
        {"max_bytes": 0},
        {"workers": -1},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        PredictConfig(**kw)
    PredictConfig()  # defaults are valid


def test_ensemble_averages_member_probabilities(model, files):
    from vestis.models import Preprocess
    from vestis.models.ensemble import Ensemble

    torch.manual_seed(1)
    other = create_model("test_tiny", heads=HEADS).eval()
    other.preprocess = Preprocess(input_size=40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    ens = Ensemble([model, other]).eval()
    assert ens.classes == HEADS
    inputs = [files["good0"], files["corrupt"], files["good1"]]
    out = run(ens, inputs, top_k=3)
    check_prediction(out[0], 3)
    check_error(out[1])
    check_prediction(out[2], 3)

    def probs(r):
        return {(h, p["label"]): p["score"] for h, ps in r["predictions"].items() for p in ps}

    for i in (0, 2):
        a, b, e = (probs(run(m, [inputs[i]], top_k=3)[0]) for m in (model, other, ens))
        assert a != b
        for key in e:
            assert e[key] == pytest.approx((a[key] + b[key]) / 2, abs=2e-6)
    assert run(ens, inputs, top_k=3, workers=1, batch_size=2) == out  # worker processes, several batches
    assert run(ens, inputs, top_k=3, tta=True)[0] != out[0]
    mem = predict_images(R(ens), [files["good0"].read_bytes(), b"x"], top_k=3)
    assert mem[0]["predictions"] == out[0]["predictions"] and set(mem[1]) == {"error"}

    with pytest.raises(ValueError, match="heads or classes differ"):
        Ensemble([model, create_model("test_tiny", heads={"label": ["a", "b"]})])
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([model])
