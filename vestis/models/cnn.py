"""vestis_cnn: a small residual CNN family trained from scratch (``--no-pretrained --mode finetune``).

Designed for small product images (the catalogue's 60x80 thumbnails, 28x28 grey images) as well as
224 px photos: a stride-2 stem, four stride-2 stages of residual basic blocks (3x3 conv, BatchNorm, ReLU; a strided
3x3 conv and a 1x1 projection shortcut where the resolution or width changes), a 1x1 conv widening the last
stage, then global average pooling, so any input of at least 16x16 works. Total stride 32 (the last stage
is 3x3 at the default 96 px input, 1x1 for a 28 px one).

Channels: the data loaders always give RGB (grey images are converted), so a model sees 3 channels. A model
built with ``in_chans=1`` turns its input to grey first (ITU-R 601 luma weights, a fixed layer), so it takes
the same batches; a 3-channel model given 1-channel tensors repeats them. Either way no caller has to care.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vestis.models.preprocess import Preprocess


@dataclass(frozen=True)
class CnnConfig:
    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    features: int  # pooled feature width (the 1x1 conv after the last stage)
    input_size: int  # default preprocessing size


VARIANTS = {
    # ~70M MACs at 96 px (under a quarter of EfficientNet-Lite0's ~385M at 224)
    "s": CnnConfig(
        widths=(32, 64, 128, 256), depths=(1, 2, 2, 1), strides=(2, 2, 2, 2), features=512, input_size=96
    ),
    "m": CnnConfig(
        widths=(48, 96, 192, 384), depths=(2, 2, 2, 2), strides=(2, 2, 2, 2), features=768, input_size=128
    ),
}


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (He et al., 2016); the last BN starts at zero, so
    each block starts as the identity (Goyal et al., 2017), which makes training from scratch stable."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, 1, act=False)
        nn.init.zeros_(self.conv2[1].weight)
        self.shortcut = (
            _conv_bn(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class VestisCNN(nn.Module):
    """Feature extractor: ``forward(x (B, C, H, W)) -> (B, num_features)``. Layer groups for ``--freeze``:
    the stem, then one per stage (the final 1x1 conv belongs to the last stage)."""

    def __init__(self, cfg: CnnConfig, in_chans: int = 3):
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        self.cfg, self.in_chans = cfg, in_chans
        self.num_features = cfg.features
        w = cfg.widths
        self.stem = nn.Sequential(_conv_bn(in_chans, w[0] // 2, 3, 2), _conv_bn(w[0] // 2, w[0], 3, 1))
        stages, cin = [], w[0]
        for i, (width, depth) in enumerate(zip(w, cfg.depths, strict=True)):
            blocks = [BasicBlock(cin, width, stride=cfg.strides[i])]
            blocks += [BasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.head = _conv_bn(cin, cfg.features, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_chans:
            return x
        if self.in_chans == 1 and c == 3:
            return (x * self.luma.to(x.dtype)).sum(1, keepdim=True)
        if self.in_chans == 3 and c == 1:
            return x.expand(-1, 3, -1, -1)
        raise ValueError(f"vestis_cnn takes 1 or 3 channels, got {c}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, num_features, H/32, W/32), before pooling."""
        return self.head(self.stages(self.stem(self._channels(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.forward_features(x)))

    def group_matcher(self, coarse: bool = False) -> dict:  # timm's layer groups: stem, then one per stage
        if coarse:
            return {"stem": r"^stem", "blocks": [(r"^stages\.(\d+)", None), (r"^head", (99999,))]}
        return {"stem": r"^stem", "blocks": [(r"^stages\.(\d+)\.(\d+)", None), (r"^head", (99999,))]}


def create_cnn(
    variant: str = "s", in_chans: int = 3, input_size: int | None = None
) -> tuple[VestisCNN, Preprocess]:
    """A randomly initialised ``vestis_cnn_{variant}`` and its preprocessing (the whole image resized, no
    crop margin: product photos are centred and small)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown vestis_cnn variant {variant!r}; choose {', '.join(VARIANTS)}")
    cfg = VARIANTS[variant]
    pre = Preprocess(input_size=input_size or cfg.input_size, interpolation="bilinear", crop_pct=1.0)
    return VestisCNN(cfg, in_chans), pre
