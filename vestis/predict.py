"""Prediction from files, folders, globs and http(s) URLs, and the in-memory variant the server uses.

Every expanded input gives exactly one result, in input order, of one of two shapes (a public contract):
``{"input": str, "predictions": {head: [{"label": str, "score": float}, ...]}}`` or
``{"input": str, "error": str}``. A bad input never stops the others."""

from __future__ import annotations

import contextlib
import csv
import glob
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from vestis import __version__
from vestis.data.hierarchy import consistent_decode
from vestis.data.images import ImageError, is_image_path
from vestis.engine.infer import image_set, run_batches

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # any scheme; fetch_url refuses all but http(s)
_CSV_COLUMNS = ["input", "head", "rank", "label", "score", "error"]


@dataclass
class PredictConfig:
    top_k: int = 3
    batch_size: int = 32
    workers: int | None = None  # image-decoding processes; None: iterate_batches' default
    timeout: float = 10.0  # seconds per download
    max_bytes: int = 20 * 2**20  # largest download accepted
    tta: bool = False  # average with the horizontally flipped image
    progress: bool = True
    # a label hierarchy (vestis.data.hierarchy.learn_hierarchy, as the model card stores it): decode its heads
    # jointly over the combinations seen in training (consistent_decode); None: each head on its own
    hierarchy: dict | None = None

    def __post_init__(self):
        for name in ("top_k", "batch_size", "timeout", "max_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"{name} must be {'> 0' if name == 'timeout' else '>= 1'}, got {getattr(self, name)}"
                )
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


def _is_url(s: str) -> bool:
    return bool(_URL.match(s))


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """Each input -> [(input, error or None)]: folders expand recursively to their images, globs to their
    matches (both sorted), URLs stay as they are, missing paths and empty folders/globs become errors."""
    out: list[tuple[str, str | None]] = []
    for s in inputs:
        if _is_url(s):
            out.append((s, None))
        elif Path(s).is_dir():
            images = _folder_images(Path(s))
            out.extend([(p, None) for p in images] or [(s, "no images in this folder")])
        elif Path(s).exists():  # an existing file is itself, even with glob characters in its name
            out.append((s, None))
        elif any(c in s for c in "*?["):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                out.append((s, "no file matches this pattern"))
            for m in matches:
                out.extend(expand_inputs([m]) if Path(m).is_dir() else [(m, None)])
        else:
            out.append((s, None if Path(s).exists() else "file not found"))
    return out


