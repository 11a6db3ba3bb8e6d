"""The HTTP API on a tiny trained model: every endpoint, the JSON contract, and every kind of bad input."""

from __future__ import annotations

import io
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.serve.conftest import image_server, png_bytes
from vestis.serve import ServeOptions, create_app

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


@pytest.fixture(scope="module")
def client(tiny_model):
    with TestClient(create_app(tiny_model)) as c:
        yield c


def upload(client, data: bytes, name="photo.png", ctype="image/png", **params):
    return client.post("/v1/predict", files={"file": (name, data, ctype)}, params=params)


def test_predict_upload_answers_the_predict_json_contract(client, tiny_model):
    r = upload(client, png_bytes(RED))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["predictions"] and list(body["predictions"]) == ["label"]
    preds = body["predictions"]["label"]
    assert [set(p) for p in preds] == [{"label", "score"}] * 3 and preds[0]["label"] == "red"
    assert (
        preds == tiny_model.predict_images([png_bytes(RED)])[0]["predictions"]["label"]
    )  # = `predict --json`
    assert [p["label"] for p in upload(client, png_bytes(BLUE)).json()["predictions"]["label"]][0] == "blue"


def test_top_k_is_a_query_parameter_and_checked(client):
    assert len(upload(client, png_bytes(GREEN), top_k=1).json()["predictions"]["label"]) == 1
    r = upload(client, png_bytes(GREEN), top_k=0)
    assert r.status_code == 422 and "top_k" in r.json()["error"]


def test_model_health_page_and_openapi(client):
    card = client.get("/v1/model").json()
    assert card["backbone"] == "test_tiny" and card["heads"] == ["label"]
    assert card["classes"] == {"label": ["blue", "green", "red"]} and "validation" in card["metrics"]
    assert "torch" in card["runtime"] and card["search"] is False and "--index" in card["search_note"]
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="drop"' in page.text and "/v1/predict" in page.text
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert {"/v1/predict", "/v1/search", "/v1/model", "/healthz", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_by_status_and_batches(client):
    upload(client, png_bytes(RED))
    upload(client, b"not an image at all", name="x.txt", ctype="text/plain")
    text = client.get("/metrics").text
    assert 'vestis_requests_total{route="/v1/predict",status="200"}' in text
    assert 'vestis_requests_total{route="/v1/predict",status="415"}' in text
    assert 'vestis_request_seconds_bucket{le="0.1",route="/v1/predict"}' in text
    assert "vestis_batch_size_count" in text and "vestis_queue_depth 0.0" in text
    assert "vestis_requests_in_progress" in text


def _damaged(data: bytes) -> bytes:
    b = bytearray(data)
    b[len(b) // 2] ^= 0xFF  # inside the compressed pixels: the CRC check fails
    return bytes(b)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"hello, not an image", 415, "not an image"),
        (b"", 415, "empty file"),
        (png_bytes(RED)[:60], 422, "truncated"),
        (_damaged(png_bytes(RED)), 422, "corrupt"),
    ],
    ids=["text", "empty", "truncated", "corrupt"],
)
def test_undecodable_uploads_are_refused_with_a_message(client, data, status, message):
    r = upload(client, data)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_decompression_bomb_is_refused(client):
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")  # 400 megapixels in a few kB
    assert len(buf.getvalue()) < 100_000
    r = upload(client, buf.getvalue())
    assert r.status_code == 422 and "decompression bomb" in r.json()["error"]


