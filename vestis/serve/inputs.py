"""Reading one image from a request: a multipart upload (field ``file``) streamed with a size cap, or a JSON
``{"url": ...}`` fetched under :mod:`vestis.serve.fetch`'s rules. Every refusal is an :class:`InputError` with
the HTTP status to answer and a message for the user."""

from __future__ import annotations

import json

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers allowed beyond the file's own cap
MAX_JSON_BYTES = 64 * 1024


class InputError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n} bytes"


def _too_large(limit: int) -> InputError:
    return InputError(f"upload larger than {_size(limit)}", 413)


def _check_length(request: Request, limit: int) -> None:
    """Refuse at once when the declared Content-Length is over ``limit`` (nothing is read)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)


async def read_json(request: Request) -> dict:
    _check_length(request, MAX_JSON_BYTES)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise InputError(f"JSON body larger than {_size(MAX_JSON_BYTES)}", 413)
    except ClientDisconnect as e:
        raise InputError("the client went away", 400) from e
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"invalid JSON: {e}", 400) from e
    if not isinstance(value, dict):
        raise InputError('the JSON body must be an object such as {"url": "https://..."}', 422)
    return value


async def read_upload(request: Request, max_bytes: int, field: str = "file") -> tuple[bytes, str | None]:
    """The bytes (and file name) of multipart field ``field``, read as the body streams in: more than
    ``max_bytes`` in the file, or more than that plus a little in the whole body, is refused mid-stream."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InputError("expected a multipart/form-data body with boundary", 415)
    body_limit = max_bytes + MULTIPART_OVERHEAD
    _check_length(request, body_limit)

    state = {"name": None, "filename": None, "found": False, "done": False, "hfield": b"", "hvalue": b""}
    headers: dict[bytes, bytes] = {}
    data = bytearray()
    over = False

    def on_part_begin():
        headers.clear()
        state["name"] = None

    def on_header_field(b, start, end):
        state["hfield"] += b[start:end]

    def on_header_value(b, start, end):
        state["hvalue"] += b[start:end]

    def on_header_end():
        headers[state["hfield"].lower()] = state["hvalue"]
        state["hfield"] = state["hvalue"] = b""

    def on_headers_finished():
        _, opts = parse_options_header(headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == field and not state["found"]:
            state["found"] = True
            fn = opts.get(b"filename")
            state["filename"] = fn.decode("utf-8", "replace") if fn is not None else None

    def on_part_data(b, start, end):
        nonlocal over
        if state["name"] == field and not state["done"]:
            data.extend(b[start:end])
            over = over or len(data) > max_bytes

    def on_part_end():
        if state["name"] == field:
            state["done"] = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > body_limit:
                raise _too_large(max_bytes)
            parser.write(chunk)
            if over:
                raise _too_large(max_bytes)
        parser.finalize()
    except ClientDisconnect as e:
        raise InputError("the client went away", 400) from e
    except InputError:
        raise
    except Exception as e:  # python-multipart's parse errors
        raise InputError(f"malformed multipart body: {e}", 400) from e
    if not state["found"]:
        raise InputError(f"no {field!r} field in the form: send the image as {field}=@photo.jpg", 422)
    if not state["done"]:
        raise InputError("the upload ended before the file did", 400)
    return bytes(data), state["filename"]
