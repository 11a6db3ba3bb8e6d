"""Grad-CAM: the heat lies where the label comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_grad_cam")

from vestis.engine.explain import Explainer, heat_fraction, target_layers  # noqa: E402
from vestis.models.registry import create_model  # noqa: E402

SIZE = 32
HALF = SIZE // 2


def quadrant_images(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise with a 6x6 square whose colour is the label (red: 0, green: 1), in a random quadrant, and a blue
    distractor square (the same in both classes) in another quadrant. A pooled CNN cannot read position, so
    the label is what lies in the informative quadrant, not where. Returns (images, labels, quadrants)."""
    x = rng.integers(0, 90, (n, SIZE, SIZE, 3)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    quad = rng.integers(0, 4, n)
    for i in range(n):
        other = (quad[i] + rng.integers(1, 4)) % 4
        for q, colour in ((quad[i], (240, 40, 40) if y[i] == 0 else (40, 240, 40)), (other, (40, 40, 240))):
            r, c = rng.integers(2, HALF - 8, 2)
            top, left = (q // 2) * HALF, (q % 2) * HALF
            x[i, top + r : top + r + 6, left + c : left + c + 6] = colour
    return x, y, quad


def quadrant(q: int) -> tuple[slice, slice]:
    return slice((q // 2) * HALF, (q // 2 + 1) * HALF), slice((q % 2) * HALF, (q % 2 + 1) * HALF)


@pytest.fixture(scope="module")
def quadrant_model():
    from vestis.models.preprocess import normalize

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("test_tiny", heads={"colour": ["red", "green"]}, pretrained=False)
    x, y, _ = quadrant_images(512, rng)
    xt, yt = torch.from_numpy(normalize(x, model.preprocess)), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(6):
        for i in range(0, len(xt), 64):
            loss = torch.nn.functional.cross_entropy(model(xt[i : i + 64])["colour"], yt[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_heat_lies_in_the_informative_quadrant(quadrant_model):
    x, y, quad = quadrant_images(40, np.random.default_rng(1))
    explained = Explainer(quadrant_model)(x, head="colour", cls=[int(v) for v in y])
    acc = np.mean([e.predicted == e.cls for e in explained])
    assert acc > 0.9, f"the tiny model did not learn the task ({acc:.2f})"
    shares = np.array(
        [heat_fraction(e.heatmap, quadrant(int(q))) for e, q in zip(explained, quad, strict=True)]
    )
    assert shares.mean() > 0.6, shares  # a quarter of the image holds most of the heat
    assert (shares > 0.5).mean() > 0.8, shares
    e = explained[0]
    assert e.heatmap.shape == (SIZE, SIZE) and e.heatmap.min() >= 0 and e.heatmap.max() <= 1
    assert e.overlay.shape == (SIZE, SIZE, 3) and e.overlay.dtype == np.uint8


def test_default_class_is_the_prediction_and_names_work(quadrant_model):
    x, _, _ = quadrant_images(4, np.random.default_rng(2))
    ex = Explainer(quadrant_model)
    top = ex(x)
    assert all(e.cls == e.predicted and e.head == "colour" for e in top)
    named = ex(x, cls="green")
    assert all(e.cls == "green" for e in named)
    with pytest.raises(ValueError, match="unknown class"):
        ex(x, cls="blue")
    with pytest.raises(ValueError, match="unknown head"):
        ex(x, head="where")


def test_images_from_paths_and_arrays(quadrant_model, tmp_path):
    from PIL import Image

    x, _, _ = quadrant_images(2, np.random.default_rng(3))
    path = tmp_path / "a.png"
    Image.fromarray(x[0]).resize((64, 64)).save(path)
    got = Explainer(quadrant_model).images([str(path), x[1], path.read_bytes()])
    assert [g.heatmap.shape for g in got] == [(SIZE, SIZE)] * 3


@pytest.mark.parametrize(
    ("backbone", "layer"),
    [("test_tiny", "body.5"), ("vestis_cnn_s", "head"), ("lite0", "bn2")],
)
def test_target_layer_is_the_last_feature_map(backbone, layer):
    model = create_model(backbone, heads={"t": ["a", "b"]}, pretrained=False)
    layers, reshape = target_layers(model.backbone, model.preprocess.input_size)
    names = {m: n for n, m in model.backbone.named_modules()}
    assert [names[m] for m in layers] == [layer] and reshape is None


def test_cnn_explains_at_its_input_size():
    model = create_model("vestis_cnn_s", heads={"t": ["a", "b", "c"]}, pretrained=False).eval()
    crops = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3)).astype(np.uint8)
    got = Explainer(model)(crops, head="t", cls=2)
    assert got[0].heatmap.shape == (96, 96) and got[0].cls == "c"


def test_vit_tokens_reshaped():
    timm = pytest.importorskip("timm")
    from vestis.models.heads import HeadConfig, VestisModel
    from vestis.models.preprocess import Preprocess

    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=2
    )
    model = VestisModel(
        vit, "vit", Preprocess(input_size=32, crop_pct=1.0), {"t": ["a", "b"]}, HeadConfig(), False
    )
    crops = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3)).astype(np.uint8)
    got = Explainer(model.eval())(crops)
    assert got[0].heatmap.shape == (32, 32)
