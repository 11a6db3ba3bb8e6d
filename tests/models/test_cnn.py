"""The from-scratch CNN family: any input size, 1 or 3 channels, layer groups, training from scratch."""

from __future__ import annotations

import pytest
import torch

from vestis.models.cnn import VARIANTS, create_cnn
from vestis.models.registry import create_model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(("size", "chans"), [(28, 1), (28, 3), (60, 3), (96, 3), (80, 1), (224, 3)])
def test_any_size_and_channels(variant, size, chans):
    net, _ = create_cnn(variant)
    net.eval()
    out = net(torch.randn(2, chans, size, size))
    assert out.shape == (2, net.num_features)
    assert torch.isfinite(out).all()


def test_non_square_catalogue_thumbnail():
    net, _ = create_cnn("s")
    assert net.eval()(torch.randn(1, 3, 80, 60)).shape == (1, 512)


@pytest.mark.parametrize("chans", [1, 3])
def test_grey_model_takes_rgb_and_grey(chans):
    net, _ = create_cnn("s", in_chans=1)
    assert net.stem[0][0].in_channels == 1
    net.eval()
    grey = torch.rand(1, 1, 40, 40)
    rgb = grey.expand(-1, 3, -1, -1)  # what the loaders give for a grey image
    # luma weights sum to 1: a grey image converted to RGB and back is the same image
    torch.testing.assert_close(net(rgb), net(grey), rtol=1e-4, atol=1e-5)
    assert net(torch.rand(1, chans, 40, 40)).shape == (1, 512)


def test_rejects_other_channel_counts():
    net, _ = create_cnn("s")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        net(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="in_chans"):
        create_cnn("s", in_chans=2)


def test_registered_scratch_only_and_seeded():
    a = create_model("vestis_cnn_s", heads={"t": ["a", "b"]}, pretrained=False)
    b = create_model("vestis_cnn_s", heads={"t": ["a", "b"]}, pretrained=False)
    assert a.preprocess.input_size == 96 and a.num_features == 512
    for (n, p), q in zip(a.backbone.state_dict().items(), b.backbone.state_dict().values(), strict=True):
        assert torch.equal(p, q), n  # a head-only checkpoint would reload onto the same backbone
    with pytest.raises(ValueError, match="no-pretrained"):
        create_model("vestis_cnn_m", pretrained=True)


def test_layer_groups_freeze():
    model = create_model("vestis_cnn_s", heads={"t": ["a", "b"]}, pretrained=False)
    frozen = model.freeze(2)  # the stem and the first stage
    assert frozen and all(n.startswith(("stem", "stages.0")) for n in frozen)
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert all(p.requires_grad for p in model.backbone.head.parameters())
    with pytest.raises(ValueError, match="at most 4"):
        model.freeze(5)  # stem + 4 stages: the last feeds the head


def test_learns_from_scratch():
    """A few optimiser steps fit a trivially separable batch (the network trains at all)."""
    torch.manual_seed(0)
    model = create_model("vestis_cnn_s", heads={"t": ["dark", "bright"]}, pretrained=False)
    x = torch.cat([torch.full((8, 3, 32, 32), -1.0), torch.full((8, 3, 32, 32), 1.0)]) + 0.3 * torch.randn(
        16, 3, 32, 32
    )
    y = torch.tensor([0] * 8 + [1] * 8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x)["t"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(x)["t"].argmax(1) == y).float().mean() == 1.0
