"""The HTTP server: the web page and the JSON API over one model, with micro-batching (``vestis serve``).

``create_app(model, index=None, options=ServeOptions())`` builds the FastAPI app; :func:`serve` runs it under
uvicorn. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart, prometheus-client)."""

from vestis.serve.options import ServeOptions

__all__ = ["ServeOptions", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from vestis.serve.app import create_app

        return create_app
    if name == "serve":
        from vestis.serve.server import serve

        return serve
    raise AttributeError(f"module 'vestis.serve' has no attribute {name!r}")
