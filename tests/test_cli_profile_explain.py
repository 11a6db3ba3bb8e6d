"""vestis profile / explain / evaluate --explain, and the from-scratch CNN through the fine-tuning trainer."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vestis.cli import main


def test_profile_backbone_json(capsys):
    assert main(["profile", "vestis_cnn_s", "--no-speed", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["name"] == "vestis_cnn_s" and got["input_size"] == 96
    assert 65e6 < got["macs"] < 75e6 and got["flops"] == 2 * got["macs"]
    assert [s["stride"] for s in got["stages"]] == [2, 4, 8, 16, 32] and got["cpu"] is None


def test_profile_text_with_speed_and_input(capsys):
    assert main(["profile", "test_tiny", "--input", "64", "--seconds", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "test_tiny at 64x64" in out and "batch 32:" in out and "cores" in out


def test_profile_unknown(capsys):
    assert main(["profile", "no_such_net", "--no-speed"]) == 2
    assert "unknown backbone" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    from tests.conftest import COLOURS, make_image, stable_seed

    root = tmp_path_factory.mktemp("cnn")
    data = root / "colours"
    for split, k in {"train": 8, "validation": 3, "test": 3}.items():
        for c, rgb in COLOURS.items():
            for i in range(k):
                make_image(data / split / c / f"{c}{i}.png", rgb, seed=stable_seed(split, c, i))
    args = ["train", str(data), "--out", str(root / "run"), "--backbone", "vestis_cnn_s", "--no-pretrained"]
    args += ["--mode", "finetune", "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-tensorboard"]
    assert main([*args, "--quiet", "--cache-dir", str(root / "cache")]) == 0
    return root


def test_cnn_trains_from_scratch_and_profiles(cnn_run, capsys):
    config = json.loads((cnn_run / "run" / "config.json").read_text())
    assert config["backbone"] == "vestis_cnn_s" and config["pretrained"] is False
    capsys.readouterr()
    assert main(["profile", str(cnn_run / "run"), "--no-speed", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["head_params"] == 512 * 3 + 3 and got["input_size"] == 96


def test_explain_cli_and_api(cnn_run, capsys):
    import vestis

    image = cnn_run / "colours" / "test" / "red" / "red0.png"
    out = cnn_run / "cam.png"
    assert (
        main(["explain", str(cnn_run / "run"), str(image), "--out", str(out), "--class", "green", "--json"])
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["class"] == "green" and row["head"] == "label" and row["out"] == str(out)
    with Image.open(out) as im:
        assert im.height >= 224 and im.width == 2 * im.height  # crop | overlay
    e = vestis.load(cnn_run / "run", runtime="torch").explain(str(image))
    assert e.heatmap.shape == (96, 96) and e.cls == e.predicted and e.overlay.shape == (96, 96, 3)
    several = cnn_run / "cams"
    args = [
        "explain",
        str(cnn_run / "run"),
        str(image),
        str(image.with_name("red1.png")),
        "--out",
        str(several),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in several.iterdir()) == ["red0-cam.png", "red1-cam.png"]
    assert main(["explain", str(cnn_run / "run"), str(image), "--head", "nope"]) == 2


def test_evaluate_explain(cnn_run):
    out = cnn_run / "eval"
    run = str(cnn_run / "run")
    assert (
        main(["evaluate", run, "--explain", "3", "--quiet", "--out", str(out), "--cache-dir", str(cnn_run)])
        == 0
    )
    assert (out / "errors_label.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["notes"] == []
