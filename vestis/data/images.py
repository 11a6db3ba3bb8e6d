"""Robust image loading: anything that is not a usable image becomes an ``ImageError`` with a reason.

Handles EXIF orientation, every Pillow mode (CMYK, RGBA/LA/P with transparency -> on white,
16-bit and float greyscale rescaled, not clipped), truncated, empty and non-image files, and
decompression bombs. JPEGs are decoded at a reduced scale when the target size allows (``draft``)."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
MAX_PIXELS = 40_000_000  # larger images (as decoded, after draft) are refused: possible decompression bombs
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(Exception):
    """An input that cannot be used as an image; ``str(e)`` is the reason shown to the user."""


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _grey_to_uint8(img: Image.Image) -> np.ndarray:
    """16/32-bit integer and float greyscale -> 0..255, rescaled by the value range in use (never clipped
    to white): I;16 by 65535; I/F by 255, 65535 or their maximum (float images in 0..1 by 1)."""
    a = np.asarray(img, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    top = float(a.max()) if a.size else 0.0
    if img.mode.startswith("I;16"):
        hi = 65535.0
    elif img.mode == "F" and top <= 1.0:
        hi = 1.0
    elif top <= 255.0:
        hi = 255.0
    elif top <= 65535.0:
        hi = 65535.0
    else:
        hi = top
    return np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: transparency onto white, 16-bit and float rescaled by their range (not clipped)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_grey_to_uint8(img), "L").convert("RGB")
    if mode in ("P", "1", "L", "RGB") and "transparency" in img.info:
        # palette transparency or a PNG tRNS colour key: make it an alpha channel, composited below
        img = img.convert("RGBA")
        mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(source: str | Path | bytes, min_size: int | None = None) -> Image.Image:
    """Open ``source`` (path or bytes) as an upright RGB image.

    ``min_size``: the shorter side the caller needs; JPEGs are then decoded at the smallest DCT scale
    that still gives at least that (much faster for big photos). Raises ``ImageError``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError as e:
            raise ImageError("file not found") from e
        except IsADirectoryError as e:
            raise ImageError("is a directory") from e
        except OSError as e:
            raise ImageError(f"cannot read file: {e.strerror or e}") from e
    else:
        raise ImageError(f"unsupported image source {type(source).__name__} (expected a path or bytes)")
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's "Corrupt EXIF data" etc.
            img = Image.open(io.BytesIO(data))
            if min_size and min_size > 0 and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
                w, h = img.size
                scale = max(1, min(w, h) // min_size)
                if scale > 1:
                    img.draft(img.mode, (w // scale, h // scale))
            w, h = img.size  # after draft: the size that will actually be decoded
            if w * h > MAX_PIXELS:
                raise ImageError(
                    f"image too large ({w}x{h} > {MAX_PIXELS} pixels): possible decompression bomb"
                )
            img = ImageOps.exif_transpose(img)  # also loads the pixels
            img.load()
            return to_rgb(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        kind = "not an image (unrecognised format)" if isinstance(e, UnidentifiedImageError) else None
        raise ImageError(kind or f"image too large: possible decompression bomb ({e})") from e
    except MemoryError as e:
        raise ImageError("image too large: out of memory while decoding") from e
    except Exception as e:  # any decoder failure on bad bytes (OSError, SyntaxError, KeyError, ...)
        msg = str(e) or type(e).__name__
        if "truncated" in msg:
            msg = "truncated image"
        raise ImageError(f"corrupt image: {msg}") from e


def file_digest(data: bytes) -> str:
    """Content hash used for duplicate detection and the feature cache."""
    return hashlib.sha1(data).hexdigest()