def test_request_shape_errors(client):
    r = client.post("/v1/predict", files={"image": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 422 and "'file'" in r.json()["error"]
    r = client.post("/v1/predict", content=b"raw bytes", headers={"content-type": "image/png"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    r = client.post("/v1/predict", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]
    r = client.post("/v1/predict", json={"link": "https://example.com/a.jpg"})
    assert r.status_code == 422 and '"url"' in r.json()["error"]
    r = client.post("/v1/predict", json=["https://example.com/a.jpg"])
    assert r.status_code == 422
    assert client.get("/nowhere").json() == {"error": "Not Found"}


def test_upload_over_the_cap_is_413(tiny_model):
    opts = ServeOptions(max_upload_bytes=50_000)
    with TestClient(create_app(tiny_model, options=opts)) as c:
        assert upload(c, png_bytes(RED)).status_code == 200
        r = upload(c, b"\0" * 60_000)
        assert r.status_code == 413 and "larger than 50000 bytes" in r.json()["error"]
        # declared too large: refused from the header, before any of the body is read
        r = c.post(
            "/v1/predict",
            content=b"x",
            headers={"content-length": "999999999", "content-type": "multipart/form-data; boundary=b"},
        )
        assert r.status_code == 413


# ---- URL inputs --------------------------------------------------------------------------------------------


def _routes():
    img = png_bytes(GREEN)
    return {
        "/img.png": (200, {"Content-Type": "image/png", "Content-Length": str(len(img))}, img, 0),
        "/page": (200, {"Content-Type": "text/html"}, b"<html></html>", 0),
        "/big.png": (200, {"Content-Type": "image/png", "Content-Length": "3000000"}, b"\0" * 3_000_000, 0),
        "/big-unsized.png": (200, {"Content-Type": "image/png", "Connection": "close"}, b"\0" * 3_000_000, 0),
        "/slow.png": (200, {"Content-Type": "image/png"}, img, 3.0),
        "/redirect": (302, {"Location": "/img.png", "Content-Length": "0"}, b"", 0),
        "/loop": (302, {"Location": "/loop", "Content-Length": "0"}, b"", 0),
        "/missing": (404, {"Content-Length": "0"}, b"", 0),
        "/junk.png": (200, {"Content-Type": "image/png"}, b"definitely not a png", 0),
    }


@pytest.fixture(scope="module")
def images_url():
    with image_server(_routes()) as base:
        yield base


@pytest.fixture(scope="module")
def open_client(tiny_model):
    opts = ServeOptions(allow_private_urls=True, max_url_bytes=1_000_000, url_timeout=1.0, max_redirects=3)
    with TestClient(create_app(tiny_model, options=opts)) as c:
        yield c


def test_url_input_when_private_addresses_are_allowed(open_client, images_url):
    r = open_client.post("/v1/predict", json={"url": f"{images_url}/img.png"})
    assert r.status_code == 200 and r.json()["predictions"]["label"][0]["label"] == "green"
    r = open_client.post("/v1/predict", json={"url": f"{images_url}/redirect"})
    assert r.status_code == 200 and r.json()["predictions"]["label"][0]["label"] == "green"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/page", 415, "content-type text/html"),
        ("/big.png", 413, "larger than"),
        ("/big-unsized.png", 413, "larger than"),
        ("/slow.png", 504, "timed out"),
        ("/loop", 502, "redirects"),
        ("/missing", 502, "HTTP 404"),
        ("/junk.png", 415, "not an image"),
    ],
)
def test_bad_urls(open_client, images_url, path, status, message):
    r = open_client.post("/v1/predict", json={"url": images_url + path})
    assert r.status_code == status and message in r.json()["error"], r.text


def test_loopback_urls_are_refused_by_default(client, images_url):
    r = client.post("/v1/predict", json={"url": f"{images_url}/img.png"})
    assert r.status_code == 403 and "loopback, private or link-local" in r.json()["error"]
    port = images_url.rsplit(":", 1)[1]
    r = client.post("/v1/predict", json={"url": f"http://localhost:{port}/img.png"})  # after DNS resolution
    assert r.status_code == 403 and "localhost resolves to" in r.json()["error"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x", "http://"])
def test_only_http_urls(client, url):
    r = client.post("/v1/predict", json={"url": url})
    assert r.status_code == 400 and r.json()["error"], r.text


# ---- search ------------------------------------------------------------------------------------------------


class FakeIndex:
    def __init__(self, paths):
        self.paths, self.calls = paths, []

    def search_vectors(self, query, k=10, where=None):
        """As ``vestis.index.Index.search_vectors``: one list of result rows per query row."""
        self.calls.append((query.shape, k, where))
        rows = [
            {"id": i, "path": str(p), "score": 0.9 - i / 10, "colour": p.parent.name, "year": float("nan")}
            for i, p in enumerate(self.paths[:k])
        ]
        return [rows]


def test_search_is_off_without_an_index(client):
    r = client.post("/v1/search", files={"file": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 501 and "--index" in r.json()["error"]
    with TestClient(create_app(client.app.state.model, index_note="no module")) as c:
        assert c.post("/v1/search", json={"url": "x"}).json()["error"] == "no module"


def test_search_with_an_index_and_its_signed_image_urls(tiny_model, tiny_run):
    paths = sorted((tiny_run[1] / "test").rglob("*.png"))
    index = FakeIndex(paths)
    with TestClient(create_app(tiny_model, index=index)) as c:
        assert c.get("/v1/model").json()["search"] is True
        r = c.post(
            "/v1/search",
            files={"file": ("a.png", png_bytes(RED), "image/png")},
            params={"k": 4, "where": ["colour=red|blue"]},
        )
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert len(results) == 4 and set(results[0]) == {"id", "path", "score", "colour", "year", "image_url"}
        assert results[0]["year"] is None  # NaN metadata is null, not invalid JSON
        assert index.calls == [((1, tiny_model.embedding_dim), 4, ["colour=red|blue"])]
        img = c.get(results[0]["image_url"])
        assert img.status_code == 200 and img.content == paths[0].read_bytes()
        sig = parse_qs(urlsplit(results[0]["image_url"]).query)["sig"][0]
        assert c.get("/v1/images", params={"path": "/etc/passwd", "sig": sig}).status_code == 404
        assert c.get("/v1/images", params={"path": "/etc/passwd", "sig": "0" * 64}).status_code == 404
        assert c.post("/v1/search", json={"url": "x"}, params={"where": "nocolumn"}).status_code == 422


def test_options_are_checked():
    for bad in (
        {"max_batch": 0},
        {"max_wait_ms": -1},
        {"queue_size": 1.5},
        {"allow_private_urls": "yes"},
        {"top_k": 60},
        {"url_timeout": 0},
    ):
        with pytest.raises(ValueError, match="serve option"):
            ServeOptions(**bad)
    with pytest.raises(ValueError, match="unknown serve option"):
        ServeOptions.from_dict({"max_bath": 4})
    assert json.loads(ServeOptions(max_batch=4).to_json())["max_batch"] == 4
    with pytest.raises(TypeError):
        create_app(object(), options={"max_batch": 4})


def test_search_with_a_real_index(tiny_model, tiny_run, tmp_path):
    """The server on `vestis.index` (issue 11): results, filters, signed images, another model refused."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    index_mod = pytest.importorskip("vestis.index", reason="the index module is not in this checkout")
    from vestis.serve.server import open_index

    index_mod.build_index(str(tiny_run[1] / "test"), str(tmp_path / "idx"), model=tiny_model)
    index, note = open_index(str(tmp_path / "idx"), tiny_model)
    assert note is None
    with TestClient(create_app(tiny_model, index)) as c:
        red = {"file": ("a.png", png_bytes(RED), "image/png")}
        results = c.post("/v1/search", files=red, params={"k": 3}).json()["results"]
        assert [r["folder"] for r in results] == ["red"] * 3 and results[0]["score"] > results[-1][
            "score"
        ] - 1e-9
        assert c.get(results[0]["image_url"]).status_code == 200
        blue = c.post("/v1/search", files=red, params={"where": "folder=blue"}).json()["results"]
        assert blue and {r["folder"] for r in blue} == {"blue"}
        r = c.post("/v1/search", files=red, params={"where": "nope=1"})
        assert r.status_code == 422 and "no column 'nope'" in r.json()["error"]
