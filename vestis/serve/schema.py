"""The API's answer bodies (pydantic models, shown in /docs) and the OpenAPI description of its image body
and error answers. The shapes are contracts: tests/serve pin them."""

from __future__ import annotations

from pydantic import BaseModel


class Label(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    predictions: dict[str, list[Label]]


class SearchAnswer(BaseModel):
    results: list[dict]


class ExplainAnswer(BaseModel):
    head: str
    cls: str
    score: float
    predicted: str
    overlay: str  # data:image/jpeg;base64,... : the heat map over the crop the model saw


class ErrorAnswer(BaseModel):
    error: str


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"url": {"type": "string", "format": "uri"}},
                    "required": ["url"],
                }
            },
        },
    }
}
ERRORS = {
    s: {"model": ErrorAnswer, "description": d}
    for s, d in {
        400: "bad request or URL",
        403: "URL refused: not a public address",
        413: "upload or download over the size cap",
        415: "not an image",
        422: "an image that cannot be decoded (corrupt, truncated, decompression bomb) or a missing field",
        502: "the URL could not be downloaded",
        503: "server busy (Retry-After) or stopping",
        504: "the URL download timed out",
    }.items()
}
