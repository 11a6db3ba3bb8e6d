"""End to end through the command line: train -> evaluate -> predict on synthetic data (seconds)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_image
from vestis.cli import main


@pytest.fixture
def trained(colour_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VESTIS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            str(colour_folder),
            "--out",
            str(run),
            "--backbone",
            "test_tiny",
            "--epochs",
            "10",
            "--lr",
            "0.01",
            "--workers",
            "0",
            "--quiet",
        ]
    )
    assert rc == 0
    return run


def test_train_evaluate_predict(trained, colour_folder, tmp_path, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained), "--split", "test"]) == 0
    out = capsys.readouterr().out
    for name in ("blue", "green", "red", "top-1", "macro-F1"):
        assert name in out  # the per-class table, not only totals
    assert "top-3" not in out  # k >= number of classes is meaningless
    metrics = json.loads((trained / "eval-test" / "metrics.json").read_text())
    assert metrics["heads"]["label"]["n"] == 12
    assert (trained / "eval-test" / "confusion_label.png").stat().st_size > 1000
    assert (trained / "eval-test" / "report.md").exists()

    good = colour_folder / "test" / "red" / "red0.png"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    rc = main(
        [
            "predict",
            str(good),
            str(bad),
            str(tmp_path / "missing.png"),
            "--model",
            str(trained),
            "--json",
            "--top-k",
            "2",
            "--workers",
            "0",
        ]
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 1  # some inputs failed
    assert [x["input"] for x in lines] == [str(good), str(bad), str(tmp_path / "missing.png")]
    assert set(lines[0]) == {"input", "predictions"} and len(lines[0]["predictions"]["label"]) == 2
    assert set(lines[0]["predictions"]["label"][0]) == {"label", "score"}
    assert lines[0]["predictions"]["label"][0]["label"] == "red"
    assert set(lines[1]) == {"input", "error"} and "not an image" in lines[1]["error"]
    assert lines[2]["error"] == "file not found"

    csv = tmp_path / "out.csv"
    assert (
        main(
            [
                "predict",
                str(colour_folder / "test"),
                "--model",
                str(trained),
                "--csv",
                str(csv),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(csv.read_text().splitlines()) == 1 + 12 * 3


def test_evaluate_on_other_data(trained, tmp_path, capsys):
    other = tmp_path / "other"
    for i in range(3):
        make_image(other / "red" / f"{i}.png", (220, 30, 30), seed=100 + i)
        make_image(other / "purple" / f"{i}.png", (150, 30, 150), seed=200 + i)
    assert (
        main(["evaluate", str(trained), "--data", str(other), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    )
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["heads"]["label"]["n"] == 3  # purple is unknown to the model: reported, not scored
    assert any("purple" in n for n in report["notes"])


def test_errors_are_clear(colour_folder, tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope"), "--backbone", "test_tiny"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    # real data, so that training gets as far as reading the backbone name
    out = tmp_path / "run"
    args = ["train", str(colour_folder), "--out", str(out), "--backbone", "unknown_net_x", "--workers", "0"]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'unknown_net_x'" in err
    assert "Registered (offline):" in err and "test_tiny" in err and "tf_efficientnet_lite0" in err
    assert not (out / "config.json").exists()
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path), "--loss", "hinge"])
    assert main(["predict", "x.jpg", "--model", str(tmp_path)]) == 2
    assert "not a vestis model" in capsys.readouterr().err


def test_models_and_inspect(colour_folder, capsys):
    assert main(["models"]) == 0
    assert "tf_efficientnet_lite0" in capsys.readouterr().out
    assert main(["data", "inspect", str(colour_folder)]) == 0
    out = capsys.readouterr().out
    assert "red" in out and "validation" in out


def test_evaluate_ensemble_averages_probabilities(trained, colour_folder, tmp_path, capsys):
    other = tmp_path / "other"
    assert (
        main(
            [
                "train",
                str(colour_folder),
                "--out",
                str(other),
                "--backbone",
                "test_tiny",
                "--epochs",
                "3",
                "--lr",
                "0.01",
                "--head",
                "mlp",
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    import numpy as np

    from vestis.evaluate.runner import evaluate_run

    reports = [evaluate_run(r, quiet=True, out=tmp_path / f"ev{k}") for k, r in enumerate((trained, other))]
    both = evaluate_run([trained, other], quiet=True)
    assert (trained / "eval-test-ensemble" / "report.md").exists()
    assert both["views"] == reports[0]["views"]  # the first run's test-time views, for every member
    p = [np.array(r["heads"]["label"]["log_loss"]) for r in reports]
    assert both["heads"]["label"]["n"] == 12 and both["heads"]["label"]["log_loss"] != p[0]
    # the mean of two probability vectors: its log loss is at most the mean of theirs (log is concave)
    assert both["heads"]["label"]["log_loss"] <= (p[0] + p[1]) / 2 + 1e-9
    capsys.readouterr()
    assert main(["evaluate", str(trained), str(other), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["label"]["n"] == 12

    staged = tmp_path / "two"
    (staged / "train" / "a").mkdir(parents=True)
    for c in ("a", "b"):
        for i in range(4):
            make_image(
                staged / "train" / c / f"{c}{i}.png", (200, 20, 20) if c == "a" else (20, 20, 200), seed=i
            )
    assert (
        main(
            [
                "train",
                str(staged),
                "--out",
                str(tmp_path / "ab"),
                "--backbone",
                "test_tiny",
                "--epochs",
                "2",
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    with pytest.raises(ValueError, match="classes differ"):
        evaluate_run([trained, tmp_path / "ab"], quiet=True)

    # the same ensemble predicts: --model repeated, the JSON contract unchanged
    image = str(sorted((colour_folder / "test" / "red").iterdir())[0])
    capsys.readouterr()
    assert (
        main(["predict", image, "--model", str(trained), "--model", str(other), "--json", "--top-k", "3"])
        == 0
    )
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert set(line) == {"input", "predictions"} and line["predictions"]["label"][0]["label"] == "red"
    singles = []
    for r in (trained, other):
        assert main(["predict", image, "--model", str(r), "--json", "--top-k", "3"]) == 0
        singles.append(
            {p["label"]: p["score"] for p in json.loads(capsys.readouterr().out)["predictions"]["label"]}
        )
    for p in line["predictions"]["label"]:
        assert p["score"] == pytest.approx((singles[0][p["label"]] + singles[1][p["label"]]) / 2, abs=2e-6)
    assert main(["predict", image, "--model", str(trained), "--model", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err
    assert "classes differ" in err and str(tmp_path / "ab") in err  # the error names the run
