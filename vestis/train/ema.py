"""Exponential moving average of a model's weights (Polyak averaging), evaluated and saved instead of the raw
weights. The decay warms up as min(decay, (1 + t) / (10 + t)) at update t, so a short run averages over a
window that grows with it instead of remembering its random start."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    def rate(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.rate()
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if e.is_floating_point():
                e.lerp_(m.detach().to(e.dtype), 1.0 - d)  # e = d * e + (1 - d) * m
            else:
                e.copy_(m)  # BatchNorm's step counters
