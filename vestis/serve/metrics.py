"""Prometheus metrics of one app (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROUTES = {"/", "/v1/predict", "/v1/search", "/v1/explain", "/v1/model", "/v1/images", "/healthz", "/metrics"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# where a request's time goes (seconds of wall time per request, one observation per stage):
STAGES = {
    "read": "receiving and parsing the body (multipart) or fetching the URL, on the event loop",
    "decode_wait": "waiting for a decoding thread",
    "decode": "decoding and resizing the image, in a decoding thread",
    "queue": "queued for the model until its batch starts",
    "model": "the forward pass of its batch, in the model thread",
}


class Metrics:
    def __init__(self, batcher=None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vestis_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "vestis_request_seconds",
            "request latency, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "vestis_batch_size", "images per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "vestis_batch_seconds", "seconds per forward pass", buckets=LATENCY_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "vestis_stage_seconds",
            "seconds a request spends per stage: " + "; ".join(f"{k}: {v}" for k, v in STAGES.items()),
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.decode_cpu = Counter(
            "vestis_decode_cpu_seconds", "CPU seconds of the decoding threads (decode + resize)", registry=r
        )
        self.queue_depth = Gauge("vestis_queue_depth", "images waiting for the model", registry=r)
        self.in_progress = Gauge(
            "vestis_requests_in_progress",
            "requests admitted (reading, decoding, queued or running)",
            registry=r,
        )
        self.rejected = Counter("vestis_overload_rejections", "requests answered 503: queue full", registry=r)
        if batcher is not None:
            self.queue_depth.set_function(lambda: batcher.depth)
            self.in_progress.set_function(lambda: batcher.admitted)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        model = self.stage.labels("model")
        for _ in range(size):
            model.observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)


class MetricsMiddleware:
    """Pure ASGI (the request body keeps streaming): counts every HTTP answer and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
