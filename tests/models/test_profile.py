"""vestis profile: counts and receptive fields against a network computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vestis.models.heads import HeadConfig, VestisModel
from vestis.models.preprocess import Preprocess
from vestis.models.profile import ReceptiveFieldMode, format_profile, profile_model


class HandNet(nn.Module):
    """16x16x3 -> conv 3x3 (4 ch) -> maxpool 2 -> conv 3x3 stride 2 dilation 2 (8 ch) -> global pool."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2)
        self.gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.gap(self.conv(self.pool(self.stem(x))))

    def group_matcher(self, coarse=False):
        return {"stem": r"^stem", "blocks": [(r"^conv", (1,))]}


def hand_model() -> VestisModel:
    pre = Preprocess(input_size=16, crop_pct=1.0)
    return VestisModel(HandNet(), "hand", pre, {"t": ["a", "b"]}, HeadConfig(), False)


def test_counts_match_hand_computation():
    p = profile_model(hand_model(), "hand", speed=False)
    # stem: 16*16 positions x 4 out x (3*3*3) = 27648 MACs; conv: 4*4 positions x 8 out x (4*3*3) = 4608;
    # head: 8 -> 2 = 16
    assert p.macs == 27648 + 4608 + 16
    assert p.flops == 2 * p.macs
    assert p.params == (4 * 27 + 4) + (8 * 36 + 8) + (2 * 8 + 2)
    assert p.head_params == 18
    stem, stage = p.stages
    assert (stem.macs, stem.shape, stem.params) == (27648, [4, 16, 16], 112)
    # stem: rf 3, jump 1 (the pool is not in a group with parameters: it lands in the next stage)
    assert (stem.rf, stem.stride) == (3, 1)
    # maxpool 2: 3 + 1*1 = 4, jump 2; dilated conv: 4 + (3-1)*2*2 = 12, jump 4
    assert (stage.rf, stage.stride, stage.shape, stage.macs) == (12, 4, [8, 4, 4], 4608)


def test_receptive_field_takes_the_wider_residual_branch():
    main = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    short = nn.Conv2d(3, 4, 1, stride=2)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad(), ReceptiveFieldMode(x) as mode:
        y = main(x) + short(x)
        gate = y.mean((2, 3), keepdim=True).sigmoid()  # an SE-style global gate does not make it global
        z = y * gate
    # main: 3, jump 2 -> 3 + 2*2 = 7; shortcut: 1, jump 2; the sum: 7
    assert (mode.of(y).size, mode.of(y).jump) == (7, 2)
    assert (mode.of(z).size, mode.of(z).jump) == (7, 2)
    assert math.isinf(mode.of(gate).size)


def test_lite0_macs_match_published_figure():
    """EfficientNet-Lite0 at 224: 385M MACs with its 1000-class classifier (the commonly cited 0.385G; the TF
    README's table says 407M): the backbone alone counts 383.9M, the classifier 1280x1000 adds 1.28M."""
    from vestis.models.registry import create_model

    model = create_model("lite0", heads={"imagenet": [str(i) for i in range(1000)]}, pretrained=False)
    p = profile_model(model, "lite0", speed=False)
    assert p.input_size == 224
    assert abs(p.macs / 385e6 - 1) < 0.01
    assert abs(p.macs / 407e6 - 1) < 0.06
    assert len(p.stages) == 8 and p.stages[-1].shape == [1280, 7, 7] and p.stages[-1].stride == 32


def test_speed_and_text():
    p = profile_model(hand_model(), "hand", speed=True, seconds=0.05, batches=(1, 4))
    assert set(p.speed) == {"batch_1", "batch_4"} and all(v > 0 for v in p.speed.values())
    text = format_profile(p, cpu="test cpu")
    assert "MACs 32.27k" in text and "img/s" in text and "test cpu" in text
    d = p.to_dict()
    assert d["stages"][1]["rf"] == 12 and d["macs"] == 32272


@pytest.mark.parametrize("size", [28, 96])
def test_cnn_profile_any_size(size):
    from vestis.models.registry import create_model

    p = profile_model(create_model("vestis_cnn_s", pretrained=False), "s", input_size=size, speed=False)
    assert p.input_size == size and len(p.stages) == 5
    assert [s.stride for s in p.stages] == [2, 4, 8, 16, 32]
