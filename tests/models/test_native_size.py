"""Native resolution (issue #10 part 7): measured from image headers, recorded in the preprocessing by the
trainers when the training images are small, carried by checkpoints and ONNX metadata, and applied at
prediction (larger inputs box-downscaled to it first). Tiny synthetic images and the test_tiny backbone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COLOURS, make_image, stable_seed
from vestis.data.resolution import (
    image_size,
    is_small,
    median_size,
    native_size_for,
    parse_setting,
    record_native_size,
)
from vestis.models.preprocess import EvalCrop, Preprocess, native_scale, resolve_transform

LEGACY_KEYS = ["input_size", "interpolation", "mean", "std", "crop_pct"]


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    """High-frequency content: downscaling it changes it a lot."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def small_folder(root: Path, size: tuple[int, int]) -> Path:
    for split, k in {"train": 6, "validation": 3, "test": 2}.items():
        for c, rgb in COLOURS.items():
            for i in range(k):
                make_image(root / split / c / f"{c}{i}.png", rgb, size=size, seed=stable_seed(split, c, i))
    return root


def tiny_train(data: Path, tmp_path: Path, **kw):
    from vestis.train import TrainConfig, train

    base = dict(
        data=str(data),
        out=str(tmp_path / "run"),
        backbone="test_tiny",
        epochs=2,
        head="linear",
        workers=0,
        quiet=True,
        cache_dir=str(tmp_path / "cache"),
        precision="fp32",
    )
    train(TrainConfig(**{**base, **kw}))
    return tmp_path / "run"


# -- the field ------------------------------------------------------------------------------------------------


def test_preprocess_field_round_trips_and_is_absent_when_unset():
    pre = Preprocess(native_size=[60, 80])
    assert pre.native_size == (60, 80) and pre.to_dict()["native_size"] == [60, 80]
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert list(Preprocess().to_dict()) == LEGACY_KEYS  # older models' bytes and feature-cache keys unchanged
    assert Preprocess.from_dict({"input_size": 224}).native_size is None  # an older config
    assert Preprocess.from_dict({"native_size": None}).native_size is None
    for bad in ([60], [0, 80], "60x80x3", 7):
        with pytest.raises(ValueError):
            Preprocess.from_dict({"native_size": bad})


def test_native_scale_fits_shorter_to_shorter_and_never_upscales():
    assert native_scale((400, 534), (60, 80)) == (60, 80)
    assert native_scale((534, 400), (60, 80)) == (80, 60)  # landscape against a portrait native size
    assert native_scale((400, 800), (60, 80)) == (40, 80)  # long side binds
    assert native_scale((50, 70), (60, 80)) is None and native_scale((60, 80), (60, 80)) is None
    assert native_scale((400, 534), None) is None


# -- the eval transform ---------------------------------------------------------------------------------------


def test_evalcrop_downscales_large_inputs_first_and_is_unchanged_otherwise():
    base = Preprocess(input_size=32, crop_pct=0.875, interpolation="bicubic")
    native = replace(base, native_size=(12, 16))
    big, small = noise((120, 160), 1), noise((9, 12), 2)
    by_hand = EvalCrop(base)(big.resize((12, 16), Image.Resampling.BOX))
    assert np.array_equal(EvalCrop(native)(big), by_hand)
    assert not np.array_equal(EvalCrop(base)(big), by_hand)  # the downscale matters for this image
    assert np.array_equal(EvalCrop(native)(small), EvalCrop(base)(small))  # smaller: never upscaled first


def test_evalcrop_without_native_size_matches_torchvision():
    from torchvision import transforms as T

    pre = Preprocess(input_size=32, crop_pct=0.875, interpolation="bicubic")
    ref = T.Compose([T.Resize(pre.resize_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32)])
    for k, size in enumerate([(120, 160), (161, 97), (37, 37)]):
        img = noise(size, 10 + k)
        assert np.array_equal(EvalCrop(pre)(img), np.asarray(ref(img)))


def test_training_transform_downscales_too():
    tf = resolve_transform(Preprocess(input_size=16, native_size=(8, 8)), train=True, augment="none")
    assert type(tf.transforms[0]).__name__ == "ToNative"
    assert tuple(tf(noise((64, 64), 3)).shape) == (3, 16, 16)
    plain = resolve_transform(Preprocess(input_size=16), train=True, augment="none")
    assert type(plain.transforms[0]).__name__ == "RandomResizedCrop"


# -- measuring ------------------------------------------------------------------------------------------------


