"""ONNX export and the ONNX Runtime runner, on the tiny test backbone (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tests.conftest import make_image  # noqa: E402
from vestis.engine.export import export_onnx  # noqa: E402
from vestis.engine.infer import infer  # noqa: E402
from vestis.engine.ort_runner import OnnxRunner, read_onnx_metadata  # noqa: E402
from vestis.engine.torch_runner import TorchRunner  # noqa: E402
from vestis.models.registry import create_model  # noqa: E402

# deliberately not in alphabetical order: the order of heads and classes must survive the round trip
HEADS = {"type": ["shirt", "dress", "hat"], "colour": ["red", "blue"]}
CONFIG = {"metrics": {"validation": {"type": {"n": 3, "top1": 0.5}}}}


def crops(n: int, size: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def colour_images(root: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` small PNGs of random colours (sizes vary, so the loader resizes and crops) and a label each."""
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for i in range(n):
        colour = rng.integers(0, 256, 3)
        size = (int(rng.integers(30, 60)), int(rng.integers(30, 60)))
        paths.append(str(make_image(root / f"img{i}.png", colour, size=size, seed=i)))
        labels.append(HEADS["type"][i % 3])
    return paths, labels


@pytest.fixture(scope="module")
def model():
    return create_model("test_tiny", heads=HEADS)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    report = export_onnx(model, out, config=CONFIG, source="runs/tiny")
    return out, report


def test_export_matches_pytorch_with_a_dynamic_batch(model, exported):
    path, report = exported
    runner = OnnxRunner(path, device="cpu")
    reference = TorchRunner(model, device="cpu", precision="fp32")
    for n in (1, 5):
        x = crops(n, seed=n)
        probs, feats = runner(x)
        want_probs, want_feats = reference(x)
        assert list(probs) == list(HEADS)
        for head, classes in HEADS.items():
            assert probs[head].shape == (n, len(classes)) and probs[head].dtype == np.float32
            np.testing.assert_allclose(probs[head], want_probs[head], atol=1e-5)
            np.testing.assert_allclose(probs[head].sum(1), 1.0, atol=1e-5)
        assert feats.shape == (n, 16) and feats.dtype == np.float32
        np.testing.assert_allclose(feats, want_feats, atol=1e-4, rtol=1e-4)
    assert report["parity_source"] == "synthetic" and report["parity_images"] > 0
    assert 0 <= report["parity_max_abs_diff"] < 1e-5
    assert (
        report["precision"] == "fp32"
        and report["path"] == str(path)
        and report["bytes"] == path.stat().st_size
    )


def test_metadata_round_trip(model, exported):
    path, report = exported
    card = read_onnx_metadata(path)
    assert card["format"] == 1 and card["precision"] == "fp32"
    assert list(card["heads"]) == list(HEADS) and card["heads"] == HEADS
    assert card["outputs"] == {"type": "probs_0", "colour": "probs_1"}
    assert card["embedding"] == {
        "output": "features",
        "dim": 16,
        "normalized": False,
        "layer": "pooled backbone features (before the heads)",
    }
    assert card["preprocess"] == model.preprocess.to_dict()
    assert card["backbone"] == "test_tiny" and card["source"] == "runs/tiny"
    assert card["metrics"] == CONFIG["metrics"]
    assert card["parity"]["max_abs_diff"] == report["parity_max_abs_diff"]
    assert card["vestis_version"]

    runner = OnnxRunner(path)
    assert runner.card == card
    assert runner.runtime == "onnx" and runner.precision == "fp32" and runner.device == "cpu"
    assert runner.classes == HEADS and list(runner.classes) == list(HEADS)
    assert runner.preprocess == model.preprocess
    assert runner.num_features == 16
    assert runner.name == "onnx fp32 (CPUExecutionProvider)"
    # fp32 features mean what PyTorch fp32 features mean: the same cache / index key
    assert runner.fingerprint == TorchRunner(model, device="cpu", precision="fp32").fingerprint
    assert OnnxRunner(path, threads=1)(crops(2))[1].shape == (2, 16)


