"""Colour statistics of the product's pixels, beside the CNN's pooled features (``--colour-stats``).

A CNN pooled for object recognition keeps little absolute colour: on the shared catalogue, baseColour is the
weakest attribute. These statistics are computed in the graph (so they travel with the model into ONNX): the
crop is averaged down to 32x32, pixels unlike the border colour (the product, not the studio background) are
weighted by a soft mask, and the product pixels give their mean and standard deviation in RGB, the share of
the image they cover, and a soft histogram over a fixed palette of named colours."""

from __future__ import annotations

import torch
from torch import nn

# a palette spanning the catalogue's colour names (RGB in [0, 1]); soft votes, so the exact list matters little
PALETTE = (
    (0.0, 0.0, 0.0),  # black
    (1.0, 1.0, 1.0),  # white
    (0.5, 0.5, 0.5),  # grey
    (0.75, 0.75, 0.75),  # silver
    (0.8, 0.1, 0.1),  # red
    (0.5, 0.0, 0.1),  # maroon
    (1.0, 0.6, 0.7),  # pink
    (1.0, 0.55, 0.1),  # orange
    (1.0, 0.9, 0.2),  # yellow
    (0.96, 0.9, 0.75),  # beige / cream
    (0.45, 0.28, 0.15),  # brown
    (0.75, 0.7, 0.5),  # khaki
    (0.45, 0.5, 0.2),  # olive
    (0.1, 0.6, 0.2),  # green
    (0.0, 0.5, 0.5),  # teal
    (0.3, 0.85, 0.85),  # turquoise
    (0.15, 0.35, 0.85),  # blue
    (0.05, 0.1, 0.35),  # navy
    (0.5, 0.2, 0.6),  # purple
    (0.75, 0.65, 0.9),  # lavender
    (0.9, 0.2, 0.7),  # magenta
    (0.85, 0.65, 0.2),  # gold
    (0.98, 0.75, 0.6),  # peach
    (0.35, 0.25, 0.25),  # coffee
)
GRID = 32  # the crop is averaged down to GRID x GRID before the statistics
NUM_STATS = 3 + 3 + 1 + len(PALETTE)


class ColourStats(nn.Module):
    """``forward(x)`` for a normalised batch (B, 3, H, W) (``mean``/``std``: the model's normalisation) ->
    (B, :data:`NUM_STATS`) colour statistics of the product pixels."""

    def __init__(
        self, mean, std, sharpness: float = 30.0, threshold: float = 0.12, temperature: float = 0.02
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("palette", torch.tensor(PALETTE, dtype=torch.float32))  # (K, 3)
        self.sharpness, self.threshold, self.temperature = sharpness, threshold, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x.float() * self.std + self.mean).clamp(0, 1)
        rgb = nn.functional.adaptive_avg_pool2d(rgb, GRID)  # (B, 3, G, G)
        ring = torch.cat(
            [rgb[:, :, 0], rgb[:, :, -1], rgb[:, :, :, 0], rgb[:, :, :, -1]], dim=-1
        )  # (B, 3, 4G)
        border = ring.mean(-1)[:, :, None, None]
        dist = (rgb - border).pow(2).sum(1, keepdim=True).sqrt()  # (B, 1, G, G)
        w = torch.sigmoid((dist - self.threshold) * self.sharpness)
        # an image that is all one colour (or the product fills it): every pixel counts
        w = w + 1e-3
        total = w.sum((2, 3))  # (B, 1)
        mean = (rgb * w).sum((2, 3)) / total
        std = ((rgb - mean[:, :, None, None]).pow(2) * w).sum((2, 3)).div(total).clamp_min(1e-8).sqrt()
        px = rgb.flatten(2).transpose(1, 2)  # (B, G*G, 3)
        d2 = (px[:, :, None, :] - self.palette[None, None]).pow(2).sum(-1)  # (B, G*G, K)
        votes = torch.softmax(-d2 / self.temperature, dim=-1) * w.flatten(2).transpose(1, 2)
        hist = votes.sum(1) / total
        cover = total / (GRID * GRID)
        return torch.cat([mean, std, cover, hist], dim=1)


class WithColour(nn.Module):
    """A backbone whose pooled features are followed by :class:`ColourStats` of the same input."""

    def __init__(self, backbone: nn.Module, mean, std):
        super().__init__()
        self.net = backbone
        self.colour = ColourStats(mean, std)
        self.num_features = int(backbone.num_features) + NUM_STATS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x).float(), self.colour(x)], dim=1)
