"""Preprocessing that travels with a model, and the one function that turns it into transforms.

Training, prediction, the index and the server all call :func:`resolve_transform`, so an image is
prepared the same way everywhere the model sees it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torchvision import transforms as T

_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    input_size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875

    def __post_init__(self):
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {self.interpolation!r}")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1], got {self.crop_pct}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop (what the image loader may decode down to)."""
        return int(round(self.input_size / self.crop_pct))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(x) for x in d[k])
        return cls(**d)


class _EachMember:
    """An ensemble's transform: the image prepared once per member, as a tuple."""

    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, img):
        return tuple(t(img) for t in self.transforms)


def load_size(pre: Preprocess | tuple[Preprocess, ...]) -> int:
    """The shorter side an image may be decoded down to before ``resolve_transform(pre)`` (the largest member's)."""
    return max(p.resize_size for p in pre) if isinstance(pre, tuple) else pre.resize_size


def resolve_transform(pre: Preprocess | tuple[Preprocess, ...], train: bool = False, augment: str = "light",
                      crop_scale: float = 0.35, erase: float = 0.0, size: int | None = None):  # fmt: skip
    """PIL RGB image -> normalised float tensor (3, S, S); for an ensemble's tuple of preprocessings, a tuple of
    such tensors, one per member.

    Eval: resize the shorter side to ``resize_size``, centre-crop ``input_size``.
    Train (used by the fine-tuning trainer): random-resized-crop (area ``crop_scale``..1) + flip, plus ``augment``:
    'none' (crop only), 'light' (+ flip), 'trivial' (TrivialAugmentWide) or 'randaug' (RandAugment);
    ``erase``: probability of random erasing (after normalisation); ``size``: the training crop (default
    ``input_size``; smaller is faster, and a model trained on random-resized crops a little below its test size
    sees objects at the apparent size it is tested at: Touvron et al., "Fixing the train-test resolution
    discrepancy", 2019)."""
    if isinstance(pre, tuple):
        return _EachMember([resolve_transform(p, train, augment, crop_scale, erase, size) for p in pre])
    interp = _INTERP[pre.interpolation]
    norm = [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    if not train:
        return T.Compose(
            [T.Resize(pre.resize_size, interpolation=interp), T.CenterCrop(pre.input_size), *norm]
        )
    ops = [T.RandomResizedCrop(size or pre.input_size, scale=(crop_scale, 1.0), interpolation=interp)]
    if augment != "none":
        ops.append(T.RandomHorizontalFlip())
    if augment == "trivial":
        ops.append(T.TrivialAugmentWide(interpolation=interp))
    elif augment == "randaug":
        ops.append(T.RandAugment(interpolation=interp))
    elif augment not in ("none", "light"):
        raise ValueError(f"unknown augment {augment!r}; choose none, light, trivial or randaug")
    if erase > 0:
        norm.append(T.RandomErasing(p=erase, value=0))
    return T.Compose([*ops, *norm])


def denormalize(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    mean = torch.tensor(pre.mean).view(-1, 1, 1)
    std = torch.tensor(pre.std).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
