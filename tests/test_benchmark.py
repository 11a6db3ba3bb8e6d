"""`vestis benchmark`: one table, every runtime on the same images, top-1 beside each on a labelled folder."""

from __future__ import annotations

import json

import pytest

from tests.conftest import train_tiny
from vestis.benchmark import BenchmarkConfig, cpu_info, format_benchmark, labelled_images, run_benchmark
from vestis.cli import main


@pytest.fixture
def run(colour_folder, tmp_path):
    out = tmp_path / "run"
    assert train_tiny(colour_folder, out, tmp_path / "c", "--epochs", "5") == 0
    return out


def test_benchmark_rows_for_every_variant(run, colour_folder):
    pytest.importorskip("onnxruntime")
    cfg = BenchmarkConfig(
        images=str(colour_folder / "test"),
        batches=(1, 4),
        workers=0,
        progress=False,
        variants=("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"),
    )
    result = run_benchmark(str(run), cfg)
    assert result["labelled"] and result["images"] == 12
    got = {(r["variant"], r["batch"]) for r in result["rows"]}
    assert got == {(v, b) for v in ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8") for b in (1, 4)}
    for r in result["rows"]:
        assert r["model_images_per_s"] > 0 and r["end_to_end_images_per_s"] > 0 and 0 <= r["top1"] <= 1
    fp32 = {r["variant"]: r["top1"] for r in result["rows"] if r["batch"] == 4}
    assert fp32["onnx-fp32"] == fp32["torch-fp32"]  # same answers
    table = format_benchmark(result)
    assert "CPU:" in table and "onnx-int8" in table and "top-1" in table


def test_cli_benchmark_writes_json(run, colour_folder, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "benchmark",
                str(run),
                "--images",
                str(colour_folder / "test"),
                "--batch",
                "2",
                "--variants",
                "torch-fp32",
                "--workers",
                "0",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["batch"]) for r in rows] == [("torch-fp32", 2)]
    assert "torch-fp32" in capsys.readouterr().out


def test_unlabelled_folder_and_bad_options(tmp_path):
    from tests.conftest import make_image

    make_image(tmp_path / "a.png", (1, 2, 3))
    paths, labels = labelled_images(tmp_path)
    assert labels == [None] and len(paths) == 1
    with pytest.raises(ValueError, match="variants"):
        BenchmarkConfig(images=str(tmp_path), variants=("tensorrt",))
    with pytest.raises(FileNotFoundError):
        labelled_images(tmp_path / "nope")
    assert "cores" in cpu_info()
