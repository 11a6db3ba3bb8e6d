"""Seeded shifted copies of product photos (issue 13, part 4), for benchmarks/bench_robustness.py.

The shifted copies are made in memory, image by image, from the split's photos (never written anywhere): each
shift is a function ``(PIL image, numpy Generator) -> PIL image`` (:data:`SHIFTS`), and the generator of an
image is seeded by ``(--seed, the shift's name, the image's path relative to the split)``, so a copy is the
same in every run and for every model, whatever the order or ``--limit``. The shifts:

* ``zoom_in`` (a tighter crop: 60-75 % of each side, random position, resized back),
* ``zoom_out`` (a looser one: the photo shrunk to 55-70 % and pasted on a canvas of its own border colour),
* ``lowres`` (downscaled to a 64-96 px short side, then upscaled back: a small or distant garment),
* ``bg_plain`` / ``bg_texture`` (the background, found as the pixels close to the border colour that touch
  the border, replaced by another plain colour / by stripes, checks or blotches of two colours),
* ``bright`` (darker ×0.45-0.6 or brighter ×1.45-1.7), ``contrast`` (×0.4-0.55), ``temp`` (colour
  temperature: red and blue scaled by 1±0.15-0.25 in opposite directions, warm or cool),
* ``blur`` (Gaussian, radius 1.5-2.5 px per 400 px of short side), ``jpeg`` (quality 8-15),
* ``rotate`` (10-20° either way, corners filled with the border colour),
* ``combo`` (two of the above, drawn per image, one after the other)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

RESAMPLE = Image.Resampling.BICUBIC


def border_colour(img: Image.Image, frac: float = 0.03) -> tuple[int, int, int]:
    """Median colour of the outer ring of the image (``frac`` of the short side wide, at least 1 px)."""
    a = np.asarray(img.convert("RGB"))
    b = max(1, round(min(a.shape[:2]) * frac))
    ring = np.concatenate(
        [a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3), a[:, :b].reshape(-1, 3), a[:, -b:].reshape(-1, 3)]
    )
    return tuple(int(v) for v in np.median(ring, axis=0))


def background_mask(img: Image.Image, tol: float = 40.0) -> np.ndarray:
    """(H, W) bool: pixels within ``tol`` (RGB distance) of the border colour, in regions touching the border."""
    from scipy import ndimage

    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    close = np.linalg.norm(a - np.array(border_colour(img), np.float32), axis=-1) < tol
    lab, _ = ndimage.label(close)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return np.isin(lab, edge[edge > 0])


def _colour_far_from(rng: np.random.Generator, c, dist: float = 120.0) -> np.ndarray:
    for _ in range(20):
        new = rng.integers(0, 256, 3)
        if np.linalg.norm(new - np.array(c)) >= dist:
            return new.astype(np.float32)
    return (255 - np.array(c)).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, c) -> np.ndarray:
    """(H, W, 3) float32: stripes, checks or blotches of two colours, both far from the old background ``c``."""
    from scipy import ndimage

    c1, c2 = _colour_far_from(rng, c), _colour_far_from(rng, c)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(3))
    period = float(rng.uniform(8, 24)) * min(h, w) / 400
    if kind == 0:  # stripes at a random angle
        t = float(rng.uniform(0, np.pi))
        m = (np.floor((xx * np.cos(t) + yy * np.sin(t)) / period) % 2).astype(np.float32)
    elif kind == 1:  # checks
        m = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    else:  # blotches: smoothed noise, thresholded softly
        z = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), period)
        m = 1 / (1 + np.exp(-z / (z.std() + 1e-6) * 4))
    tex = m[..., None] * c1 + (1 - m[..., None]) * c2
    return tex + rng.normal(0, 6, tex.shape).astype(np.float32)


def _replace_background(img: Image.Image, rng: np.random.Generator, textured: bool) -> Image.Image:
    from scipy import ndimage

    img = img.convert("RGB")
    a = np.asarray(img, dtype=np.float32)
    mask = background_mask(img)
    c = border_colour(img)
    h, w = mask.shape
    bg = _texture(rng, h, w, c) if textured else np.broadcast_to(_colour_far_from(rng, c), a.shape)
    m = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)[..., None]  # a soft 1-px seam
    return Image.fromarray(np.clip(a * (1 - m) + bg * m, 0, 255).astype(np.uint8))


def zoom_in(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    f = rng.uniform(0.6, 0.75)
    cw, ch = round(w * f), round(h * f)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch)).resize((w, h), RESAMPLE)


def zoom_out(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    s = rng.uniform(0.55, 0.7)
    small = img.resize((max(1, round(w * s)), max(1, round(h * s))), RESAMPLE)
    canvas = Image.new("RGB", (w, h), border_colour(img))
    x, y = int(rng.integers(0, w - small.width + 1)), int(rng.integers(0, h - small.height + 1))
    canvas.paste(small, (x, y))
    return canvas


def lowres(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    f = min(1.0, rng.uniform(64, 96) / min(w, h))
    small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    return small.resize((w, h), RESAMPLE)


def bg_plain(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _replace_background(img, rng, textured=False)


def bg_texture(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _replace_background(img, rng, textured=True)


def bright(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    f = rng.uniform(0.45, 0.6) if rng.random() < 0.5 else rng.uniform(1.45, 1.7)
    return ImageEnhance.Brightness(img).enhance(f)


def contrast(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(rng.uniform(0.4, 0.55))


def temp(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    t = rng.uniform(0.15, 0.25) * (1 if rng.random() < 0.5 else -1)  # + warm, - cool
    a = np.asarray(img.convert("RGB"), dtype=np.float32) * np.array([1 + t, 1, 1 - t], np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 2.5) * min(img.size) / 400))


def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(8, 16)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(10, 20) * (1 if rng.random() < 0.5 else -1)
    return img.convert("RGB").rotate(angle, resample=RESAMPLE, fillcolor=border_colour(img))


def combo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    names = [n for n in SHIFTS if n != "combo"]
    for k in rng.choice(len(names), size=2, replace=False):
        img = SHIFTS[names[int(k)]](img, rng)
    return img


SHIFTS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    f.__name__: f
    for f in (
        zoom_in,
        zoom_out,
        lowres,
        bg_plain,
        bg_texture,
        bright,
        contrast,
        temp,
        blur,
        jpeg,
        rotate,
        combo,
    )
}


def shift_rng(seed: int, shift: str, key: str) -> np.random.Generator:
    """The generator of one shifted copy: the same for (seed, shift, image key) in every run."""
    return np.random.default_rng([seed, zlib.crc32(shift.encode()), zlib.crc32(key.encode())])


def shifted(img: Image.Image, shift: str, seed: int, key: str) -> Image.Image:
    """``img`` under ``shift`` ('clean': unchanged), drawn for (``seed``, ``key``); always RGB, same size."""
    img = img.convert("RGB")
    return img if shift == "clean" else SHIFTS[shift](img, shift_rng(seed, shift, key))
