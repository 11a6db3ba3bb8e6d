from __future__ import annotations

import json

import pytest
import torch

from vestis.models import HeadConfig, create_model
from vestis.models.checkpoint import load_checkpoint, read_config, save_checkpoint


def _model():
    torch.manual_seed(1)
    return create_model(
        "test_tiny", heads={"type": ["a", "b", "c"], "colour": ["x", "y"]}, head=HeadConfig("mlp", 8)
    )


def test_head_only_roundtrip(tmp_path):
    m = _model().eval()
    save_checkpoint(tmp_path, m, metrics={"validation": {"type": {"top1": 0.5}}}, data={"fingerprint": "abc"})
    cfg = read_config(tmp_path)
    assert cfg["heads"] == {"type": ["a", "b", "c"], "colour": ["x", "y"]}
    assert cfg["includes_backbone"] is False and cfg["data"]["fingerprint"] == "abc"
    assert cfg["vestis_version"] and cfg["preprocess"]["input_size"] == 32
    m2, _ = load_checkpoint(tmp_path)
    x = torch.randn(3, 3, 32, 32)
    for h in m.classes:
        assert torch.allclose(m(x)[h], m2(x)[h])
    assert not (tmp_path / "model.safetensors.tmp").exists()


def test_full_roundtrip_fp16(tmp_path):
    m = _model()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.1)  # a "fine-tuned" backbone that the registry cannot rebuild
    m.eval()
    save_checkpoint(tmp_path, m, include_backbone=True, dtype=torch.float16)
    m2, _ = load_checkpoint(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x)["type"], m2(x)["type"], atol=2e-2)


def test_refuses_changed_backbone_and_bad_files(tmp_path):
    m = _model()
    save_checkpoint(tmp_path, m)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["backbone_fingerprint"] = "0" * 16
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="backbone weights"):
        load_checkpoint(tmp_path)
    cfg["format"] = 99
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a vestis model"):
        load_checkpoint(tmp_path / "nothing")


def test_weights_are_safetensors_not_pickle(tmp_path):
    save_checkpoint(tmp_path, _model())
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert not raw.startswith(b"\x80") and b'"heads.h0.0.weight"' in raw[:4096]
