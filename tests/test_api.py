"""The Python API: vestis.load / vestis.train / Model, on a tiny backbone and synthetic images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import vestis
from tests.conftest import make_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fast-mode run on separable colours, trained through the API."""
    from tests.conftest import COLOURS

    root = tmp_path_factory.mktemp("api")
    data = root / "colours"
    for s, (split, k) in enumerate({"train": 8, "validation": 3, "test": 3}.items()):
        for c, (name, rgb) in enumerate(COLOURS.items()):
            for i in range(k):
                make_image(data / split / name / f"{name}{i}.png", rgb, seed=100 * s + 10 * c + i)
    model = vestis.train(
        data,
        out=root / "run",
        backbone="test_tiny",
        head="linear",
        quiet=True,
        workers=0,
        cache_dir=str(root / "cache"),
        runtime="torch",
    )
    return model, data, root


def test_train_returns_a_model(trained):
    model, data, root = trained
    assert isinstance(model, vestis.Model)
    assert model.classes == {"label": ["blue", "green", "red"]} and model.heads == ["label"]
    assert model.preprocess.input_size == 32
    assert model.card["backbone"] == "test_tiny" and "validation" in model.metrics
    assert "torch" in model.runtime


def test_predict_follows_the_json_contract(trained):
    model, data, _ = trained
    images = sorted((data / "test" / "red").iterdir())
    out = model.predict([str(images[0]), str(data / "test" / "blue"), str(data / "nope.png")], top_k=2)
    assert len(out) == 1 + 3 + 1
    assert set(out[0]) == {"input", "predictions"} and set(out[-1]) == {"input", "error"}
    preds = out[0]["predictions"]["label"]
    assert [set(p) for p in preds] == [{"label", "score"}] * 2 and preds[0]["label"] == "red"
    assert json.loads(json.dumps(out)) == out  # plain JSON types
    assert model.predict(str(images[0]))[0]["input"] == str(images[0])  # one string is one input


def test_embed_is_normalised_and_names_bad_inputs(trained):
    model, data, _ = trained
    paths = [str(p) for p in sorted((data / "test").rglob("*.png"))]
    e = model.embed(paths)
    assert e.shape == (len(paths), model.embedding_dim) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    same = e[:3] @ e[:3].T  # the three reds are closer to each other than to a blue
    assert same[0, 1] > e[0] @ e[-1]
    bad = data / "bad.png"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.png"):
        model.embed([paths[0], str(bad)])
    got = model.embed_items([paths[0], str(bad)])
    assert got.inputs == [paths[0]] and list(got.errors) == [str(bad)] and np.allclose(got.vectors[0], e[0])


def test_evaluate_returns_the_report(trained, tmp_path):
    model, _, _ = trained
    report = model.evaluate(split="test", out=tmp_path / "ev")
    assert report["heads"]["label"]["n"] == 9 and report["heads"]["label"]["top1"] >= 0.8
    assert (tmp_path / "ev" / "report.md").exists()


def test_load_a_run_and_bad_sources(trained, tmp_path):
    model, _, root = trained
    again = vestis.load(root / "run", runtime="torch")
    assert again.classes == model.classes
    with pytest.raises((ValueError, FileNotFoundError)):
        vestis.load(tmp_path / "not-a-run", runtime="torch")
    with pytest.raises(ValueError, match="runtime"):
        vestis.load(root / "run", runtime="tensorrt")


def test_import_vestis_is_light():
    """`import vestis` loads no torch (the facade is imported on first use)."""
    code = "import sys, vestis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


NO_TORCH = """
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm", "safetensors"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, NoTorch())
import vestis
from vestis.cli import main
model = vestis.load(sys.argv[1])
preds = model.predict(sys.argv[2:], top_k=2)
code = main(["predict", "--model", sys.argv[1], *sys.argv[2:], "--json", "--top-k", "2"])
assert "torch" not in sys.modules, "torch got imported"
print(json.dumps({"api": preds, "code": code, "runtime": model.runtime}))
"""


def test_export_and_predict_without_torch(trained, tmp_path, capsys):
    """The API exports (parity printed by the CLI); the .onnx file then predicts through the API and the CLI
    in a process where torch cannot be imported, with the same answers as PyTorch."""
    pytest.importorskip("onnxruntime")
    from vestis.cli import main

    model, data, root = trained
    onnx = tmp_path / "m.onnx"
    assert main(["export", str(root / "run"), "--out", str(onnx)]) == 0
    printed = capsys.readouterr().out
    assert "parity vs PyTorch fp32" in printed and onnx.exists()
    images = [str(p) for p in sorted((data / "test" / "green").iterdir())[:2]]
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(onnx), *images, str(data / "missing.png")],
        capture_output=True,
        text=True,
        cwd=str(root.parent),
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["code"] == 1 and "onnx" in got["runtime"]  # 1: one input (missing.png) failed
    ref = model.predict(images + [str(data / "missing.png")], top_k=2)
    for a, b in zip(got["api"], ref, strict=True):
        assert a["input"] == b["input"] and ("error" in a) == ("error" in b)
        for p, q in zip(
            a.get("predictions", {}).get("label", []), b.get("predictions", {}).get("label", []), strict=True
        ):
            assert p["label"] == q["label"] and abs(p["score"] - q["score"]) < 1e-4
    cli_lines = [json.loads(x) for x in out.stdout.splitlines()[:-1]]
    assert [set(x) for x in cli_lines] == [set(x) for x in got["api"]]


def test_runtime_auto_exports_once_and_matches_torch(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    model, data, root = trained
    auto = vestis.load(root / "run", runtime="auto", device="cpu", cache_dir=tmp_path / "c")
    assert "onnx" in auto.runtime and list((tmp_path / "c" / "onnx").glob("*.onnx"))
    images = [str(p) for p in sorted((data / "test").rglob("*.png"))]
    a, b = auto.predict(images, top_k=3), model.predict(images, top_k=3)
    assert [r["predictions"]["label"][0]["label"] for r in a] == [
        r["predictions"]["label"][0]["label"] for r in b
    ]
    assert np.allclose(auto.embed(images), model.embed(images), atol=1e-5)
    again = vestis.load(root / "run", runtime="auto", device="cpu", cache_dir=tmp_path / "c")
    assert again.runner.path == auto.runner.path  # the cached export is reused
    # ... and found without importing torch at all
    code = NO_TORCH.split("import vestis")[0] + (
        "import vestis\n"
        f"m = vestis.load({str(root / 'run')!r}, cache_dir={str(tmp_path / 'c')!r})\n"
        "assert 'torch' not in sys.modules and 'onnx' in m.runtime\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_int8_export_measures_validation_top1(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    model, _, _ = trained
    report = model.export(tmp_path / "q.onnx", int8=True, calibrate=20)
    assert report["precision"] == "int8" and set(report["top1_int8"]) == {"label"}
    assert report["n"]["label"] == 9 and 0 <= report["top1_int8"]["label"] <= 1
    q = vestis.load(tmp_path / "q.onnx")
    assert q.card["int8"]["top1_fp32"] == report["top1_fp32"] and q.runner.precision == "int8"
