"""Grad-CAM over HTTP (/v1/explain), the per-stage timings in /metrics, and the ONNX Runtime session the
server opens for itself (threads not spinning)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.serve.conftest import png_bytes
from vestis.serve import ServeOptions, create_app
from vestis.serve.app import explain_note, serving_runner

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed (pip install 'vestis[explain]')")

RED, BLUE = (220, 30, 30), (30, 40, 220)


@pytest.fixture(scope="module")
def client(tiny_model):
    with TestClient(create_app(tiny_model, options=ServeOptions(max_wait_ms=1))) as c:
        yield c


def _overlay(answer: dict) -> np.ndarray:
    prefix = "data:image/jpeg;base64,"
    assert answer["overlay"].startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["overlay"][len(prefix) :]))))


def test_explain_answers_the_top_class_with_an_overlay_of_the_crop(client, tiny_model):
    r = client.post("/v1/explain", files={"file": ("a.png", png_bytes(RED), "image/png")})
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["head"], a["cls"], a["predicted"]) == ("label", "red", "red") and 0.34 < a["score"] <= 1
    size = tiny_model.preprocess.input_size
    assert _overlay(a).shape == (size, size, 3)
    assert client.get("/v1/model").json()["explain"] is True


def test_explain_another_class_and_bad_requests(client):
    body = {"file": ("a.png", png_bytes(RED), "image/png")}
    a = client.post("/v1/explain?class=blue", files=body).json()
    assert (a["cls"], a["predicted"]) == ("blue", "red") and a["score"] < 0.5
    r = client.post("/v1/explain?head=colour", files=body)
    assert r.status_code == 422 and "unknown head 'colour'" in r.json()["error"]
    r = client.post("/v1/explain?class=purple", files=body)
    assert r.status_code == 422 and "unknown class 'purple'" in r.json()["error"]
    r = client.post("/v1/explain", files={"file": ("x.png", b"not an image at all", "image/png")})
    assert r.status_code == 415 and "not an image" in r.json()["error"]
    assert "/v1/explain" in client.get("/openapi.json").json()["paths"]


def test_explain_is_501_with_the_reason_when_unavailable(tiny_model):
    from vestis.api import Model

    onnx_file = Model(tiny_model.runner, tiny_model.card, "exported.onnx")
    with TestClient(create_app(onnx_file)) as c:
        card = c.get("/v1/model").json()
        assert card["explain"] is False and "run directory" in card["explain_note"]
        r = c.post("/v1/explain", files={"file": ("a.png", png_bytes(RED), "image/png")})
        assert r.status_code == 501 and "run directory" in r.json()["error"]
    ensemble = Model(tiny_model.runner, tiny_model.card, ["runs/a", "runs/b"])
    assert "ensemble" in explain_note(ensemble) and explain_note(tiny_model) is None


def test_metrics_say_where_a_request_spent_its_time(client):
    assert (
        client.post("/v1/predict", files={"file": ("a.png", png_bytes(BLUE), "image/png")}).status_code == 200
    )
    text = client.get("/metrics").text
    for stage in ("read", "decode_wait", "decode", "queue", "model"):
        line = next(
            x for x in text.splitlines() if x.startswith(f'vestis_stage_seconds_count{{stage="{stage}"}}')
        )
        assert float(line.split()[-1]) >= 1, stage
    cpu = next(x for x in text.splitlines() if x.startswith("vestis_decode_cpu_seconds_total"))
    assert float(cpu.split()[-1]) > 0


def test_the_server_opens_its_onnx_session_without_spinning(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    import vestis

    model = vestis.load(tiny_run[0], runtime="onnx", cache_dir=tmp_path)
    key = "session.intra_op.allow_spinning"
    served = serving_runner(model.runner, ServeOptions())
    assert (
        served is not model.runner
        and served.session.get_session_options().get_session_config_entry(key) == "0"
    )
    assert serving_runner(model.runner, ServeOptions(ort_spinning=True)) is model.runner
    one = serving_runner(model.runner, ServeOptions(ort_spinning=True, model_threads=1))
    assert one.threads == 1
    x = np.random.default_rng(0).integers(0, 255, (3, *(model.preprocess.input_size,) * 2, 3), dtype=np.uint8)
    (p1, f1), (p2, f2) = model.runner(x), served(x)
    assert np.allclose(p1["label"], p2["label"], atol=1e-6) and np.allclose(f1, f2, atol=1e-5)
    with TestClient(create_app(model)) as c:  # the app serves with its own session: same answers
        r = c.post("/v1/predict", files={"file": ("a.png", png_bytes(BLUE), "image/png")})
        assert r.json()["predictions"]["label"][0]["label"] == "blue"
    assert serving_runner(model.runner, ServeOptions()).runtime == "onnx"
    assert serving_runner(
        tiny_run_runner := vestis.load(tiny_run[0], runtime="torch").runner, ServeOptions()
    ) is (tiny_run_runner)
