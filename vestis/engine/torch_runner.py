"""The PyTorch runtime: a trained model (or an ensemble) on a device, in fp32 or bf16 autocast."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from vestis.engine.graph import inference_graph
from vestis.runtime import autocast, pick_device, resolve_precision, tune_allocator


def backbone_key(model, precision: str) -> str:
    """Identifies what a backbone computes: its name, exact weights, preprocessing and the precision. Keys the
    feature cache (the same formula since the first cached features, so old caches stay valid)."""
    from vestis.models.checkpoint import weights_fingerprint

    ident = {
        "backbone": model.backbone_name,
        "weights": weights_fingerprint(model.backbone),
        "preprocess": model.preprocess.to_dict(),
        "precision": precision,
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class TorchRunner:
    """``runner(x) -> ({head: probs (N, C)}, features (N, D))`` for uint8 crops ``x`` (N, H, W, 3) (a tuple of
    them, one per member, for an ensemble), as float32 NumPy arrays.

    ``precision``: 'fp32', 'bf16' (autocast) or 'auto' (bf16 where the CPU or GPU has fast bf16 units).
    The model is moved to the device here, outside inference mode, so a model that is still being trained
    keeps ordinary parameters."""

    runtime = "torch"

    def __init__(
        self,
        model,
        device: str | torch.device | None = "auto",
        precision: str = "auto",
        channels_last: bool = True,
    ):
        tune_allocator()
        self.model = model
        self.device = pick_device(device)
        self.precision = resolve_precision(self.device, precision)
        self.graph = inference_graph(model).to(self.device)
        if channels_last:
            self.graph = self.graph.to(memory_format=torch.channels_last)
        self.graph.eval()
        self.classes: dict[str, list[str]] = dict(model.classes)
        self.preprocess = model.preprocess

    @property
    def name(self) -> str:
        return f"torch {self.precision} ({self.device.type})"

    @property
    def fingerprint(self) -> str:
        """What the features mean: the backbone(s) and precision (keys the feature cache and an index)."""
        members = getattr(self.model, "members", [self.model])
        return "+".join(backbone_key(m, self.precision) for m in members)

    @property
    def num_features(self) -> int:
        members = getattr(self.model, "members", [self.model])
        return sum(int(m.num_features) for m in members)

    def __call__(self, x) -> tuple[dict[str, np.ndarray], np.ndarray]:
        xs = x if isinstance(x, tuple) else (x,)
        self.graph.eval()
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.graph(*(torch.as_tensor(np.ascontiguousarray(a)).to(self.device) for a in xs))
        arrays = [t.float().cpu().numpy() for t in out]
        return dict(zip(self.classes, arrays[:-1], strict=True)), arrays[-1]

    def members(self) -> list[TorchRunner]:
        """One runner per ensemble member (``[self]`` for a single model), same device and precision."""
        if not hasattr(self.model, "members"):
            return [self]
        return [TorchRunner(m, self.device, self.precision) for m in self.model.members]

    def classify(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Heads on pooled features (N, V, D) (a single model's) -> {head: probs (N, C)}, averaged over views."""
        n, v, d = features.shape
        with torch.inference_mode(), autocast(self.device, self.precision):
            logits = self.model.classify(torch.from_numpy(features.reshape(n * v, d)).to(self.device))
        return {h: z.float().softmax(-1).reshape(n, v, -1).mean(1).cpu().numpy() for h, z in logits.items()}
