"""Grad-CAM (Selvaraju et al., 2017) on a trained model: which part of the image made a head choose a class.

Computed by the maintained ``grad-cam`` package (``pip install 'vestis[explain]'``) on the backbone's last
convolutional feature map: the last module, in forward order, whose output is still a spatial (B, C, H, W)
map (timm EfficientNet: ``bn2`` after ``conv_head``; vestis_cnn: ``head``; TinyNet: its last ReLU); for a
feature-level ensemble (``lite_ensemble``), that of each member, averaged; for a vision transformer, the
last block's ``norm1`` tokens reshaped to their patch grid. The heat map is at the crop's resolution, in
[0, 1] (scaled per image, as the package does)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from vestis.data.images import load_image, to_rgb
from vestis.models.preprocess import normalize, resolve_transform


def _require_gradcam():
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("explanations need the grad-cam package: pip install 'vestis[explain]'") from e


class _HeadLogits(nn.Module):
    """model(x) -> the logits of one head (what grad-cam's class targets read)."""

    def __init__(self, model, head: str):
        super().__init__()
        self.model, self.head_name = model, head

    def forward(self, x):
        return self.model(x)[self.head_name]


def _last_spatial(module: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """The last module (in completion order) whose output is a 4-D map larger than 1x1."""
    found: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, _i, out: (
                found.append(mod)
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1
                else None
            )
        )
        for m in module.modules()
        if m is not module
    ]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return found[-1] if found else None


def target_layers(backbone: nn.Module, input_size: int) -> tuple[list[nn.Module], object]:
    """(layers, reshape_transform) for Grad-CAM on ``backbone``."""
    if hasattr(backbone, "members"):  # a feature-level ensemble: one target per member
        return [target_layers(m, input_size)[0][0] for m in backbone.members], None
    blocks = getattr(backbone, "blocks", None)
    if getattr(backbone, "num_prefix_tokens", None) is not None and blocks is not None:  # timm ViT
        grid = tuple(backbone.patch_embed.grid_size)
        skip = int(backbone.num_prefix_tokens)

        def tokens_to_map(t):
            t = t[:, skip:, :]
            return t.reshape(t.shape[0], grid[0], grid[1], t.shape[-1]).permute(0, 3, 1, 2)

        return [blocks[-1].norm1], tokens_to_map
    x = torch.zeros(1, 3, input_size, input_size, device=next(backbone.parameters()).device)
    was = backbone.training
    backbone.eval()
    layer = _last_spatial(backbone, x)
    backbone.train(was)
    if layer is None:
        raise ValueError(f"{type(backbone).__name__}: no spatial feature map found for Grad-CAM")
    return [layer], None


@dataclass
class Explanation:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], at the crop's resolution
    overlay: np.ndarray  # (H, W, 3) uint8: the heat map (jet colour map) blended over the crop
    crop: np.ndarray  # (H, W, 3) uint8: what the model saw
    head: str
    cls: str  # the class explained
    score: float  # that class's probability
    predicted: str  # the head's top class


class Explainer:
    """Grad-CAM for one :class:`~vestis.models.heads.VestisModel`: ``explainer(crops, head, classes)``."""

    def __init__(self, model, device: str | torch.device | None = None):
        _require_gradcam()
        if hasattr(model, "members"):
            raise ValueError("Grad-CAM explains one model at a time, not an ensemble: explain each run")
        self.model = model
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.pre = model.preprocess
        self.layers, self.reshape = target_layers(model.backbone, self.pre.input_size)

    def resolve(self, head: str | None, cls) -> tuple[str, int | None]:
        heads = list(self.model.classes)
        if not heads:
            raise ValueError("the model has no heads to explain")
        head = head or heads[0]
        if head not in self.model.classes:
            raise ValueError(f"unknown head {head!r}; the model has {', '.join(heads)}")
        if cls is None:
            return head, None
        names = self.model.classes[head]
        if isinstance(cls, str) and cls in names:
            return head, names.index(cls)
        if isinstance(cls, (int, np.integer)) or (isinstance(cls, str) and cls.isdigit()):
            i = int(cls)
            if 0 <= i < len(names):
                return head, i
        raise ValueError(f"unknown class {cls!r} for head {head!r}; classes: {', '.join(names[:30])}")

    def __call__(self, crops: np.ndarray, head: str | None = None, cls=None) -> list[Explanation]:
        """``crops``: uint8 (N, H, W, 3) (the model's eval crops). ``cls``: a class name or index for all, a
        list of them (one per crop), or None (each crop's top class)."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        crops = np.asarray(crops, np.uint8)
        per = list(cls) if isinstance(cls, (list, tuple)) else [cls] * len(crops)
        resolved = [self.resolve(head, c) for c in per]
        head = resolved[0][0]
        x = torch.from_numpy(normalize(crops, self.pre)).to(self.device)
        wrapped = _HeadLogits(self.model, head).to(self.device)
        was = self.model.training
        with torch.no_grad():
            probs = self.model.eval()(x)[head].float().softmax(-1).cpu().numpy()
        idx = [c if c is not None else int(p.argmax()) for (_, c), p in zip(resolved, probs, strict=True)]
        try:  # gradients reach the feature map even when the model's parameters are frozen
            with torch.enable_grad(), GradCAM(wrapped, self.layers, reshape_transform=self.reshape) as cam:
                heat = cam(x.requires_grad_(True), targets=[ClassifierOutputTarget(i) for i in idx])
        finally:
            self.model.train(was)
        names = self.model.classes[head]
        out = []
        for k in range(len(crops)):
            h = np.nan_to_num(heat[k].astype(np.float32))
            overlay = show_cam_on_image(
                crops[k].astype(np.float32) / 255.0, h, use_rgb=True, image_weight=0.55
            )
            top = names[int(probs[k].argmax())]
            score = float(probs[k, idx[k]])
            out.append(Explanation(h, overlay, crops[k], head, names[idx[k]], score, top))
        return out

    def images(self, images: list, head: str | None = None, cls=None) -> list[Explanation]:
        """Like ``__call__`` on images: paths, encoded bytes, PIL images or uint8 (H, W, 3) arrays, each
        prepared as the model sees it (its eval crop)."""
        crop = resolve_transform(self.pre)
        return self(np.stack([crop(_as_pil(im)) for im in images]), head, cls)


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        arr = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
        return Image.fromarray(np.asarray(arr, np.uint8)[..., :3])
    return load_image(image)


def heat_fraction(heatmap: np.ndarray, box: tuple[slice, slice]) -> float:
    """The share of a heat map's total inside ``box`` (rows, cols)."""
    total = float(heatmap.sum())
    return float(heatmap[box].sum()) / total if total > 0 else 0.0


def side_by_side(e: Explanation, min_height: int = 224) -> Image.Image:
    """The crop and its overlay next to each other, enlarged to at least ``min_height`` pixels high."""
    both = Image.fromarray(np.concatenate([e.crop, e.overlay], axis=1))
    scale = max(1, -(-min_height // both.height))
    return (
        both.resize((both.width * scale, both.height * scale), Image.Resampling.BICUBIC)
        if scale > 1
        else both
    )
