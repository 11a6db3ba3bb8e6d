"""The offline Lite weights map one-to-one onto timm and reproduce the reference implementation's logits."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from tests.conftest import CLOTHING
from vestis.data.images import load_image
from vestis.models.lite import load_lite_weights, map_state_dict, weights_file
from vestis.models.preprocess import normalize, resolve_transform
from vestis.models.registry import create_model


def _images(size: int) -> torch.Tensor:
    """Real photos when the shared data is there, else a smooth synthetic image (still a real check of the mapping)."""
    model = create_model("test_tiny")
    model.preprocess = type(model.preprocess)(
        input_size=size, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.875
    )
    tf = resolve_transform(model.preprocess)
    paths = sorted(CLOTHING.glob("test/*/*.jpg"))[::60][:4]
    if paths:
        return torch.from_numpy(np.stack([normalize(tf(load_image(p)), model.preprocess) for p in paths]))
    yy, xx = np.mgrid[0:size, 0:size] / size
    return torch.tensor(np.stack([np.sin(6 * xx), np.cos(4 * yy), xx * yy]) * 0.8, dtype=torch.float32)[None]


@pytest.mark.parametrize("variant,size", [(0, 224), (1, 240), (2, 260)])
def test_mapping_matches_reference(variant, size):
    ref_mod = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="test-only reference implementation missing"
    )
    path = weights_file(variant)
    src = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    mapped = map_state_dict(src, model)
    assert len(mapped) == len(src) == len(model.state_dict())  # nothing left over on either side
    load_lite_weights(model, variant)
    ref = ref_mod.EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=str(path)).eval()
    x = _images(size)
    with torch.inference_mode():
        diff = (model.eval()(x) - ref(x)).abs().max().item()
    assert diff < 1e-4, f"ImageNet logits differ by {diff}"


def test_mapping_rejects_unknown_key():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = torch.load(weights_file(0), map_location="cpu", weights_only=True)
    src["_blocks.0._mystery.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="cannot map"):
        map_state_dict(src, model)
    del src["_blocks.0._mystery.weight"]
    del src["_conv_stem.weight"]
    with pytest.raises(KeyError, match="got no weight"):
        map_state_dict(src, model)
