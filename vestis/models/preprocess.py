"""Preprocessing that travels with a model, and the one function that turns it into transforms.

Training, evaluation, prediction, export, the index and the server all call :func:`resolve_transform`, so
an image is prepared the same way everywhere the model sees it. The evaluation transform is plain Pillow +
NumPy (no torch), so the ONNX Runtime predictor runs it too: it stops at a uint8 crop (H, W, 3); the
scaling to [0, 1] and the mean/std normalisation are part of the model's inference graph
(:func:`normalize` here, the same arithmetic inside the exported ONNX file), which keeps the decoded
batches that cross process boundaries four times smaller than float tensors.

``native_size`` (width, height), recorded by the trainers when the training images were small (a 60x80
catalogue, :func:`vestis.data.resolution.native_size_for`): the model learned the blur of small images
upscaled to its input size, so a larger input is first box-downscaled (area averaging, aspect ratio kept) to
fit that size, then resized and cropped as usual (measured: docs/BENCHMARKS.md, "Sharp photos")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image

FITS = ("crop", "pad")
_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    input_size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    # the training images' typical (width, height) when they were small; None: inputs are used at any size
    native_size: tuple[int, int] | None = None
    # "crop": shorter side resized, centre crop (a portrait 60x80 catalogue image loses a quarter of its height);
    # "pad": the whole image fitted into the input square (longer side = input_size) on its own border colour
    fit: str = "crop"

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, got {self.interpolation!r}")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1], got {self.crop_pct}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {self.mean}, {self.std}")
        if self.native_size is not None:
            size = tuple(int(x) for x in self.native_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"native_size must be (width, height), both >= 1, got {self.native_size}")
            object.__setattr__(self, "native_size", size)

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop (what the image loader may decode down to)."""
        return int(round(self.input_size / self.crop_pct))

    def to_dict(self) -> dict:
        """JSON-ready; ``native_size`` only when recorded, so models (and feature caches keyed by this dict)
        from before the field existed keep their exact bytes and keys."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if d["native_size"] is None:
            del d["native_size"]
        if d["fit"] == "crop":  # the same: older models keep their bytes and feature-cache keys
            del d["fit"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        try:
            for k in ("mean", "std"):
                if k in d:
                    d[k] = tuple(float(x) for x in d[k])
            if "input_size" in d:
                d["input_size"] = int(d["input_size"])
            if "crop_pct" in d:
                d["crop_pct"] = float(d["crop_pct"])
            if d.get("native_size") is not None:
                d["native_size"] = tuple(int(x) for x in d["native_size"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid preprocessing {d}: {e}") from e
        return cls(**d)


def native_scale(size: tuple[int, int], native: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size an image of ``size`` (w, h) is brought to for a model trained at ``native`` (w, h): the largest
    that fits the native size, shorter side against shorter side (so a landscape photo is not penalised for a
    portrait catalogue), aspect ratio kept. None when no downscale is due (no native size, or not larger)."""
    if native is None:
        return None
    (w, h), (n_short, n_long) = size, sorted(native)
    scale = min(n_short / min(w, h), n_long / max(w, h))
    if scale >= 1:
        return None
    return max(1, round(w * scale)), max(1, round(h * scale))


class ToNative:
    """PIL image -> the same, box-downscaled (area averaging) to the model's native size when it is larger
    (:func:`native_scale`); unchanged otherwise, and always when ``native_size`` is None."""

    def __init__(self, native_size: tuple[int, int] | None):
        self.native_size = native_size

    def __call__(self, img: Image.Image) -> Image.Image:
        size = native_scale(img.size, self.native_size)
        return img if size is None else img.resize(size, Image.Resampling.BOX)


