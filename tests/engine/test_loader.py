"""The one image loader: order, views, errors, worker processes, and the torch-free preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vestis.engine.loader import ImageSet, check_views, iterate_batches, stack_views
from vestis.models.preprocess import EvalCrop, Preprocess, normalize, resolve_transform


def png(seed: int, size=(40, 30)) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


PRE = Preprocess(input_size=16, crop_pct=0.8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def items(tmp_path, n=11):
    out = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        p.write_bytes(png(i))
        out.append(str(p))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    out.insert(3, str(tmp_path / "bad.jpg"))
    out.insert(7, str(tmp_path / "missing.png"))
    out.append(png(99))  # downloaded bytes
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_keep_order_and_report_errors(tmp_path, workers):
    data = items(tmp_path)
    ds = ImageSet(data, resolve_transform(PRE), PRE.resize_size, ("plain", "flip"))
    seen, errors = [], {}
    for batch in iterate_batches(ds, batch_size=4, workers=workers):
        assert batch.x.shape[1:] == (2, 16, 16, 3) and batch.x.dtype == np.uint8
        assert (batch.x[:, 1] == batch.x[:, 0, :, ::-1]).all()  # the flip view is the mirrored crop
        seen += batch.idx.tolist()
        errors.update(batch.errors)
    assert sorted(seen + list(errors)) == list(range(len(data)))  # every item once: decoded or an error
    assert seen == sorted(seen)  # in input order
    assert errors[3] == "not an image (unrecognised format)" and errors[7] == "file not found"


def test_workers_give_the_same_crops(tmp_path):
    data = items(tmp_path)
    ds = ImageSet(data, resolve_transform(PRE), PRE.resize_size)
    a = np.concatenate([b.x for b in iterate_batches(ds, 5, workers=0)])
    b = np.concatenate([b.x for b in iterate_batches(ds, 3, workers=2)])
    assert np.array_equal(a, b)


def test_eval_crop_matches_torchvision():
    """The torch-free crop + normalize equals torchvision's Resize + CenterCrop + ToTensor + Normalize."""
    T = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    for w, h in [(60, 80), (400, 533), (533, 400), (20, 20), (17, 90)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for pre in (PRE, Preprocess(), Preprocess(input_size=32, crop_pct=1.0, interpolation="bilinear")):
            ref = T.Compose(
                [
                    T.Resize(pre.resize_size, interpolation=T.InterpolationMode(pre.interpolation)),
                    T.CenterCrop(pre.input_size),
                    T.ToTensor(),
                    T.Normalize(pre.mean, pre.std),
                ]
            )(img)
            assert np.abs(ref.numpy() - normalize(EvalCrop(pre)(img), pre)).max() < 1e-6


def test_views_and_in_memory_images():
    with pytest.raises(ValueError, match="views"):
        check_views(("plain", "rot90"))
    x = np.arange(2 * 3 * 3).reshape(2, 3, 3).astype(np.uint8)
    assert stack_views(x, ("plain", "flip")).shape == (2, 2, 3, 3)
    img = Image.open(io.BytesIO(png(1))).convert("RGBA")  # decoded images are accepted as items too
    ds = ImageSet([img, b""], resolve_transform(PRE), PRE.resize_size)
    assert ds[0][1].shape == (1, 16, 16, 3) and ds[1] == (1, None, "empty file")


def test_odd_transform_failure_is_that_images_error():
    def boom(img):
        raise ZeroDivisionError("odd image")

    ds = ImageSet([png(0)], boom, 16)
    assert ds[0] == (0, None, "cannot prepare image: odd image")
