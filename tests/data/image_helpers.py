"""Images the loading tests make: saved, compared, and a PNG header that claims any size."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    return tuple(int(v) for v in img.getpixel(xy))


def near(a, b, tol: int = 12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


def check_rgb(img: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    if size is not None:
        assert img.size == size
    return img


def halves(size=(40, 20), left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    """A wide RGB image: left half ``left``, right half ``right``."""
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def png_with_size(tmp_path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (CRC fixed up): a decompression bomb header."""
    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    return path


def big_jpeg(tmp_path: Path) -> Path:
    arr = np.zeros((1500, 2000, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, 2000, dtype=np.uint8)[None, :]
    arr[..., 2] = np.linspace(0, 255, 1500, dtype=np.uint8)[:, None]
    return save(Image.fromarray(arr), tmp_path / "big.jpg", quality=85)
