"""Tests for robust image loading: every odd but valid input is an upright RGB image (bad inputs, each a clear
ImageError: test_images_bad.py).

Everything is generated in tmp_path with Pillow/numpy; each test runs in milliseconds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from tests.data.image_helpers import big_jpeg, check_rgb, halves, near, px, save
from vestis.data.images import file_digest, is_image_path, load_image

# ------------------------------------------------------------------------------------------ plain modes


def test_rgb_jpeg(tmp_path):
    p = save(halves(), tmp_path / "a.jpg", quality=95)
    img = check_rgb(load_image(p), (40, 20))
    assert near(px(img, (5, 10)), (255, 0, 0), 40)
    assert near(px(img, (35, 10)), (0, 0, 255), 40)


def test_str_path_and_bytes_input(tmp_path):
    p = save(halves(), tmp_path / "a.png")
    from_str = check_rgb(load_image(str(p)), (40, 20))
    from_bytes = check_rgb(load_image(p.read_bytes()), (40, 20))
    assert from_str.tobytes() == from_bytes.tobytes()
    assert px(from_bytes, (5, 5)) == (255, 0, 0)


def test_bytearray_and_memoryview_input(tmp_path):
    data = save(halves(), tmp_path / "a.png").read_bytes()
    assert px(check_rgb(load_image(bytearray(data))), (35, 5)) == (0, 0, 255)
    assert px(check_rgb(load_image(memoryview(data))), (35, 5)) == (0, 0, 255)


def test_greyscale_l(tmp_path):
    p = save(Image.new("L", (10, 8), 77), tmp_path / "g.jpg", quality=100)
    img = check_rgb(load_image(p), (10, 8))
    assert near(px(img, (3, 3)), (77, 77, 77), 3)


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # white
    img.paste((0, 255, 255, 0), (0, 0, 8, 16))  # red (no cyan ink)
    p = save(img, tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(p).mode == "CMYK"
    out = check_rgb(load_image(p), (16, 16))
    assert near(px(out, (2, 8)), (255, 0, 0), 30)
    assert near(px(out, (13, 8)), (255, 255, 255), 30)


def test_one_bit(tmp_path):
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (4, 0, 8, 8))
    p = save(img, tmp_path / "bits.png")
    assert Image.open(p).mode == "1"
    out = check_rgb(load_image(p), (8, 8))
    assert px(out, (1, 1)) == (0, 0, 0)
    assert px(out, (6, 1)) == (255, 255, 255)


# ------------------------------------------------------------------------------------------ transparency


def test_rgba_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent *black*
    img.paste((255, 0, 0, 255), (0, 0, 5, 10))  # opaque red
    img.paste((0, 0, 255, 128), (5, 0, 10, 5))  # half-transparent blue
    p = save(img, tmp_path / "rgba.png")
    out = check_rgb(load_image(p), (10, 10))
    assert px(out, (2, 2)) == (255, 0, 0)
    assert px(out, (7, 8)) == (255, 255, 255)
    assert near(px(out, (7, 2)), (127, 127, 255), 2)


def test_la_on_white(tmp_path):
    img = Image.new("LA", (10, 10), (0, 0))
    img.paste((60, 255), (0, 0, 5, 10))
    p = save(img, tmp_path / "la.png")
    assert Image.open(p).mode == "LA"
    out = check_rgb(load_image(p), (10, 10))
    assert px(out, (2, 2)) == (60, 60, 60)
    assert px(out, (8, 2)) == (255, 255, 255)


def _palette_image() -> Image.Image:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.paste(1, (0, 0, 5, 10))
    img.paste(2, (5, 0, 10, 5))
    return img  # index 0 (black) in the bottom-right quarter


def test_palette_without_transparency(tmp_path):
    p = save(_palette_image(), tmp_path / "p.png")
    assert Image.open(p).mode == "P"
    out = check_rgb(load_image(p), (10, 10))
    assert px(out, (2, 2)) == (255, 0, 0)
    assert px(out, (7, 2)) == (0, 255, 0)
    assert px(out, (7, 8)) == (0, 0, 0)


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_with_transparency(tmp_path, fmt):
    p = save(_palette_image(), tmp_path / f"pt.{fmt}", transparency=0)
    loaded = Image.open(p)
    assert loaded.mode == "P" and "transparency" in loaded.info
    out = check_rgb(load_image(p), (10, 10))
    assert px(out, (2, 2)) == (255, 0, 0)
    assert px(out, (7, 8)) == (255, 255, 255)  # transparent index -> white, not black


@pytest.mark.parametrize(
    ("mode", "fill", "key"), [("RGB", (1, 2, 3), (1, 2, 3)), ("L", 7, 7)], ids=["rgb", "l"]
)
def test_colour_key_transparency_png(tmp_path, mode, fill, key):
    """PNG tRNS colour key on an RGB / L image: the keyed colour is transparent -> white."""
    img = Image.new(mode, (10, 10), fill)
    img.paste((200, 0, 0) if mode == "RGB" else 90, (0, 0, 5, 10))
    p = save(img, tmp_path / "key.png", transparency=key)
    assert "transparency" in Image.open(p).info
    out = check_rgb(load_image(p), (10, 10))
    assert px(out, (8, 8)) == (255, 255, 255)
    assert px(out, (2, 2)) == ((200, 0, 0) if mode == "RGB" else (90, 90, 90))


# ------------------------------------------------------------------------------- high bit depth / float


def test_16bit_greyscale_png_is_rescaled_not_clipped(tmp_path):
    grad = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(4, axis=0)
    p = save(Image.fromarray(grad), tmp_path / "g16.png")
    assert Image.open(p).mode.startswith("I;16")
    out = check_rgb(load_image(p), (256, 4))
    row = np.asarray(out)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 2
    assert len(np.unique(row)) > 200  # a gradient, not a white clip
    assert np.all(np.diff(row) >= 0)


@pytest.mark.parametrize(
    ("top", "dtype"),
    [(255, np.int32), (65535, np.int32), (1_000_000, np.int32), (1.0, np.float32), (255.0, np.float32)],
    ids=["I-8bit-range", "I-16bit-range", "I-large", "F-unit", "F-255"],
)
def test_32bit_int_and_float_tiff_gradients(tmp_path, top, dtype):
    grad = np.linspace(0, top, 64).astype(dtype)[None, :].repeat(3, axis=0)
    p = save(Image.fromarray(grad), tmp_path / "hi.tif")
    assert Image.open(p).mode == ("F" if dtype == np.float32 else "I")
    out = check_rgb(load_image(p), (64, 3))
    row = np.asarray(out)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert 100 <= row[32] <= 155  # mid-grey in the middle: neither black nor clipped to white
    assert np.all(np.diff(row) >= 0)


def test_float_tiff_with_nan_does_not_crash(tmp_path):
    a = np.full((4, 4), 0.5, dtype=np.float32)
    a[0, 0] = np.nan
    p = save(Image.fromarray(a), tmp_path / "nan.tif")
    check_rgb(load_image(p), (4, 4))


# --------------------------------------------------------------------------------------- orientation


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = save(halves((40, 20)), tmp_path / "rot.jpg", exif=exif, quality=95)
    assert Image.open(p).size == (40, 20)
    out = check_rgb(load_image(p), (20, 40))  # wide on disk -> tall
    # rotating 90 degrees clockwise moves the stored left half (red) to the top
    assert near(px(out, (10, 5)), (255, 0, 0), 40)
    assert near(px(out, (10, 35)), (0, 0, 255), 40)


def test_exif_rotation_with_min_size_draft(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    arr = np.zeros((600, 1000, 3), np.uint8)
    arr[..., 1] = np.linspace(0, 255, 1000, dtype=np.uint8)[None, :]
    p = save(Image.fromarray(arr), tmp_path / "big_rot.jpg", exif=exif)
    out = check_rgb(load_image(p, min_size=100))
    w, h = out.size
    assert h > w  # still rotated
    assert 100 <= w < 600


# ----------------------------------------------------------------------------------- other formats


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 12), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(p), "n_frames", 1) == 3
    out = check_rgb(load_image(p), (12, 12))
    assert near(px(out, (6, 6)), (255, 0, 0), 10)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WEBP support")
def test_webp_lossy_and_lossless_with_alpha(tmp_path):
    p = save(halves(), tmp_path / "a.webp", quality=95)
    out = check_rgb(load_image(p), (40, 20))
    assert near(px(out, (5, 10)), (255, 0, 0), 40)
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.paste((0, 255, 0, 255), (0, 0, 5, 10))
    p2 = save(rgba, tmp_path / "alpha.webp", lossless=True)
    out2 = check_rgb(load_image(p2), (10, 10))
    assert px(out2, (2, 5)) == (0, 255, 0)
    assert px(out2, (8, 5)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PNG"])
def test_content_decides_not_extension(tmp_path, fmt):
    buf = io.BytesIO()
    halves().save(buf, fmt)
    p = tmp_path / "misnamed.jpg"
    p.write_bytes(buf.getvalue())
    assert px(check_rgb(load_image(p), (40, 20)), (35, 5)) == (0, 0, 255)


# --------------------------------------------------------------------------------------- min_size draft


def test_min_size_draft_decodes_smaller_but_large_enough(tmp_path):
    p = big_jpeg(tmp_path)
    out = check_rgb(load_image(p, min_size=256))
    assert 256 <= min(out.size) < 1500
    assert abs(out.size[0] / out.size[1] - 2000 / 1500) < 0.02


def test_no_min_size_keeps_full_size(tmp_path):
    p = big_jpeg(tmp_path)
    check_rgb(load_image(p), (2000, 1500))
    check_rgb(load_image(p, min_size=1500), (2000, 1500))  # no smaller scale is large enough
    check_rgb(load_image(p, min_size=5000), (2000, 1500))  # never upscaled, never fails


def test_min_size_ignored_for_png(tmp_path):
    p = save(Image.new("RGB", (800, 600), (9, 9, 9)), tmp_path / "big.png")
    check_rgb(load_image(p, min_size=64), (800, 600))


# ------------------------------------------------------------------------------------------- helpers


def test_is_image_path():
    assert is_image_path("a/B.JPG") and is_image_path(Path("x.webp")) and is_image_path("x.jfif")
    assert not is_image_path("notes.txt") and not is_image_path("jpg")


def test_file_digest_is_content_hash():
    assert file_digest(b"abc") == file_digest(b"abc")
    assert file_digest(b"abc") != file_digest(b"abd")
    assert len(file_digest(b"")) == 40