def _folder_images(root: Path) -> list[str]:
    """Image files under ``root``, sorted; symlinked folders are followed once (a link loop cannot recurse)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".") and is_image_path(f)]
    return sorted(p for p in found if os.path.isfile(p))


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n} bytes"


def fetch_url(url: str, timeout: float, max_bytes: int) -> bytes:
    """GET an http(s) image of at most ``max_bytes``; any failure is an ``ImageError`` with the reason."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageError(f"unsupported URL scheme {scheme!r}: only http and https are accepted")
    # no file: or ftp: handlers, so a redirect cannot reach the local disk either
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    request = urllib.request.Request(url, headers={"User-Agent": f"vestis/{__version__}"})
    too_large = ImageError(f"download larger than {_size(max_bytes)}")
    try:
        with opener.open(request, timeout=timeout) as resp:
            ctype = resp.headers.get_content_type()
            if not ctype.startswith("image/"):
                raise ImageError(f"not an image (content-type {ctype})")
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise too_large
            chunks, total = [], 0
            while chunk := resp.read(min(1 << 16, max_bytes + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise too_large
            return b"".join(chunks)
    except ImageError:
        raise
    except urllib.error.HTTPError as e:
        raise ImageError(f"download failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise ImageError(f"download failed: {e.reason}") from e
    except TimeoutError as e:
        raise ImageError("download failed: timed out") from e
    except (OSError, ValueError, http.client.HTTPException) as e:  # reset, bad status line, bad URL...
        raise ImageError(f"download failed: {e or type(e).__name__}") from e


def top_predictions(probs: dict[str, np.ndarray], classes: dict[str, list[str]], k: int) -> list[dict]:
    """Per-head probabilities (B, C) -> one ``{head: [{label, score}, ...]}`` per row, best first."""
    b = len(next(iter(probs.values()))) if probs else 0
    rows: list[dict] = [{} for _ in range(b)]
    for head, p in probs.items():
        kk = min(k, p.shape[-1])
        order = np.argsort(-p, axis=-1, kind="stable")[:, :kk]
        names = classes[head]
        for row, pr, idx in zip(rows, p, order, strict=True):
            row[head] = [{"label": names[j], "score": round(float(pr[j]), 6)} for j in idx]
    return rows


def _try_fetch(url: str, timeout: float, max_bytes: int) -> tuple[bytes | None, str | None]:
    try:
        return fetch_url(url, timeout, max_bytes), None
    except ImageError as e:
        return None, str(e)


def resolve_inputs(
    inputs: list[str], timeout: float = 10.0, max_bytes: int = 20 * 2**20
) -> list[tuple[str, object, str | None]]:
    """Expand inputs (:func:`expand_inputs`) and download the URLs (in parallel threads): one
    ``(name, source, error)`` per image, where ``source`` is a path or the downloaded bytes (None on error)."""
    expanded = expand_inputs(inputs)
    urls = [i for i, (s, err) in enumerate(expanded) if err is None and _is_url(s)]
    fetched: dict[int, tuple[bytes | None, str | None]] = {}
    if urls:
        with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
            got = pool.map(lambda i: _try_fetch(expanded[i][0], timeout, max_bytes), urls)
            fetched = dict(zip(urls, got, strict=True))
    out = []
    for i, (s, err) in enumerate(expanded):
        src, err = fetched.get(i, (s, err))
        out.append((s, None if err else src, err))
    return out


def predict(runner, inputs: list[str], cfg: PredictConfig) -> Iterator[dict]:
    """Yield one result per expanded input, in input order. ``runner``: an engine runner (PyTorch or ONNX
    Runtime; one model or an ensemble), e.g. ``vestis.load(...).runner``."""
    resolved = resolve_inputs(inputs, cfg.timeout, cfg.max_bytes)
    names = [name for name, _, _ in resolved]
    ready: dict[int, dict] = {}  # finished results waiting for their turn
    where, items = [], []  # result index and source (path or downloaded bytes) of each image to run
    for i, (name, src, err) in enumerate(resolved):
        if err is not None:
            ready[i] = {"input": name, "error": err}
        else:
            where.append(i)
            items.append(src)

    nxt = 0
    if items:
        bar = tqdm(
            total=len(items),
            unit="img",
            desc="predict",
            disable=not cfg.progress or len(items) <= cfg.batch_size,
        )
        views = ("plain", "flip") if cfg.tta else ("plain",)
        for r in run_batches(runner, items, views, cfg.batch_size, cfg.workers):
            for j, err in r.errors:
                ready[where[j]] = {"input": names[where[j]], "error": err}
            probs = consistent_decode(r.probs, runner.classes, cfg.hierarchy) if cfg.hierarchy else r.probs
            for j, preds in zip(
                r.idx.tolist(), top_predictions(probs, runner.classes, cfg.top_k), strict=True
            ):
                ready[where[j]] = {"input": names[where[j]], "predictions": preds}
            bar.update(len(r.idx) + len(r.errors))
            while nxt in ready:
                yield ready.pop(nxt)
                nxt += 1
        bar.close()
    for i in range(nxt, len(names)):
        yield ready.pop(i)


def predict_images(
    runner,
    images: list[Image.Image | bytes],
    top_k: int = 3,
    tta: bool = False,
    hierarchy: dict | None = None,
) -> list[dict]:
    """In-memory prediction (the server's): ``{"predictions": ...}`` or ``{"error": ...}`` per image, in order.
    ``hierarchy``: as :attr:`PredictConfig.hierarchy`."""
    ds = image_set(runner, list(images), ("plain", "flip") if tta else ("plain",))
    out: list[dict] = [{} for _ in images]
    for r in run_batches(runner, ds, batch_size=max(1, len(images)), workers=0):
        for j, err in r.errors:
            out[j] = {"error": err}
        probs = consistent_decode(r.probs, runner.classes, hierarchy) if hierarchy else r.probs
        for j, preds in zip(r.idx.tolist(), top_predictions(probs, runner.classes, top_k), strict=True):
            out[j] = {"predictions": preds}
    return out


def _table_rows(r: dict) -> list[tuple[str, str | None, str]]:
    if "error" in r:  # no head: the message starts in the head column
        return [(r["input"], None, f"ERROR: {r['error']}")]
    return [
        (r["input"] if n == 0 else "", head, "  ".join(f"{p['label']} {p['score']:.1%}" for p in preds))
        for n, (head, preds) in enumerate(r["predictions"].items())
    ]


def write_results(
    results: Iterable[dict], fmt: str, out: TextIO, csv_path: Path | None = None
) -> tuple[int, int]:
    """Write results as a 'table' (to ``out``, once all are in) or 'json' lines (flushed per result), and
    optionally as CSV rows (input, head, rank, label, score, error). Returns (n_ok, n_failed)."""
    if fmt not in ("table", "json"):
        raise ValueError(f"unknown format {fmt!r}; choose table or json")
    n_ok = n_failed = 0
    rows: list[tuple[str, str | None, str]] = []
    with open(csv_path, "w", newline="", encoding="utf-8") if csv_path else contextlib.nullcontext() as f:
        writer = csv.writer(f) if csv_path else None
        if writer:
            writer.writerow(_CSV_COLUMNS)
        for r in results:
            failed = "error" in r
            n_failed += failed
            n_ok += not failed
            if writer:
                if failed:
                    writer.writerow([r["input"], "", "", "", "", r["error"]])
                for head, preds in r.get("predictions", {}).items():
                    for rank, p in enumerate(preds, 1):
                        writer.writerow([r["input"], head, rank, p["label"], p["score"], ""])
            if fmt == "json":
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
                out.flush()
            else:
                rows.extend(_table_rows(r))
    if fmt == "table" and rows:
        rows.insert(0, ("input", "head", "top predictions"))
        w0 = max(len(a) for a, _, _ in rows)
        w1 = max(len(b) for _, b, _ in rows if b is not None)
        for a, b, c in rows:
            out.write(f"{a:<{w0}}  {c}\n" if b is None else f"{a:<{w0}}  {b:<{w1}}  {c}\n")
        out.flush()
    return n_ok, n_failed