def test_the_callers_model_is_left_alone(tmp_path):
    m = create_model("test_tiny", heads=HEADS).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    export_onnx(m, tmp_path / "m.onnx")
    assert m.training
    assert all((m.state_dict()[k] == v).all() for k, v in before.items())


def test_infer_end_to_end_with_an_unreadable_file(model, exported, tmp_path):
    path, _ = exported
    paths, _ = colour_images(tmp_path / "imgs", 6)
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    items = paths[:3] + [str(bad)] + paths[3:]
    for workers in (0, 2):
        out = infer(OnnxRunner(path), items, batch_size=4, workers=workers)
        assert out.ok.tolist() == [True, True, True, False, True, True, True]
        assert list(out.errors) == [3] and out.errors[3]
        want = infer(TorchRunner(model, device="cpu", precision="fp32"), items, batch_size=4, workers=0)
        for head in HEADS:
            np.testing.assert_allclose(out.probs[head], want.probs[head], atol=1e-5)
        assert out.embeddings.shape == (7, 16)
    flipped = infer(OnnxRunner(path), paths, views=("plain", "flip"), workers=0)
    assert flipped.features.shape == (6, 2, 16)


def test_parity_on_real_images(model, tmp_path):
    paths, _ = colour_images(tmp_path / "imgs", 5)
    bad = tmp_path / "imgs" / "empty.png"
    bad.write_bytes(b"")
    report = export_onnx(model, tmp_path / "m.onnx", parity=paths + [str(bad)])
    assert report["parity_source"] == "images" and report["parity_images"] == 5
    assert report["parity_unreadable"] == 1
    assert report["parity_max_abs_diff"] < 1e-5


def test_int8_export_calibrates_and_validates(model, tmp_path):
    calibration, _ = colour_images(tmp_path / "train", 20, seed=1)
    val_paths, val_labels = colour_images(tmp_path / "val", 9, seed=2)
    out = tmp_path / "int8.onnx"
    report = export_onnx(
        model,
        out,
        int8=True,
        calibration=calibration,
        validation=(val_paths, {"type": val_labels}),
        config=CONFIG,
    )
    assert report["precision"] == "int8"
    assert set(report["top1_fp32"]) == {"type"} and set(report["top1_int8"]) == {"type"}
    assert 0 <= report["top1_int8"]["type"] <= 1 and report["n"] == {"type": 9}
    assert report["int8"]["calibration_images"] == 20
    assert report["parity_max_abs_diff"] < 1e-5 and report["int8_max_abs_diff"] < 0.5

    graph = onnx.load(str(out)).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    softmax_inputs = {i for n in graph.node if n.op_type == "Softmax" for i in n.input}
    assert not any(n.op_type == "DequantizeLinear" and set(n.output) & softmax_inputs for n in graph.node)

    card = read_onnx_metadata(out)
    assert card["precision"] == "int8" and card["heads"] == HEADS
    assert (
        card["int8"]["top1_fp32"] == report["top1_fp32"] and card["int8"]["top1_int8"] == report["top1_int8"]
    )
    assert card["int8"]["n"] == {"type": 9} and card["int8"]["format"] == "QDQ"

    runner = OnnxRunner(out)
    assert runner.precision == "int8" and runner.name == "onnx int8 (CPUExecutionProvider)"
    probs, feats = runner(crops(3))
    np.testing.assert_allclose(probs["type"].sum(1), 1.0, atol=1e-5)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    assert runner.fingerprint != OnnxRunner(fp32["path"]).fingerprint  # int8 features are not fp32's
    assert feats.shape == (3, 16)


