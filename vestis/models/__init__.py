"""Backbone registry, heads, preprocessing and the checkpoint format.

Names are imported on first use, so ``vestis.models.preprocess`` (Pillow + NumPy) can be used without
importing torch (the ONNX Runtime predictor does)."""

from __future__ import annotations

import importlib

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
_EXPORTS = {
    "create_backbone": "registry",
    "create_model": "registry",
    "list_backbones": "registry",
    "Ensemble": "ensemble",
    "load_models": "ensemble",
    "HeadConfig": "heads",
    "VestisModel": "heads",
    "Preprocess": "preprocess",
    "resolve_transform": "preprocess",
}
__all__ = sorted([*_EXPORTS, "DEFAULT_BACKBONE"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vestis.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vestis.models' has no attribute {name!r}")
