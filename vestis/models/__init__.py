"""Backbone registry, heads, preprocessing and the checkpoint format."""

from vestis.models.ensemble import Ensemble, load_models
from vestis.models.heads import HeadConfig, VestisModel
from vestis.models.preprocess import Preprocess, resolve_transform
from vestis.models.registry import DEFAULT_BACKBONE, create_backbone, create_model, list_backbones

__all__ = [
    "DEFAULT_BACKBONE",
    "Ensemble",
    "HeadConfig",
    "Preprocess",
    "VestisModel",
    "create_backbone",
    "create_model",
    "list_backbones",
    "load_models",
    "resolve_transform",
]
