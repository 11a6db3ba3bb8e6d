"""Messy input found by trying vestis as a new user: each ends in a one-line message, never a traceback, and
never loses the good input."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import make_image, train_tiny
from vestis.cli import main
from vestis.predict import expand_inputs


def test_existing_file_with_glob_characters_is_itself(tmp_path):
    f = make_image(tmp_path / "shirt[1].jpg", (200, 20, 20))
    q = make_image(tmp_path / "what?.png", (20, 20, 200))
    assert expand_inputs([str(f), str(q)]) == [(str(f), None), (str(q), None)]
    assert expand_inputs([str(tmp_path / "*.jpg")]) == [(str(f), None)]  # still a glob when no such file
    assert expand_inputs([str(tmp_path / "nothing[2].jpg")])[0][1] == "no file matches this pattern"


def test_symlink_loop_in_a_predicted_folder(tmp_path):
    shop = tmp_path / "shop"
    make_image(shop / "a.png", (200, 20, 20))
    make_image(shop / "sub" / "b.png", (20, 200, 20))
    os.symlink(shop, shop / "sub" / "loop")  # a link back up: must not recurse forever or list twice
    assert [p for p, _ in expand_inputs([str(shop)])] == [str(shop / "a.png"), str(shop / "sub" / "b.png")]


def test_train_out_is_a_file_fails_before_training(colour_folder, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a run")
    rc = main(["train", str(colour_folder), "--out", str(out), "--backbone", "test_tiny", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "is an existing file" in err and "Traceback" not in err
    assert out.read_text() == "not a run"


def test_predict_csv_pointing_at_a_directory(tmp_path, capsys):
    img = make_image(tmp_path / "a.png", (200, 20, 20))
    rc = main(["predict", str(img), "--csv", str(tmp_path), "--runtime", "torch"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a directory" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_while_loading_is_one_line(monkeypatch, capsys):
    import vestis.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["predict", "x.jpg"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: (run / "model.safetensors").write_bytes(b"\x00" * 10), "model.safetensors"),
        (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json"),
        (lambda run: (run / "config.json").write_text('{"format": 2'), "config.json"),
    ],
)
def test_damaged_run_is_a_one_line_error_with_exit_code_2(colour_folder, tmp_path, capsys, damage, message):
    run = tmp_path / "run"
    assert train_tiny(colour_folder, run, tmp_path / "c") == 0
    damage(run)
    capsys.readouterr()
    img = str(colour_folder / "test" / "red" / "red0.png")
    for argv in (["predict", img, "--model", str(run), "--runtime", "torch"], ["evaluate", str(run)]):
        assert main(argv) == 2  # 2: the command failed; 1 means "some inputs failed"
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_evaluate_from_another_directory(colour_folder, tmp_path, capsys, monkeypatch):
    """Data paths are stored relative to the run, so evaluating from elsewhere finds them; a moved data set
    gives a message that suggests --data."""
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(colour_folder, tmp_path)
    assert train_tiny(rel, "run", "c") == 0
    elsewhere = tmp_path / "deep" / "er"
    elsewhere.mkdir(parents=True)
    capsys.readouterr()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", "../../run", "--quiet", "--cache-dir", "../../c"]) == 0
    assert json.loads(capsys.readouterr().out)["label"]["n"] == 12
    colour_folder.rename(tmp_path / "moved")
    assert main(["evaluate", "../../run", "--quiet"]) == 2
    assert "--data" in capsys.readouterr().err
