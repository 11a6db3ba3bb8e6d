"""The inference graph: uint8 crops in, per-head probabilities and pooled features out.

The PyTorch runner runs it and the ONNX exporter traces it, so both runtimes compute the same thing: the
scaling and mean/std normalisation of :func:`vestis.models.preprocess.normalize`, the backbone, each head's
softmax, and the pooled backbone features (the embedding before L2 normalisation)."""

from __future__ import annotations

import torch
from torch import nn

from vestis.models.preprocess import Preprocess


class Normalize(nn.Module):
    """uint8 (B, H, W, 3) -> float (B, 3, H, W), scaled to [0, 1] and normalised. The permuted batch keeps
    the NHWC memory order, which is what channels-last convolutions want."""

    def __init__(self, pre: Preprocess):
        super().__init__()
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the same float32 operations, in the same order, as normalize(): x / 255, - mean, / std
        return (x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std


class InferenceGraph(nn.Module):
    """A trained :class:`~vestis.models.heads.VestisModel` as an inference function:
    ``forward(uint8 (B, H, W, 3)) -> (probs of head 1, ..., probs of head n, features)``, heads in
    ``model.classes`` order; features are the pooled backbone output (B, D)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.norm = Normalize(model.preprocess)
        self.heads = list(model.classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.model.features(self.norm(x))
        logits = self.model.classify(f)
        return (*(logits[h].float().softmax(-1) for h in self.heads), f.float())


class EnsembleGraph(nn.Module):
    """Several models as one: ``forward(x_1, ..., x_m)`` (each member's own crops) -> their probabilities
    averaged per head, and their L2-normalised features concatenated (scaled by 1/sqrt(m), so the
    concatenation is a unit vector again)."""

    def __init__(self, ensemble):
        super().__init__()
        self.members = nn.ModuleList([InferenceGraph(m) for m in ensemble.members])
        self.heads = list(ensemble.classes)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(xs) != len(self.members):
            raise ValueError(f"an ensemble of {len(self.members)} takes one input batch per member")
        outs = [m(x) for m, x in zip(self.members, xs, strict=True)]
        probs = [sum(o[k] for o in outs) / len(outs) for k in range(len(self.heads))]
        feats = torch.cat([nn.functional.normalize(o[-1], dim=-1) for o in outs], dim=-1) / len(outs) ** 0.5
        return (*probs, feats)


def inference_graph(model) -> nn.Module:
    """The graph for a model or an :class:`~vestis.models.ensemble.Ensemble` of them."""
    return EnsembleGraph(model) if hasattr(model, "members") else InferenceGraph(model)
