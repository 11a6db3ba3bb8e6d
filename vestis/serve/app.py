"""The FastAPI app: the web page, the prediction/search API, model card, health and metrics.

``create_app(model, index=None, options=ServeOptions())``: ``model`` is a :class:`vestis.Model`; ``index`` an
opened search index (``vestis.index``) or None. Tests drive it with FastAPI's TestClient or httpx."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib.resources
import importlib.util
import io
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from vestis import __version__
from vestis.engine.infer import image_set, run_batches
from vestis.engine.loader import ImageSet
from vestis.predict import top_predictions
from vestis.serve.batcher import MicroBatcher, Overloaded
from vestis.serve.fetch import FetchError, fetch_image
from vestis.serve.inputs import InputError, read_json, read_upload
from vestis.serve.metrics import Metrics, MetricsMiddleware
from vestis.serve.options import ServeOptions
from vestis.serve.schema import ERRORS, IMAGE_BODY, ErrorAnswer, ExplainAnswer, Prediction, SearchAnswer


class _Prepared(ImageSet):
    """Images already decoded and transformed (one (V, ...) array each), as the engine's loader takes them."""

    def __init__(self, xs: list, views: tuple[str, ...]):
        self.items, self.views, self.cache = xs, views, None

    def __getitem__(self, i: int):
        return i, self.items[i], ""


class SearchUnavailable(Exception):
    pass


class ExplainUnavailable(Exception):
    pass


def serving_runner(runner, opts: ServeOptions):
    """The runner the server runs: an ONNX Runtime model re-opened with its threads not spinning (unless
    ``opts.ort_spinning``) and with ``opts.model_threads`` threads (when set); any other runner as it is.

    Spinning lets ONNX Runtime's idle threads busy-wait for the next parallel section: faster for a lone
    caller, but in a server the decoding threads and the event loop need those cores between forward passes
    (measured in docs/BENCHMARKS.md)."""
    if getattr(runner, "runtime", None) != "onnx" or not isinstance(
        getattr(runner, "path", None), os.PathLike
    ):
        return runner
    if opts.ort_spinning and not opts.model_threads:
        return runner
    from vestis.engine.ort_runner import OnnxRunner

    off = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
    return OnnxRunner(
        runner.path,
        device=runner.device,
        threads=opts.model_threads or runner.threads,
        session_config=None if opts.ort_spinning else off,
    )


def explain_note(model) -> str | None:
    """Why Grad-CAM explanations are unavailable for ``model`` (None: they are available)."""
    source = getattr(model, "source", None)
    if isinstance(source, list) and len(source) > 1:
        return "explanations are per model: this server runs an ensemble"
    if source is not None and str(source).lower().endswith(".onnx"):
        return "explanations need the run directory (PyTorch weights); this server runs an .onnx file"
    missing = [m for m in ("torch", "pytorch_grad_cam") if importlib.util.find_spec(m) is None]
    if missing:
        return f"explanations need {' and '.join(missing)}: pip install 'vestis[explain]'"
    return None


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _status_of_image_error(message: str) -> int:
    return 415 if message.startswith(("not an image", "empty file")) else 422


