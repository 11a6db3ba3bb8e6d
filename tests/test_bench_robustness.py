"""benchmarks/shifts.py and bench_robustness.py: the shifts are deterministic for a seed and do what they say
(tiny images); the rows are scored as the engine scores."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import load_benchmark

load_benchmark("common")
shifts = load_benchmark("shifts")
bench = load_benchmark("bench_robustness")

GREY, RED = (128, 128, 128), (200, 30, 30)


def product(size=60, noise=0.0) -> Image.Image:
    """A red square product (the middle half of each side) on a plain grey background."""
    a = np.full((size, size, 3), GREY, np.float32)
    q = size // 4
    a[q : size - q, q : size - q] = RED
    if noise:
        a += np.random.default_rng(0).normal(0, noise, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def red_fraction(img: Image.Image) -> float:
    a = arr(img)
    return float(((a[..., 0] > 150) & (a[..., 1] < 90)).mean())


def sharpness(img: Image.Image) -> float:
    g = arr(img).mean(-1)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


@pytest.mark.parametrize("name", list(shifts.SHIFTS))
def test_shift_is_deterministic_for_a_seed_and_keeps_the_size(name):
    img = product(size=120, noise=10)
    a = shifts.shifted(img, name, seed=3, key="cls/a.jpg")
    b = shifts.shifted(img, name, seed=3, key="cls/a.jpg")
    assert a.size == img.size and a.mode == "RGB"
    assert np.array_equal(arr(a), arr(b))
    assert not np.array_equal(arr(a), arr(img)), "the shift changed nothing"
    others = [arr(shifts.shifted(img, name, seed=s, key="cls/a.jpg")) for s in range(4, 8)]
    others += [arr(shifts.shifted(img, name, seed=3, key="cls/b.jpg"))]
    assert any(not np.array_equal(arr(a), o) for o in others), "seed and key must matter"


def test_clean_is_the_image():
    img = product()
    assert np.array_equal(arr(shifts.shifted(img, "clean", 0, "x")), arr(img))


def test_background_mask_finds_the_plain_background():
    img = product()
    mask = shifts.background_mask(img)
    assert shifts.border_colour(img) == GREY
    assert mask[:15].all() and mask[:, :15].all() and mask[45:].all()
    assert not mask[15:45, 15:45].any()


def test_zoom_in_and_out_change_the_product_size():
    img = product()
    assert red_fraction(img) == pytest.approx(0.25)
    for seed in range(5):
        assert red_fraction(shifts.shifted(img, "zoom_in", seed, "k")) > 0.3
        out = shifts.shifted(img, "zoom_out", seed, "k")
        assert 0.25 * 0.55**2 * 0.8 < red_fraction(out) < 0.25 * 0.7**2 * 1.2
        assert (np.abs(arr(out) - GREY).max(-1) <= 1).mean() > 0.75  # the canvas is the border colour


def test_background_shifts_keep_the_product_and_replace_the_background():
    img = product()
    for name in ("bg_plain", "bg_texture"):
        out = arr(shifts.shifted(img, name, 0, "k"))
        assert np.array_equal(out[22:38, 22:38], arr(img)[22:38, 22:38])  # the product's inside is untouched
        far = np.linalg.norm(out[:10].reshape(-1, 3) - GREY, axis=1) > 40  # the new background
        assert far.mean() > 0.85
    assert arr(shifts.shifted(img, "bg_plain", 0, "k"))[:10].std(axis=(0, 1)).max() < 1  # one colour
    assert arr(shifts.shifted(img, "bg_texture", 0, "k"))[:10].std(axis=(0, 1)).max() > 10  # a pattern


def test_lighting_shifts():
    img = product(noise=5)
    a = arr(img)
    for seed in range(4):
        m = arr(shifts.shifted(img, "bright", seed, "k")).mean() / a.mean()
        assert m < 0.65 or m > 1.35
    assert arr(shifts.shifted(img, "contrast", 0, "k")).std() < 0.6 * a.std()
    rb = [arr(shifts.shifted(img, "temp", s, "k")) for s in range(6)]
    ratios = [t[..., 0].mean() / t[..., 2].mean() for t in rb]
    base = a[..., 0].mean() / a[..., 2].mean()
    assert all(abs(r / base - 1) > 0.2 for r in ratios)
    assert any(r > base for r in ratios) and any(r < base for r in ratios)  # warm and cool both drawn
    assert np.allclose([t[..., 1].mean() for t in rb], a[..., 1].mean(), atol=1)  # green kept


def test_blur_lowres_and_jpeg_lose_detail():
    big = product(size=240, noise=40)
    assert sharpness(shifts.shifted(big, "blur", 0, "k")) < 0.5 * sharpness(big)
    assert sharpness(shifts.shifted(big, "lowres", 0, "k")) < 0.5 * sharpness(big)
    assert sharpness(shifts.shifted(big, "jpeg", 0, "k")) < sharpness(big)


def test_rotate_turns_the_product_and_fills_with_the_border_colour():
    img = product()
    out = arr(shifts.shifted(img, "rotate", 0, "k"))
    assert np.abs(out[0, 0] - GREY).max() <= 1
    assert 0.2 < red_fraction(Image.fromarray(out.astype(np.uint8))) < 0.3  # the same product, turned
    assert np.abs(out[16, 16] - RED).max() > 40 or np.abs(out[16, 43] - RED).max() > 40  # a corner moved


def test_rows_average_views_and_ensemble_members():
    p = {
        "a": np.array([[[0.8, 0.2], [0.4, 0.6]]], np.float32),
        "b": np.array([[[0.2, 0.8], [0.2, 0.8]]], np.float32),
    }
    rows = bench.rows_from({"a": 1, "b": 1}, {"ab": ["a", "b"]}, p)
    assert np.allclose(rows["a"], [[0.8, 0.2]]) and np.allclose(rows["a +flip"], [[0.6, 0.4]])
    assert np.allclose(rows["ab"], [[0.5, 0.5]]) and np.allclose(rows["ab +flip"], [[0.4, 0.6]])
    y = np.array([1])
    assert bench.top1(rows["ab +flip"], y) == 1.0 and bench.top1(rows["a"], y) == 0.0