def border_fill(img: Image.Image) -> tuple[int, int, int]:
    """The most common colour of the image's outermost pixels (mean of the largest 4-bit-per-channel bin)."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None].repeat(3, -1)
    ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).reshape(-1, a.shape[-1])[:, :3].astype(np.int64)
    bins = (ring // 16) @ np.array([256, 16, 1])
    common = ring[bins == np.bincount(bins).argmax()]
    return tuple(int(v) for v in common.mean(0).round())


def letterbox(img: Image.Image, side: int, interpolation) -> Image.Image:
    """The whole image resized into a ``side`` x ``side`` square (aspect ratio kept), centred on its own border
    colour (the most common colour of its outermost pixels: a catalogue's white studio background stays white)."""
    w, h = img.size
    scale = side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = Image.new("RGB", (side, side), border_fill(img))
    canvas.paste(
        img.resize(size, interpolation) if size != (w, h) else img,
        ((side - size[0]) // 2, (side - size[1]) // 2),
    )
    return canvas


class Letterbox:
    """PIL image -> :func:`letterbox` to ``side`` (the training transform's first step with ``fit='pad'``)."""

    def __init__(self, side: int, interpolation: str):
        self.side, self.interpolation = side, _INTERP[interpolation]

    def __call__(self, img: Image.Image) -> Image.Image:
        return letterbox(img, self.side, self.interpolation)


class EvalCrop:
    """PIL RGB image -> uint8 array (input_size, input_size, 3): brought to the native size first when the
    model records one (:class:`ToNative`), then the shorter side resized to ``resize_size`` and the centre crop.
    The same sizes and rounding as torchvision's ``Resize(int)`` + ``CenterCrop`` on PIL images (both use
    Pillow's resampling), so crops match the trainer's torchvision pipeline exactly."""

    def __init__(self, pre: Preprocess):
        self.pre = pre
        self.to_native = ToNative(pre.native_size)

    def __call__(self, img: Image.Image) -> np.ndarray:
        img = self.to_native(img)
        if self.pre.fit == "pad":  # the whole image, letterboxed to the input size: nothing cropped
            return np.asarray(letterbox(img, self.pre.input_size, _INTERP[self.pre.interpolation]), np.uint8)
        pre, (w, h) = self.pre, img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = pre.resize_size, int(pre.resize_size * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size != (w, h):
            img = img.resize(size, _INTERP[pre.interpolation])
        s = pre.input_size
        w, h = img.size
        if w < s or h < s:  # only when crop_pct > 1 would allow it; pad like torchvision (zeros)
            canvas = Image.new("RGB", (max(w, s), max(h, s)))
            canvas.paste(img, ((max(w, s) - w) // 2, (max(h, s) - h) // 2))
            img, (w, h) = canvas, canvas.size
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return np.asarray(img.crop((left, top, left + s, top + s)), dtype=np.uint8)


class _EachMember:
    """An ensemble's transform: the image prepared once per member, as a tuple."""

    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, img):
        return tuple(t(img) for t in self.transforms)


def load_size(pre: Preprocess | tuple[Preprocess, ...]) -> int:
    """The shorter side an image may be decoded down to before ``resolve_transform(pre)`` (the largest member's)."""
    return max(p.resize_size for p in pre) if isinstance(pre, tuple) else pre.resize_size


def normalize(x: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 crops (..., H, W, 3) -> float32 (..., 3, H, W) scaled to [0, 1] and normalised: what the
    inference graph does first (the PyTorch runner does the same in torch, the ONNX graph contains it)."""
    x = np.moveaxis(x, -1, -3).astype(np.float32) / np.float32(255)
    mean = np.asarray(pre.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(3, 1, 1)
    return (x - mean) / std


# the training augmentations resolve_transform builds ('auto' in a training config picks one of them)
TRAIN_AUGMENTS = ("none", "light", "trivial", "colour-safe", "randaug")


def resolve_transform(
    pre: Preprocess | tuple[Preprocess, ...],
    train: bool = False,
    augment: str = "light",
    crop_scale: float = 0.35,
    erase: float = 0.0,
    size: int | None = None,
    zoom_out: float = 0.0,
    low_res: float = 0.0,
):
    """The transform for ``pre``; for an ensemble's tuple of preprocessings, a tuple of results, one per member.

    Eval (``train=False``): :class:`EvalCrop`, a uint8 (S, S, 3) array, no torch needed; the model's
    inference graph normalises it (:func:`normalize`).
    Train (the fine-tuning trainer; needs torchvision): a normalised float tensor (3, S, S) from
    random-resized-crop (area ``crop_scale``..1) + flip, plus ``augment``: 'none' (crop only), 'light' (+ flip),
    'trivial' (TrivialAugmentWide), 'colour-safe' (:class:`~vestis.models.augment.ColourSafeTrivialAugment`: the
    same without the operations that change colours) or 'randaug' (RandAugment); ``erase``: probability of
    random erasing (after normalisation); ``zoom_out`` / ``low_res``: probabilities of :class:`~vestis.models.augment.ZoomOut` (a
    looser framing) and :class:`~vestis.models.augment.LowRes` (a low-resolution copy), before the crop;
    ``size``: the training crop (default ``input_size``; smaller is faster, and a model trained
    on random-resized crops a little below its test size sees objects at the apparent size it is tested at:
    Touvron et al., "Fixing the train-test resolution discrepancy", 2019)."""
    if isinstance(pre, tuple):
        return _EachMember(
            [resolve_transform(p, train, augment, crop_scale, erase, size, zoom_out, low_res) for p in pre]
        )
    if not train:
        return EvalCrop(pre)
    from torchvision import transforms as T

    interp = T.InterpolationMode(pre.interpolation)
    norm = [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    ops = [T.RandomResizedCrop(size or pre.input_size, scale=(crop_scale, 1.0), interpolation=interp)]
    from .augment import ColourSafeTrivialAugment, LowRes, ZoomOut

    if low_res > 0:
        ops.insert(0, LowRes(low_res))
    if zoom_out > 0:
        ops.insert(0, ZoomOut(zoom_out))
    if pre.fit == "pad":
        ops.insert(0, Letterbox(pre.input_size, pre.interpolation))
    if pre.native_size is not None:  # a larger training image at the scale the model is tested at
        ops.insert(0, ToNative(pre.native_size))
    if augment != "none":
        ops.append(T.RandomHorizontalFlip())
    if augment == "trivial":
        ops.append(T.TrivialAugmentWide(interpolation=interp))
    elif augment == "colour-safe":
        ops.append(ColourSafeTrivialAugment(interpolation=interp))
    elif augment == "randaug":
        ops.append(T.RandAugment(interpolation=interp))
    elif augment not in ("none", "light"):
        raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(TRAIN_AUGMENTS)}")
    if erase > 0:
        norm.append(T.RandomErasing(p=erase, value=0))
    return T.Compose([*ops, *norm])


def denormalize(x, pre: Preprocess):
    """A normalised tensor (3, H, W), or a batch of them, back to [0, 1] (galleries of training crops; a
    teacher that normalises differently), on the tensor's device."""
    import torch

    mean = torch.tensor(pre.mean, device=x.device).view(-1, 1, 1)
    std = torch.tensor(pre.std, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
