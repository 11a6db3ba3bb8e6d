"""Bad image inputs: truncated, empty, not an image, missing, bombs; each a clear ImageError, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vestis.data.images as images_mod
from tests.data.image_helpers import big_jpeg, check_rgb, halves, png_with_size, save
from vestis.data.images import ImageError, load_image

# ------------------------------------------------------------------------------------------ bad inputs


def reason(source, **kw) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, **kw)
    return str(info.value).lower()


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    data = save(noise, tmp_path / "full.jpg", quality=90).read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    msg = reason(p)
    assert "truncated" in msg or "corrupt" in msg


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(1)
    data = save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "f.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(data.read_bytes()[:300])
    msg = reason(cut)
    assert "truncated" in msg or "corrupt" in msg


def test_jpeg_header_then_garbage(tmp_path):
    data = save(halves(), tmp_path / "ok.jpg").read_bytes()
    p = tmp_path / "garbage.jpg"
    p.write_bytes(data[:20] + b"\x00garbage" * 50)
    msg = reason(p)
    assert "corrupt" in msg or "truncated" in msg or "not an image" in msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert "empty file" in reason(p)
    assert "empty file" in reason(b"")


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    assert "not an image" in reason(p)
    assert "not an image" in reason(b"<html>nope</html>")


def test_missing_path(tmp_path):
    assert "file not found" in reason(tmp_path / "nope.jpg")
    assert "file not found" in reason(str(tmp_path / "nope.jpg"))


def test_directory(tmp_path):
    d = tmp_path / "dir.jpg"
    d.mkdir()
    assert "directory" in reason(d)


def test_unsupported_source_type():
    assert "unsupported" in reason(12345)  # type: ignore[arg-type]


def test_decompression_bomb_header_huge(tmp_path):
    p = png_with_size(tmp_path, 20000, 20000)  # 400 Mpx: Pillow's own bomb error
    msg = reason(p)
    assert "decompression bomb" in msg or "too large" in msg


def test_decompression_bomb_over_our_limit(tmp_path):
    p = png_with_size(tmp_path, 10000, 5000)  # 50 Mpx: under Pillow's limit, over MAX_PIXELS
    assert images_mod.MAX_PIXELS < 10000 * 5000
    msg = reason(p)
    assert "decompression bomb" in msg and "too large" in msg


def test_max_pixels_is_read_at_call_time(tmp_path, monkeypatch):
    p = save(Image.new("RGB", (100, 100)), tmp_path / "small.png")
    check_rgb(load_image(p))
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 1000)
    assert "too large" in reason(p)


def test_max_pixels_applies_to_the_decoded_size(tmp_path, monkeypatch):
    """A big JPEG that is only needed small is decoded at a reduced scale, so it is not refused."""
    p = big_jpeg(tmp_path)
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 1_000_000)
    assert "too large" in reason(p)  # 3 Mpx at full size
    out = check_rgb(load_image(p, min_size=256))  # decoded at 1/4: 500x375
    assert out.size[0] * out.size[1] <= 1_000_000


def test_errors_are_only_image_errors(tmp_path):
    """Random byte soup with a real signature in front must never escape as another exception."""
    rng = np.random.default_rng(2)
    heads = [
        b"\xff\xd8\xff\xe0",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"II*\x00",
        b"BM",
        b"RIFF\x00\x00\x00\x00WEBP",
    ]
    for i, head in enumerate(heads):
        for n in (0, 10, 200):
            data = head + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            try:
                check_rgb(load_image(data))
            except ImageError as e:
                assert str(e), f"case {i}/{n}: empty reason"
