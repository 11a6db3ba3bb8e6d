"""Training-time augmentations for how a photo is taken, beside torchvision's (which change what it shows).

Both act on the PIL image before the random-resized crop, with torch's generator (seeded per data-loader worker
by the trainer, like torchvision's own transforms):

* :class:`ZoomOut` - the photo shrunk and pasted at a random place on a canvas of its own border colour: the
  garment smaller in the frame, as in a looser shot (random-resized crops only ever zoom in);
* :class:`LowRes` - downscaled (box filter) to a random short side and scaled back: a small or soft photo.

And :class:`ColourSafeTrivialAugment`, torchvision's TrivialAugmentWide without the operations that change
which colour a product is (for colour heads: a solarized white shirt is not a white shirt).

Measured (docs/BENCHMARKS.md, robustness): framing, scale and resolution are what the bundled model was most
sensitive to; colour, lighting and background cost little.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import TrivialAugmentWide

from .preprocess import border_fill


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


class ZoomOut:
    """With probability ``p``: each side scaled by U(``scale``) and the result pasted at a random position on a
    canvas of the original size filled with the image's border colour."""

    def __init__(self, p: float, scale: tuple[float, float] = (0.5, 0.9)):
        self.p, self.scale = p, scale

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return img
        img = img.convert("RGB")
        w, h = img.size
        s = _uniform(*self.scale)
        small = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (w, h), border_fill(img))
        x = int(torch.randint(0, w - small.width + 1, ()))
        y = int(torch.randint(0, h - small.height + 1, ()))
        canvas.paste(small, (x, y))
        return canvas

    def __repr__(self) -> str:
        return f"ZoomOut(p={self.p}, scale={self.scale})"


class LowRes:
    """With probability ``p``: the short side box-downscaled to U(``short``) pixels (never upscaled) and the image
    resized back to its size (bicubic)."""

    def __init__(self, p: float, short: tuple[int, int] = (48, 160)):
        self.p, self.short = p, short

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return img
        w, h = img.size
        f = min(1.0, _uniform(*self.short) / min(w, h))
        if f >= 1.0:
            return img
        small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
        return small.resize((w, h), Image.Resampling.BICUBIC)

    def __repr__(self) -> str:
        return f"LowRes(p={self.p}, short={self.short})"


# TrivialAugmentWide's operations that change colours: saturation ("Color"), posterize, solarize (inverts bright
# pixels), autocontrast and equalize (per-channel remapping that shifts hue)
COLOUR_CHANGING_OPS = ("Color", "Posterize", "Solarize", "AutoContrast", "Equalize")
COLOUR_HEAD_WORDS = ("colour", "color")


def is_colour_head(name: str) -> bool:
    """A head whose labels are colours, by its name (``baseColour``, ``color``, ``Colour_family``...)."""
    return any(w in name.lower() for w in COLOUR_HEAD_WORDS)


class ColourSafeTrivialAugment(TrivialAugmentWide):
    """TrivialAugmentWide (one random operation at a random strength per image) over the operations that keep
    a product's colour: identity, shear, translate, rotate, sharpness, and brightness and contrast within
    +-``light`` (lighting changes, not a navy shirt turned blue)."""

    def __init__(self, light: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.light = light

    def _augmentation_space(self, num_bins: int) -> dict:
        space = super()._augmentation_space(num_bins)
        for op in ("Brightness", "Contrast"):
            space[op] = (torch.linspace(0.0, self.light, num_bins), True)
        return {k: v for k, v in space.items() if k not in COLOUR_CHANGING_OPS}

    def __repr__(self) -> str:
        return f"ColourSafeTrivialAugment(light={self.light})"
