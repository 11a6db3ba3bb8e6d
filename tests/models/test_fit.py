"""Preprocess.fit: 'crop' (the default, unchanged) or 'pad' (the whole image letterboxed on its border colour)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vestis.models.preprocess import EvalCrop, Preprocess, resolve_transform


def _portrait() -> Image.Image:
    """60x80 white image with a red band at the very top and a blue one at the very bottom."""
    a = np.full((80, 60, 3), 255, np.uint8)
    a[:6] = (220, 20, 20)
    a[-6:] = (20, 20, 220)
    return Image.fromarray(a)


def test_pad_keeps_the_whole_image_and_crop_loses_its_ends():
    img = _portrait()
    crop = EvalCrop(Preprocess())(img)
    pad = EvalCrop(Preprocess(fit="pad"))(img)
    assert crop.shape == pad.shape == (224, 224, 3)
    assert pad[3, 112].tolist()[0] > 180 and pad[3, 112].tolist()[2] < 80  # red band kept at the top
    assert pad[-4, 112].tolist()[2] > 180 and pad[-4, 112].tolist()[0] < 80  # blue band kept at the bottom
    assert (pad[:, :20] > 240).all()  # side padding in the border colour (white)
    # the centre crop of a portrait image cuts the top and bottom bands away
    assert not ((crop[..., 0] > 180) & (crop[..., 2] < 80)).any()
    assert not ((crop[..., 2] > 180) & (crop[..., 0] < 80)).any()


def test_fit_round_trips_and_is_checked():
    assert "fit" not in Preprocess().to_dict()  # default: older models and cache keys unchanged
    d = Preprocess(fit="pad").to_dict()
    assert d["fit"] == "pad" and Preprocess.from_dict(d).fit == "pad"
    with pytest.raises(ValueError, match="fit"):
        Preprocess(fit="stretch")


def test_pad_training_transform_letterboxes_first():
    pytest.importorskip("torchvision")
    t = resolve_transform(Preprocess(fit="pad"), train=True, augment="none", crop_scale=1.0)
    x = t(_portrait())
    assert tuple(x.shape) == (3, 224, 224)
