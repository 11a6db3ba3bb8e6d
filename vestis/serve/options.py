"""The server's options, checked when they are made (an invalid value is a ``ValueError`` naming it)."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, fields

_INT, _NUM = int, (int, float)
_KINDS = {
    "max_batch": _INT,
    "max_wait_ms": _NUM,
    "queue_size": _INT,
    "max_upload_bytes": _INT,
    "url_timeout": _NUM,
    "max_url_bytes": _INT,
    "max_redirects": _INT,
    "allow_private_urls": bool,
    "top_k": _INT,
    "max_top_k": _INT,
    "tta": bool,
    "decode_threads": _INT,
    "model_threads": _INT,
    "ort_spinning": bool,
    "retry_after_s": _INT,
    "shutdown_timeout_s": _NUM,
}
_ZERO_OK = {"max_wait_ms", "max_redirects", "model_threads"}


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 32  # images per forward pass at most
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others to join it
    queue_size: int = 64  # requests admitted at once (reading, decoding, queued or running); more get 503
    max_upload_bytes: int = 10 * 2**20  # largest upload (the whole request body, checked while it streams in)
    url_timeout: float = 10.0  # seconds for an image URL: connection and the whole download
    max_url_bytes: int = 10 * 2**20  # largest image downloaded from a URL
    max_redirects: int = 5
    allow_private_urls: bool = False  # let URLs reach loopback, private and link-local addresses
    top_k: int = 3  # predictions per head unless the request asks (?top_k=)
    max_top_k: int = 50
    tta: bool = False  # average each image with its mirror image (twice the model work)
    decode_threads: int = 4  # threads decoding and resizing uploaded images, beside the model's
    model_threads: int = 0  # ONNX Runtime threads per forward pass (0: its default, one per physical core)
    ort_spinning: bool = False  # let ONNX Runtime's idle threads busy-wait (steals the decoders' cores)
    retry_after_s: int = 1  # the Retry-After header of a 503
    shutdown_timeout_s: float = 30.0  # how long a stopping server lets requests in flight finish
    # signs the image URLs of search results (so /v1/images serves only files the server itself listed)
    image_key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    def __post_init__(self):
        for f in fields(self):
            value, kind = getattr(self, f.name), _KINDS.get(f.name)
            if kind is None:
                continue
            if kind is bool:
                ok = isinstance(value, bool)
            else:
                ok = isinstance(value, kind) and not isinstance(value, bool)
                ok = ok and (value >= 0 if f.name in _ZERO_OK else value > 0)
            if not ok:
                need = "true or false" if kind is bool else f"{'an integer' if kind is int else 'a number'} "
                need += "" if kind is bool else (">= 0" if f.name in _ZERO_OK else "> 0")
                raise ValueError(f"serve option {f.name} must be {need}, got {value!r}")
        if self.top_k > self.max_top_k:
            raise ValueError(f"serve option top_k ({self.top_k}) must be <= max_top_k ({self.max_top_k})")
        if not isinstance(self.image_key, str) or len(self.image_key) < 16:
            raise ValueError("serve option image_key must be a string of at least 16 characters")

    @classmethod
    def from_dict(cls, d: dict) -> ServeOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown serve option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(asdict(self))