def test_sizes_from_headers_median_and_rule(tmp_path):
    paths = [make_image(tmp_path / f"{i}.png", (9, 9, 9), size=(60 + i % 3, 80)) for i in range(7)]
    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown upright as 80x60
    noise((60, 80), 4).save(rotated, exif=exif)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert image_size(rotated) == (80, 60) and image_size(tmp_path / "bad.png") is None
    assert median_size([*paths, tmp_path / "bad.png"]) == (61, 80)
    assert median_size([tmp_path / "bad.png"]) is None
    assert is_small((60, 80), 256) and not is_small((400, 534), 256) and not is_small((224, 224), 256)
    assert native_size_for(paths, 256) == (61, 80) and native_size_for(paths, 64) is None
    assert native_size_for(paths, 256, "off") is None and native_size_for(paths, 64, "30x40") == (30, 40)
    assert parse_setting(None) == "auto" and parse_setting([6, 8]) == (6, 8)
    with pytest.raises(ValueError):
        parse_setting("big")


def test_record_native_size_on_a_model():
    from vestis.models.registry import create_model

    model = create_model("test_tiny", pretrained=False)
    assert record_native_size(model, [], "12x16") == (12, 16) and model.preprocess.native_size == (12, 16)
    assert record_native_size(model, [], "off") is None and model.preprocess.native_size is None


# -- the trainers record it, the checkpoint and ONNX carry it, prediction applies it ------------------------


def test_fast_trainer_records_small_images_not_large_ones(tmp_path):
    run = tiny_train(small_folder(tmp_path / "small", (6, 8)), tmp_path / "a")  # test_tiny resizes to 32
    assert json.loads((run / "config.json").read_text())["preprocess"]["native_size"] == [6, 8]
    run = tiny_train(small_folder(tmp_path / "large", (40, 48)), tmp_path / "b")
    assert "native_size" not in json.loads((run / "config.json").read_text())["preprocess"]
    run = tiny_train(tmp_path / "small", tmp_path / "c", native_size="off")
    assert "native_size" not in json.loads((run / "config.json").read_text())["preprocess"]


def test_finetune_records_it(tmp_path):
    data = small_folder(tmp_path / "small", (6, 8))
    run = tiny_train(
        data, tmp_path, mode="finetune", epochs=1, batch_size=8, augment="light", tensorboard=False
    )
    assert json.loads((run / "config.json").read_text())["preprocess"]["native_size"] == [6, 8]


def test_checkpoint_and_onnx_carry_it_and_older_files_load(tmp_path):
    from vestis.engine.export import export_onnx
    from vestis.engine.ort_runner import read_onnx_metadata
    from vestis.models.checkpoint import load_checkpoint, save_checkpoint
    from vestis.models.registry import create_model

    model = create_model("test_tiny", heads={"label": ["a", "b"]}, pretrained=False)
    model.preprocess = replace(model.preprocess, native_size=(6, 8))
    save_checkpoint(tmp_path / "run", model)
    loaded, _ = load_checkpoint(tmp_path / "run")
    assert loaded.preprocess == model.preprocess
    export_onnx(loaded, tmp_path / "m.onnx")
    assert Preprocess.from_dict(read_onnx_metadata(tmp_path / "m.onnx")["preprocess"]).native_size == (6, 8)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["preprocess"]["native_size"]  # as written before the field existed
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert load_checkpoint(tmp_path / "run")[0].preprocess.native_size is None


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_prediction_uses_the_recorded_size(tmp_path, runtime):
    """A sharp input predicts exactly as its downscaled copy does; without the field it would not."""
    import vestis

    run = tiny_train(small_folder(tmp_path / "small", (6, 8)), tmp_path)
    big = tmp_path / "big.png"
    noise((60, 80), 5).save(big)
    down = tmp_path / "down.png"
    Image.open(big).resize((6, 8), Image.Resampling.BOX).save(down)
    model = vestis.load(run, runtime=runtime, cache_dir=tmp_path / "cache")
    assert model.preprocess.native_size == (6, 8)
    e = model.embed([str(big), str(down)])
    assert np.allclose(e[0], e[1], atol=1e-6)
    config = json.loads((run / "config.json").read_text())
    del config["preprocess"]["native_size"]
    (run / "config.json").write_text(json.dumps(config))
    e = vestis.load(run, runtime=runtime, cache_dir=tmp_path / "cache").embed([str(big), str(down)])
    assert not np.allclose(e[0], e[1], atol=1e-3)