def page_html() -> str:
    return importlib.resources.files("vestis.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    model, index=None, options: ServeOptions | None = None, index_note: str | None = None
) -> FastAPI:
    """The app serving ``model`` (and ``index`` when given). ``index_note``: why search is off, shown by
    /v1/search and /v1/model when ``index`` is None (e.g. the index module is not installed)."""
    opts = options or ServeOptions()
    if not isinstance(opts, ServeOptions):
        raise TypeError(f"options must be a ServeOptions, got {type(opts).__name__}")
    runner = serving_runner(model.runner, opts)
    if runner is not model.runner:  # the model's own session is not kept open beside the server's
        from vestis.api import Model

        model = Model(runner, model.card, model.source, getattr(model, "cache_dir", None))
    views = ("plain", "flip") if opts.tta else ("plain",)
    decode_pool = ThreadPoolExecutor(opts.decode_threads, thread_name_prefix="vestis-decode")
    explain_pool = ThreadPoolExecutor(1, thread_name_prefix="vestis-explain")  # PyTorch, one at a time
    no_explain = explain_note(model)

    def forward(xs: list) -> list:
        """One forward pass over prepared images -> (probs per head, embedding) per image."""
        r = next(iter(run_batches(runner, _Prepared(xs, views), batch_size=len(xs), workers=0)))
        emb = r.embeddings
        return [({h: p[i : i + 1] for h, p in r.probs.items()}, emb[i]) for i in range(len(xs))]

    batcher = MicroBatcher(forward, opts.max_batch, opts.max_wait_ms, opts.queue_size)
    metrics = Metrics(batcher)
    batcher.observe = metrics.observe_batch
    batcher.observe_wait = lambda s: metrics.observe_stage("queue", s)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop(opts.shutdown_timeout_s)
            decode_pool.shutdown(wait=False, cancel_futures=True)
            explain_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="vestis",
        version=__version__,
        description="Fashion product photos to labels (and similar products when an index is loaded).",
        lifespan=lifespan,
    )
    app.state.model, app.state.index, app.state.options = model, index, opts
    app.state.batcher, app.state.metrics = batcher, metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    search_note = index_note or "search is off: start the server with --index DIR (an index built by vestis)"

    @app.exception_handler(Overloaded)
    async def _overloaded(request, exc):
        metrics.rejected.inc()
        return _error(503, str(exc), {"Retry-After": str(opts.retry_after_s)})

    @app.exception_handler(InputError)
    async def _bad_input(request, exc):
        return _error(exc.status, str(exc))

    @app.exception_handler(FetchError)
    async def _bad_url(request, exc):
        return _error(exc.status, str(exc))

    @app.exception_handler(SearchUnavailable)
    @app.exception_handler(ExplainUnavailable)
    async def _unavailable(request, exc):
        return _error(501, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def read_image(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            body = await read_json(request)
            url = body.get("url")
            if not isinstance(url, str) or not url:
                raise InputError('the JSON body needs "url": a http(s) address of an image', 422)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None,
                lambda: fetch_image(
                    url, opts.url_timeout, opts.max_url_bytes, opts.allow_private_urls, opts.max_redirects
                ),
            )
        data, _ = await read_upload(request, opts.max_upload_bytes)
        return data

    def prepare(data: bytes, submitted: float):
        t0, cpu0 = time.perf_counter(), time.thread_time()
        metrics.observe_stage("decode_wait", t0 - submitted)
        try:
            _, x, err = image_set(runner, [data], views)[0]
        finally:
            metrics.decode_cpu.inc(time.thread_time() - cpu0)
            metrics.observe_stage("decode", time.perf_counter() - t0)
        if x is None:
            raise InputError(err, _status_of_image_error(err))
        return x

    async def read_and_decode(request: Request) -> tuple[bytes, object]:
        """The request's image: its bytes and its prepared views (decoded off the event loop)."""
        t0 = time.perf_counter()
        data = await read_image(request)
        t1 = time.perf_counter()
        metrics.observe_stage("read", t1 - t0)
        return data, await asyncio.get_running_loop().run_in_executor(decode_pool, prepare, data, t1)

    async def run_model(request: Request):
        with batcher.admit():
            _, x = await read_and_decode(request)
            return await batcher.submit(x)

    def check_k(k: int | None) -> int:
        return opts.top_k if k is None else k

    @app.post(
        "/v1/predict",
        response_model=Prediction,
        responses=ERRORS,
        openapi_extra=IMAGE_BODY,
        summary='labels of one image (upload field `file`, or JSON {"url": ...})',
    )
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, le=opts.max_top_k)):
        probs, _ = await run_model(request)
        return {"predictions": top_predictions(probs, runner.classes, check_k(top_k))[0]}

    def sign(path: str) -> str:
        return hmac.new(
            opts.image_key.encode(), path.encode("utf-8", "surrogateescape"), hashlib.sha256
        ).hexdigest()

    def with_image_url(result: dict) -> dict:
        path = result.get("path")
        if isinstance(path, str) and path:
            result = {**result, "image_url": f"/v1/images?path={quote(path)}&sig={sign(path)}"}
        return result

    @app.post(
        "/v1/search",
        response_model=SearchAnswer,
        responses={**ERRORS, 501: {"model": ErrorAnswer, "description": "search is off"}},
        openapi_extra=IMAGE_BODY,
        summary="the most similar indexed products to one image (needs --index)",
    )
    async def search(
        request: Request,
        k: int = Query(12, ge=1, le=100),
        where: list[str] = Query(default=[], description="metadata filter col=value (col=a|b for either)"),
    ):
        if index is None:
            raise SearchUnavailable(search_note)
        for w in where:
            col, sep, _ = w.partition("=")
            if not sep or not col:
                raise InputError(f"where {w!r}: expected column=value (column=a|b for either)", 422)
        _, emb = await run_model(request)
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(None, lambda: search_index(index, emb, k, where))
        except ValueError as e:  # e.g. a filter on a column the index does not have
            raise InputError(str(e), 422) from e
        return {"results": [with_image_url(_plain(r)) for r in results]}

    def explain(data: bytes, head: str | None, cls: str | None) -> dict:
        try:
            e = model.explain(data, head, cls)
        except ValueError as err:  # an unknown head or class
            raise InputError(str(err), 422) from err
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(e.overlay).save(buf, "JPEG", quality=90)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return {"head": e.head, "cls": e.cls, "score": e.score, "predicted": e.predicted, "overlay": uri}

    @app.post(
        "/v1/explain",
        response_model=ExplainAnswer,
        responses={**ERRORS, 501: {"model": ErrorAnswer, "description": "explanations unavailable"}},
        openapi_extra=IMAGE_BODY,
        summary="Grad-CAM: where in the image the model looked for a class (default: the first head's top class)",
    )
    async def explain_image(
        request: Request,
        head: str | None = Query(None, description="the head to explain (default: the first)"),
        cls: str | None = Query(
            None, alias="class", description="a class name or index (default: the top one)"
        ),
    ):
        if no_explain:
            raise ExplainUnavailable(no_explain)
        with batcher.admit():
            data, _ = await read_and_decode(request)  # refuses what the model would refuse, before PyTorch
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(explain_pool, explain, data, head, cls)

    @app.get("/v1/images", include_in_schema=False)
    async def image(path: str, sig: str):
        if not hmac.compare_digest(sign(path), sig) or not os.path.isfile(path):
            return _error(404, "no such image")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/v1/model", summary="the model card: backbone, heads, classes, metrics, runtime")
    async def model_card():
        card = model.card
        return {
            "backbone": card.get("backbone"),
            "heads": model.heads,
            "classes": model.classes,
            "metrics": model.metrics,
            "runtime": model.runtime,
            "threads": getattr(runner, "threads", None),
            "source": str(model.source) if model.source else "bundled default",
            "version": __version__,
            "embedding_dim": model.embedding_dim,
            "search": index is not None,
            "search_note": None if index is not None else search_note,
            "explain": no_explain is None,
            "explain_note": no_explain,
            "max_upload_bytes": opts.max_upload_bytes,
            "top_k": opts.top_k,
        }

    @app.get("/healthz", summary="liveness: answers while the server runs")
    async def healthz():
        return {
            "status": "ok",
            "queue_depth": batcher.depth,
            "in_progress": batcher.admitted,
            "worker": os.getpid(),  # which process answered (vestis serve --workers N)
        }

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prom():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(page_html())

    return app


def _plain(r: dict) -> dict:
    """numpy scalars -> JSON types; NaN (a missing metadata value) -> null."""
    out = {}
    for k, v in r.items():
        v = v.item() if isinstance(v, np.generic) else v
        out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    return out


def search_index(index, embedding: np.ndarray, k: int, where: list[str]) -> list[dict]:
    """The index's results for one query embedding (``[{"id", "path", "score", <metadata>}, ...]``, the shape
    of ``vestis search --json``): ``index.search_vectors`` (``vestis.index.Index``), else ``index.search``."""
    query = np.asarray(embedding, np.float32)[None, :]
    find = getattr(index, "search_vectors", None) or index.search
    out = find(query, k=k, where=where or None)
    if out and isinstance(out[0], list):
        out = out[0]
    return list(out)
