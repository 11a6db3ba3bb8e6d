"""ZoomOut and LowRes: what they do to a photo, their probabilities, and where the resolver puts them."""

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import TrivialAugmentWide

from vestis.models.augment import ColourSafeTrivialAugment, LowRes, ZoomOut, is_colour_head
from vestis.models.preprocess import Preprocess, border_fill, resolve_transform
from vestis.train.config import TrainConfig
from vestis.train.recipe import resolve_augment

RED, GREEN = (200, 20, 20), (20, 180, 40)


def framed(w: int = 80, h: int = 60) -> Image.Image:
    """A green garment filling the photo but for a 2-px red border."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = RED
    a[2:-2, 2:-2] = GREEN
    return Image.fromarray(a)


def green_share(img: Image.Image) -> float:
    a = np.asarray(img).astype(int)
    return float((np.abs(a - np.array(GREEN)).sum(-1) < 60).mean())


def test_border_fill_is_the_common_outer_colour():
    assert border_fill(framed()) == RED
    assert border_fill(Image.new("L", (10, 10), 77)) == (77, 77, 77)  # grey images too


def test_zoom_out_shrinks_the_garment_onto_its_border_colour():
    torch.manual_seed(0)
    img = framed()
    before = green_share(img)
    for _ in range(20):
        out = ZoomOut(1.0, scale=(0.5, 0.9))(img)
        assert out.size == img.size and out.mode == "RGB"
        share = green_share(out) / before
        assert 0.2 < share < 0.85  # side scaled by 0.5-0.9: area 0.25-0.81 (rounding aside)
        a = np.asarray(out)
        corners = a[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners == RED).all(axis=1).sum() >= 3  # the canvas is the border colour, not black
    assert ZoomOut(0.0)(img) is img


def test_low_res_removes_detail_and_keeps_the_size():
    torch.manual_seed(0)
    checks = (np.indices((200, 240)).sum(0) % 2 * 255).astype(np.uint8)  # 1-px checkerboard: all detail
    img = Image.fromarray(np.stack([checks] * 3, -1))
    out = LowRes(1.0, short=(48, 64))(img)
    assert out.size == img.size
    detail = lambda a: np.abs(np.diff(np.asarray(a, float)[..., 0], axis=1)).mean()  # noqa: E731
    assert detail(out) < 0.2 * detail(img)
    small = Image.new("RGB", (40, 30), RED)
    assert LowRes(1.0, short=(48, 64))(small) is small  # never upscaled


def test_probabilities_and_seeding():
    img = framed()
    torch.manual_seed(1)
    changed = sum(ZoomOut(0.3)(img) is not img for _ in range(400))
    assert 80 < changed < 160  # about 30 % of the calls
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append([np.asarray(ZoomOut(1.0)(img)) for _ in range(3)])
    # torch's generator: reproducible per worker seed
    assert all((a == b).all() for a, b in zip(*runs, strict=True))


def test_resolver_places_them_before_the_crop_and_config_checks_them():
    pre = Preprocess(input_size=32, crop_pct=1.0)
    tf = resolve_transform(pre, train=True, zoom_out=0.5, low_res=0.5)
    names = [type(t).__name__ for t in tf.transforms]
    assert names[:3] == ["ZoomOut", "LowRes", "RandomResizedCrop"]
    assert tf(framed()).shape == (3, 32, 32)
    assert "ZoomOut" not in [type(t).__name__ for t in resolve_transform(pre, train=True).transforms]
    for bad in (dict(zoom_out=1.5), dict(low_res=-0.1)):
        with pytest.raises(ValueError, match="zoom_out and low_res"):
            TrainConfig(data="x", mode="finetune", **bad)
    assert TrainConfig(data="x", mode="finetune", zoom_out=0.3, low_res=0.2).low_res == 0.2


def centre_colours(aug, n: int = 300) -> list[tuple[float, float]]:
    """Hue and saturation of the centre of a navy-blue photo after ``n`` draws of ``aug`` (a geometric operation may move
    its black fill there: those draws are left out)."""
    img = Image.new("RGB", (96, 96), (20, 30, 110))
    torch.manual_seed(0)
    hues = []
    for _ in range(n):
        r, g, b = (np.asarray(aug(img))[44:52, 44:52].reshape(-1, 3).mean(0) / 255).tolist()
        h, sat, v = colorsys.rgb_to_hsv(r, g, b)
        if v > 0.05:
            hues.append((h, sat))
    return hues


def test_colour_safe_trivial_augment_keeps_the_colour():
    safe = ColourSafeTrivialAugment()
    ops = safe._augmentation_space(31)
    assert not {"Color", "Solarize", "Posterize", "Equalize", "AutoContrast"} & set(ops)
    assert {"Rotate", "ShearX", "TranslateY", "Brightness", "Contrast"} <= set(ops)
    assert float(ops["Brightness"][0].max()) == pytest.approx(0.3)
    hue, sat, _ = colorsys.rgb_to_hsv(20 / 255, 30 / 255, 110 / 255)
    off = lambda seen: sum(abs(h - hue) > 0.03 or s < 0.6 * sat for h, s in seen)  # noqa: E731
    kept = centre_colours(safe)
    assert len(kept) > 250 and off(kept) == 0  # brightness/contrast within 30 %: saturation >= 0.7x
    assert off(centre_colours(TrivialAugmentWide())) > 5  # the full one does change it: the check can fail


def test_auto_augment_is_colour_safe_for_colour_heads():
    assert is_colour_head("baseColour") and is_colour_head("color") and not is_colour_head("articleType")
    cfg = TrainConfig(data="d", mode="finetune")
    assert cfg.augment == "auto"
    got, note = resolve_augment(cfg, ["articleType", "baseColour"])
    assert got.augment == "colour-safe" and "baseColour" in note and cfg.augment == "auto"
    assert resolve_augment(cfg, ["articleType"]) == (
        TrainConfig(data="d", mode="finetune", augment="trivial"),
        None,
    )
    explicit = TrainConfig(data="d", mode="finetune", augment="trivial")
    assert resolve_augment(explicit, ["baseColour"]) == (explicit, None)  # asked for: kept
    tf = resolve_transform(Preprocess(input_size=32, crop_pct=1.0), train=True, augment="colour-safe")
    assert "ColourSafeTrivialAugment" in [type(t).__name__ for t in tf.transforms]


def test_every_training_augment_builds_and_an_unknown_one_lists_them():
    from vestis.models.preprocess import TRAIN_AUGMENTS
    from vestis.train.config import AUGMENTS

    pre = Preprocess(input_size=32, crop_pct=1.0)
    for name in TRAIN_AUGMENTS:
        assert resolve_transform(pre, train=True, augment=name)(framed()).shape == (3, 32, 32)
    assert set(AUGMENTS) == {"auto", *TRAIN_AUGMENTS}  # what a config accepts: these, or 'auto'
    with pytest.raises(ValueError, match="choose one of none, light, trivial, colour-safe, randaug"):
        resolve_transform(pre, train=True, augment="strong")