def test_int8_needs_readable_calibration_images_and_leaves_no_file(model, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        export_onnx(model, tmp_path / "a.onnx", int8=True)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="none of the 1 calibration images"):
        export_onnx(model, tmp_path / "a.onnx", int8=True, calibration=[str(bad)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png"]  # no output, no temporary file
    with pytest.raises(ValueError, match="labels for head"):
        export_onnx(
            model, tmp_path / "a.onnx", int8=True, calibration=[str(bad)], validation=([], {"nope": []})
        )


def test_an_ensemble_is_refused(model, tmp_path):
    from vestis.models.ensemble import Ensemble

    with pytest.raises(ValueError, match="one model at a time"):
        export_onnx(Ensemble([model, create_model("test_tiny", heads=HEADS)]), tmp_path / "e.onnx")
    assert not (tmp_path / "e.onnx").exists()


def test_same_padding_is_made_static_and_exact(tmp_path):
    """timm's TensorFlow-style 'same' convolutions and pools (the Lite backbones') export with constant
    padding: no shape arithmetic in the graph, and the same numbers (odd input size, -inf max-pool padding)."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
    from torch import nn

    from vestis.models.heads import HeadConfig, VestisModel
    from vestis.models.preprocess import Preprocess

    class Net(nn.Module):
        num_features = 8

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                Conv2dSame(3, 8, 3, stride=2),
                nn.ReLU(),
                MaxPool2dSame(3, stride=2),
                AvgPool2dSame(2, stride=2),
                Conv2dSame(8, 8, 5, stride=2, dilation=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )

        def forward(self, x):
            return self.body(x)

    pre = Preprocess(input_size=37, crop_pct=1.0)
    m = VestisModel(Net(), "same_net", pre, HEADS, HeadConfig(), pretrained=False).eval()
    out = tmp_path / "same.onnx"
    report = export_onnx(m, out)
    assert report["parity_max_abs_diff"] < 1e-5
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert not ops & {"Shape", "Ceil", "Gather"}
    x = crops(3, size=37)
    got, want = OnnxRunner(out)(x), TorchRunner(m, device="cpu", precision="fp32")(x)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)
    assert any(isinstance(mod, Conv2dSame) for mod in m.modules())  # the caller's model keeps its modules


def onnx_without_vestis(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def with_metadata(src: Path, dst: Path, value: str) -> Path:
    m = onnx.load(str(src))
    for p in list(m.metadata_props):
        if p.key == "vestis":
            p.value = value
    onnx.save(m, str(dst))
    return dst


def test_foreign_and_damaged_files_are_refused_by_name(exported, tmp_path):
    path, _ = exported
    plain = onnx_without_vestis(tmp_path / "plain.onnx")
    for read in (OnnxRunner, read_onnx_metadata):
        with pytest.raises(ValueError, match=r"plain\.onnx is not a vestis model \(no vestis metadata\)"):
            read(plain)

    data = path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    text = tmp_path / "text.onnx"
    text.write_text("hello, I am not a model\n")
    for bad in (truncated, empty, text):
        for read in (OnnxRunner, read_onnx_metadata):
            with pytest.raises(ValueError, match=bad.name):
                read(bad)

    garbled = with_metadata(path, tmp_path / "garbled.onnx", "{not json")
    with pytest.raises(ValueError, match=r"garbled\.onnx.*not valid JSON"):
        OnnxRunner(garbled)
    card = json.loads(json.dumps(read_onnx_metadata(path)))
    newer = with_metadata(path, tmp_path / "newer.onnx", json.dumps({**card, "format": 99}))
    with pytest.raises(ValueError, match=r"newer\.onnx.*newer vestis"):
        OnnxRunner(newer)
    no_heads = with_metadata(path, tmp_path / "noheads.onnx", json.dumps({**card, "heads": []}))
    with pytest.raises(ValueError, match=r"noheads\.onnx.*heads"):
        read_onnx_metadata(no_heads)
    wrong_output = {**card, "outputs": {"type": "probs_9", "colour": "probs_1"}}
    with pytest.raises(ValueError, match=r"output\.onnx.*probs_9"):
        OnnxRunner(with_metadata(path, tmp_path / "output.onnx", json.dumps(wrong_output)))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxRunner(tmp_path / "missing.onnx")


def test_runner_checks_its_input(exported):
    runner = OnnxRunner(exported[0])
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        runner(crops(2, size=24))
    with pytest.raises(ValueError, match="ensemble"):
        runner((crops(1), crops(1)))
    with pytest.raises(ValueError, match="device"):
        OnnxRunner(exported[0], device="tpu")
