"""The training images' native resolution: measured cheaply (image headers, no decoding, on a seeded sample),
and recorded in a model's preprocessing when the images are small for the model.

A model trained on small images (a 60x80 catalogue) learned them upscaled, blurred, to its input size; a sharp
photo of the same product looks different to it. With the native size recorded, prediction box-downscales
larger inputs to it first (:class:`vestis.models.preprocess.ToNative`). Ordinary photo datasets (images at
least about the model's input size) record nothing. Measured: docs/BENCHMARKS.md, "Sharp photos"."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = 256  # images whose headers are read
# "small": the model upscales the median image's shorter side by at least this factor (60x80 for a 224 model
# resized to 256: 4.3x; 224x224 photos: 1.1x, nothing recorded)
SMALL_UPSCALE = 1.5
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image as it will be shown upright, from its header (nothing decoded); None when
    the file cannot be read as an image."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.format in ("JPEG", "TIFF", "WEBP", "PNG") and img.getexif().get(0x0112) in _ROTATED:
                w, h = h, w
            return int(w), int(h)
    except Exception:  # unreadable files are the loader's to report
        return None


def median_size(paths: list, sample: int = SAMPLE, seed: int = 0) -> tuple[int, int] | None:
    """Median (width, height) over a seeded sample of ``paths`` (None when none can be read)."""
    paths = list(paths)
    if len(paths) > sample:
        pick = np.random.default_rng(seed).choice(len(paths), sample, replace=False)
        paths = [paths[i] for i in sorted(pick)]
    sizes = [s for s in map(image_size, paths) if s is not None]
    if not sizes:
        return None
    w, h = np.median(np.array(sizes, dtype=np.float64), axis=0)
    return int(round(w)), int(round(h))


def is_small(size: tuple[int, int], resize_size: int) -> bool:
    """Whether images of ``size`` are small for a model that resizes the shorter side to ``resize_size``."""
    return resize_size / min(size) >= SMALL_UPSCALE


def parse_setting(setting) -> str | tuple[int, int]:
    """'auto' (measure), 'off' (record nothing), or a size: 'WxH', (w, h)."""
    if setting is None or setting == "auto":
        return "auto"
    if setting in ("off", False):
        return "off"
    if isinstance(setting, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", setting)
        if not m:
            raise ValueError(f"native size must be auto, off or WIDTHxHEIGHT (e.g. 60x80), got {setting!r}")
        setting = (m[1], m[2])
    w, h = (int(x) for x in setting)
    if min(w, h) < 1:
        raise ValueError(f"native size must be >= 1x1, got {w}x{h}")
    return w, h


def native_size_for(paths: list, resize_size: int, setting="auto") -> tuple[int, int] | None:
    """The native size to record for a model trained on ``paths``: ``setting`` 'auto' gives the median size
    when the images are small (:func:`is_small`), else None; 'off' gives None; an explicit size is kept."""
    setting = parse_setting(setting)
    if setting == "off":
        return None
    if setting != "auto":
        return setting
    size = median_size(paths)
    return size if size is not None and is_small(size, resize_size) else None


def record_native_size(model, paths: list, setting="auto") -> tuple[int, int] | None:
    """Set ``model.preprocess.native_size`` for training images ``paths`` (:func:`native_size_for`); returns it."""
    native = native_size_for(paths, model.preprocess.resize_size, setting)
    model.preprocess = replace(model.preprocess, native_size=native)
    return native
