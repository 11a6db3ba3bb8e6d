"""Robust image loading: anything that is not a usable image becomes an ``ImageError`` with a reason.

Handles EXIF orientation, every Pillow mode (CMYK, RGBA/LA/P with transparency -> on white,
16-bit and float greyscale rescaled, not clipped), truncated, empty and non-image files, and
decompression bombs. JPEGs are decoded at a reduced scale when the target size allows (``draft``)."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
MAX_PIXELS = 40_000_000  # larger images are refused as possible decompression bombs
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(Exception):
    """An input that cannot be used as an image; ``str(e)`` is the reason shown to the user."""


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(source: str | Path | bytes, min_size: int | None = None) -> Image.Image:
    """Open ``source`` (path or bytes) as an upright RGB image.

    ``min_size``: the shorter side the caller needs; JPEGs are then decoded at the smallest DCT scale
    that still gives at least that (much faster for big photos). Raises ``ImageError``."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except FileNotFoundError as e:
        raise ImageError("file not found") from e
    except IsADirectoryError as e:
        raise ImageError("is a directory") from e
    except OSError as e:
        raise ImageError(f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"image too large ({w}x{h} > {MAX_PIXELS} pixels): possible decompression bomb"
                )
            if min_size and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                short = min(w, h)
                scale = max(1, short // min_size)
                if scale > 1:
                    img.draft(img.mode, (w // scale, h // scale))
            img = ImageOps.exif_transpose(img)  # also loads the pixels
            img.load()
            return _to_rgb(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        kind = "not an image (unrecognised format)" if isinstance(e, UnidentifiedImageError) else None
        raise ImageError(kind or f"image too large: possible decompression bomb ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg:
            msg = "truncated image"
        raise ImageError(f"corrupt image: {msg}") from e


def file_digest(data: bytes) -> str:
    """Content hash used for duplicate detection and the feature cache."""
    return hashlib.sha1(data).hexdigest()
