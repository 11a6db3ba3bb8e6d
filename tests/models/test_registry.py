from __future__ import annotations

import pytest
import torch

from vestis.models import HeadConfig, Preprocess, create_model, list_backbones
from vestis.models.registry import canonical_name, describe_backbones


def test_unknown_backbone_lists_known_names():
    with pytest.raises(ValueError) as e:
        create_model("no_such_net")
    for name in ("tf_efficientnet_lite0", "tf_efficientnet_lite2", "test_tiny"):
        assert name in str(e.value)


def test_hub_backbone_offline_error_is_actionable(monkeypatch):
    import timm

    def boom(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(timm, "create_model", boom)
    with pytest.raises(RuntimeError, match="offline backbone"):
        create_model("resnet18", pretrained=True)


def test_multi_head_forward_and_preprocess():
    m = create_model("test_tiny", heads={"type": ["a", "b", "c"], "colour": ["x", "y"]}).eval()
    out = m(torch.randn(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"type": (2, 3), "colour": (2, 2)}
    assert m.preprocess.input_size == 32


def test_lite_preprocessing_travels_with_model():
    m = create_model("lite0", pretrained=False)
    assert canonical_name("lite0") == m.backbone_name == "tf_efficientnet_lite0"
    assert m.preprocess == Preprocess(224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875)
    assert create_model("lite2", pretrained=False).preprocess.input_size == 260


def test_tiny_backbone_is_deterministic():
    a, b = create_model("test_tiny"), create_model("test_tiny")
    for (ka, va), (_, vb) in zip(
        a.backbone.state_dict().items(), b.backbone.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), ka


def test_invalid_head_and_preprocess_options():
    with pytest.raises(ValueError):
        HeadConfig(type="transformer")
    with pytest.raises(ValueError):
        Preprocess.from_dict({"input_size": 224, "colour": "yes"})
    with pytest.raises(ValueError, match="2 classes"):
        create_model("test_tiny", heads={"x": ["only"]})


def test_mlp_head_and_listing():
    m = create_model("test_tiny", heads={"a": ["p", "q"]}, head=HeadConfig("mlp", hidden=8))
    assert m(torch.randn(1, 3, 32, 32))["a"].shape == (1, 2)
    names = [s.name for s in list_backbones()]
    assert "tf_efficientnet_lite1" in names
    assert "test_tiny" in describe_backbones()
