"""Losses for imbalanced classes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vestis.train.config import LOSSES


def class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, normalised so that a balanced set gets all ones (absent classes get 0)."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): down-weights easy examples; ``weight`` is the per-class alpha."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        ce = F.nll_loss(logp, target, reduction="none")
        if self.label_smoothing:
            ce = (1 - self.label_smoothing) * ce - self.label_smoothing * logp.mean(-1)
        pt = logp.gather(1, target[:, None]).squeeze(1).exp()
        loss = (1 - pt).pow(self.gamma) * ce
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum().clamp_min(1e-12)
        return loss.mean()


def make_loss(name: str, y: np.ndarray, num_classes: int, label_smoothing: float = 0.0) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "weighted":
        return nn.CrossEntropyLoss(weight=class_weights(y, num_classes), label_smoothing=label_smoothing)
    if name == "focal":
        return FocalLoss(2.0, class_weights(y, num_classes), label_smoothing)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
