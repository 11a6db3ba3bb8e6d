"""The fine-tuning optimisation recipe: AdamW with the backbone at a fraction of the head's learning rate, linear
warm-up then cosine decay, mixup / cutmix, the per-head loss on partly labelled batches, and the seeding that
makes every epoch's randomness a function of (seed, epoch, process)."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import torch

from vestis.train.config import TrainConfig


def resolve_augment(cfg: TrainConfig, heads: list[str]) -> tuple[TrainConfig, str | None]:
    """``augment='auto'`` made concrete (and stored so): TrivialAugment, or its colour-safe variant when a head's
    labels are colours (TrivialAugment's saturation, solarize, posterize, equalize and autocontrast operations
    change the very colour such a head learns). The note says which, when a colour head decided it."""
    if cfg.augment != "auto":
        return cfg, None
    from vestis.models.augment import is_colour_head

    colour = [h for h in heads if is_colour_head(h)]
    cfg = dataclasses.replace(cfg, augment="colour-safe" if colour else "trivial")
    if not colour:
        return cfg, None
    return cfg, (
        f"augment: colour-safe (TrivialAugment without its colour-changing operations) for colour head(s) "
        f"{colour}; --augment trivial keeps them all"
    )


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; backbone at lr * backbone_lr_scale; no weight decay on biases and norm layers (ndim < 2)."""
    groups = []
    for part, scale in ((model.backbone, cfg.backbone_lr_scale), (model.heads, 1.0)):
        params = [p for p in part.parameters() if p.requires_grad]
        for decay in (True, False):
            ps = [p for p in params if (p.ndim >= 2) == decay]
            wd = cfg.finetune_weight_decay if decay else 0.0
            groups.append({"params": ps, "weight_decay": wd, "base_lr": cfg.lr * scale, "lr": cfg.lr * scale})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_scale(step: int, total: int, warmup: int, min_scale: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``min_scale`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_scale + (1 - min_scale) * 0.5 * (1 + math.cos(math.pi * t))


def mix_batch(x: torch.Tensor, mixup: float, cutmix: float):
    """Mixup or cutmix (one of those enabled, chosen per batch): -> (x, perm or None, lam); the loss is
    lam * loss(y) + (1 - lam) * loss(y[perm])."""
    modes = [(m, a) for m, a in (("mixup", mixup), ("cutmix", cutmix)) if a > 0]
    if not modes or len(x) < 2:
        return x, None, 1.0
    mode, alpha = modes[int(torch.randint(len(modes), ()))]
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x)).to(x.device)
    if mode == "mixup":
        return x.lerp(x[perm], 1 - lam), perm, lam
    H, W = x.shape[-2:]
    h, w = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(H, ())), int(torch.randint(W, ()))
    y0, y1 = max(cy - h // 2, 0), min(cy + h - h // 2, H)
    x0, x1 = max(cx - w // 2, 0), min(cx + w - w // 2, W)
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x, perm, 1 - (y1 - y0) * (x1 - x0) / (H * W)


def head_loss(fn, logits, y, perm, lam):
    """One head's loss over the samples labelled for it (``y >= 0``), mixed as :func:`mix_batch` says."""

    def part(t):
        m = t >= 0
        return fn(logits[m], t[m]) if bool(m.any()) else logits.sum() * 0.0  # keep every head in the graph

    return part(y) if perm is None else lam * part(y) + (1 - lam) * part(y[perm])


def seed_everything(cfg: TrainConfig, epoch: int, rank: int) -> None:
    """Each epoch's randomness (augmentation, also in worker processes; mixup; dropout) comes from (seed, epoch,
    rank), so a resumed or multi-process run draws the same numbers as an uninterrupted one."""
    s = (cfg.seed * 1_000_003 + epoch * 1009 + rank) % 2**31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
