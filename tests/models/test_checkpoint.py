from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from vestis.models import HeadConfig, create_model
from vestis.models.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    read_config,
    resolve_data_load,
    save_checkpoint,
)


def _model():
    torch.manual_seed(1)
    return create_model(
        "test_tiny", heads={"type": ["a", "b", "c"], "colour": ["x", "y"]}, head=HeadConfig("mlp", 8)
    )


def test_head_only_roundtrip(tmp_path):
    m = _model().eval()
    save_checkpoint(tmp_path, m, metrics={"validation": {"type": {"top1": 0.5}}}, data={"fingerprint": "abc"})
    cfg = read_config(tmp_path)
    assert cfg["heads"] == {"type": ["a", "b", "c"], "colour": ["x", "y"]}
    assert cfg["includes_backbone"] is False and cfg["data"]["fingerprint"] == "abc"
    assert cfg["vestis_version"] and cfg["preprocess"]["input_size"] == 32
    m2, _ = load_checkpoint(tmp_path)
    x = torch.randn(3, 3, 32, 32)
    for h in m.classes:
        assert torch.allclose(m(x)[h], m2(x)[h])
    assert not (tmp_path / "model.safetensors.tmp").exists()


def test_full_roundtrip_fp16(tmp_path):
    m = _model()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.1)  # a "fine-tuned" backbone that the registry cannot rebuild
    m.eval()
    save_checkpoint(tmp_path, m, include_backbone=True, dtype=torch.float16)
    m2, _ = load_checkpoint(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x)["type"], m2(x)["type"], atol=2e-2)


def test_refuses_changed_backbone_and_bad_files(tmp_path):
    m = _model()
    save_checkpoint(tmp_path, m)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["backbone_fingerprint"] = "0" * 16
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="backbone weights"):
        load_checkpoint(tmp_path)
    cfg["format"] = 99
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a vestis model"):
        load_checkpoint(tmp_path / "nothing")


def test_weights_are_safetensors_not_pickle(tmp_path):
    save_checkpoint(tmp_path, _model())
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert not raw.startswith(b"\x80") and b'"heads.h0.0.weight"' in raw[:4096]


# -- format versions, unknown keys, damaged files -------------------------------------------------------------


def _saved(tmp_path, **kwargs):
    run = tmp_path / "run"
    save_checkpoint(run, _model(), **kwargs)
    return run, json.loads((run / "config.json").read_text())


def _write(run, cfg) -> None:
    (run / "config.json").write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)


def test_plain_checkpoint_is_format_2_and_format_1_is_migrated_on_read(tmp_path):
    run, cfg = _saved(tmp_path, data={"source": "data/x", "load": {"source": "data/x", "images": None}})
    assert FORMAT == 3 and cfg["format"] == 2 and cfg["data"]["paths_relative_to"] == "run_dir"
    assert "head_types" not in cfg and "colour_stats" not in cfg
    cfg.update(format=1, data={"source": "data/x", "load": {"source": "data/x", "images": None}})
    _write(run, cfg)
    got = read_config(run)
    assert got["format"] == FORMAT and got["migrated_from"] == 1
    assert got["data"]["paths_relative_to"] == "cwd" and got["data"]["load"]["source"] == "data/x"
    model, _ = load_checkpoint(run)
    assert model.classes == _model().classes


def _layout_model(**kwargs):
    torch.manual_seed(2)
    heads = {"type": ["a", "b", "c"], "colour": ["x", "y"]}
    return create_model("test_tiny", heads=heads, head=HeadConfig("linear"), **kwargs).eval()


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("head_types", {"head_cfgs": {"colour": HeadConfig("mlp", 8)}}),
        ("colour_stats", {"colour_stats": True}),
    ],
)
def test_layout_keys_are_written_as_format_3_and_round_trip(tmp_path, key, kwargs):
    m = _layout_model(**kwargs)
    save_checkpoint(tmp_path, m)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["format"] == 3 == FORMAT and key in raw
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # format 3 knows these keys
        m2, got = load_checkpoint(tmp_path)
    assert got["format"] == 3 and "migrated_from" not in got
    x = torch.rand(2, 3, 32, 32)
    for h in m.classes:
        assert torch.allclose(m(x)[h], m2(x)[h], atol=1e-6)


def test_a_format_2_reader_reads_plain_checkpoints_and_refuses_format_3(tmp_path, monkeypatch):
    from vestis.models import run_config

    plain, _ = _saved(tmp_path)
    layout = tmp_path / "layout"
    save_checkpoint(layout, _layout_model(colour_stats=True))
    monkeypatch.setattr(run_config, "FORMAT", 2)  # the previous vestis
    assert read_config(plain)["format"] == 2
    with pytest.raises(CheckpointError, match=r"written by a newer vestis \(format 3.*upgrade vestis$"):
        read_config(layout)


def test_format_2_with_layout_keys_still_reads(tmp_path):
    """The vestis before format 3 wrote head_types / colour_stats under format 2."""
    save_checkpoint(tmp_path, _layout_model(head_cfgs={"colour": HeadConfig("mlp", 8)}))
    _write(tmp_path, {**json.loads((tmp_path / "config.json").read_text()), "format": 2})
    model, got = load_checkpoint(tmp_path)
    assert got["migrated_from"] == 2 and got["head_types"] == {"colour": HeadConfig("mlp", 8).to_dict()}
    assert model.head_cfgs == {"colour": HeadConfig("mlp", 8)}


def test_newer_format_asks_for_an_upgrade(tmp_path):
    run, cfg = _saved(tmp_path)
    _write(run, {**cfg, "format": FORMAT + 1})
    with pytest.raises(
        CheckpointError, match=rf"written by a newer vestis \(format {FORMAT + 1}.*upgrade"
    ) as e:
        read_config(run)
    message = str(e.value)
    assert message.startswith(str(run / "config.json") + ":") and "\n" not in message
    with pytest.raises(CheckpointError, match="upgrade vestis"):
        load_checkpoint(run)  # before any weights are looked at


def test_unknown_top_level_keys_warn_once_naming_file_and_keys(tmp_path):
    run, cfg = _saved(tmp_path)
    _write(run, {**cfg, "calibration": {"t": 1.5}, "zz_future": 1})
    with pytest.warns(UserWarning) as record:
        model, got = load_checkpoint(run)
    messages = [str(w.message) for w in record if "unknown keys" in str(w.message)]
    assert len(messages) == 1
    assert (
        str(run / "config.json") in messages[0]
        and "calibration" in messages[0]
        and "zz_future" in messages[0]
    )
    assert got["calibration"] == {"t": 1.5}  # kept, not acted on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_config(run)  # once: the second read is quiet


def _bad_preprocess(cfg):
    return {**cfg, "preprocess": {**cfg["preprocess"], "gamma": 2.2}}


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        (lambda cfg: '{"format": 2,\n "heads": {', r"not valid JSON \(line 2"),
        (lambda cfg: "", "empty"),
        (lambda cfg: [cfg], "expected a JSON object, got a list"),
        (lambda cfg: {k: v for k, v in cfg.items() if k != "heads"}, "no 'heads'"),
        (lambda cfg: {k: v for k, v in cfg.items() if k != "backbone"}, "no 'backbone'"),
        (lambda cfg: {k: v for k, v in cfg.items() if k != "format"}, "format None"),
        (lambda cfg: {**cfg, "heads": ["a", "b"]}, '"heads" must map'),
        (lambda cfg: {**cfg, "heads": {}}, '"heads" must map'),
        (lambda cfg: {**cfg, "heads": {"type": ["only"]}}, "at least 2 class names"),
        (lambda cfg: {**cfg, "heads": {"type": ["a", 2]}}, "at least 2 class names"),
        (lambda cfg: {**cfg, "heads": {"type": ["a", "a"]}}, "class names twice"),
        (_bad_preprocess, r"bad \"preprocess\": unknown preprocessing keys \['gamma'\]"),
        (lambda cfg: {**cfg, "preprocess": {**cfg["preprocess"], "crop_pct": 7}}, 'bad "preprocess"'),
        (lambda cfg: {**cfg, "preprocess": [224]}, 'bad "preprocess"'),
        (lambda cfg: {**cfg, "head": {"type": "transformer"}}, 'bad "head"'),
        (lambda cfg: {**cfg, "includes_backbone": "yes"}, "'includes_backbone' must be true or false"),
        (lambda cfg: {**cfg, "data": "data/x"}, "'data' must be an object"),
        (lambda cfg: {**cfg, "backbone": "no_such_net"}, "unknown backbone"),
    ],
)
def test_damaged_config_is_one_line_error_naming_the_file(tmp_path, damage, expect):
    run, cfg = _saved(tmp_path)
    _write(run, damage(cfg))
    with pytest.raises(CheckpointError, match=expect) as e:
        load_checkpoint(run)
    assert isinstance(e.value, ValueError)  # the CLI: "vestis CMD: error: ...", exit code 2
    assert str(run / "config.json") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        (lambda raw: raw[: len(raw) // 2], "not a readable safetensors file"),
        (lambda raw: raw[:5], "not a readable safetensors file"),
        (lambda raw: b"", "empty file"),
        (lambda raw: b"\x80\x04garbage pickle" * 10, "not a readable safetensors file"),
        (None, "missing"),
    ],
)
def test_damaged_weights_are_one_line_error_naming_the_file(tmp_path, damage, expect):
    run, _ = _saved(tmp_path)
    path = run / "model.safetensors"
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=expect) as e:
        load_checkpoint(run)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_weights_that_do_not_fit_name_the_file(tmp_path):
    run, cfg = _saved(tmp_path)
    _write(run, {**cfg, "heads": {**cfg["heads"], "type": ["a", "b", "c", "d"]}})
    with pytest.raises(CheckpointError, match="do not fit") as e:
        load_checkpoint(run)
    assert str(run / "model.safetensors") in str(e.value)
    _write(run, {**cfg, "heads": {"type": cfg["heads"]["type"]}})  # one head fewer: unexpected tensors
    with pytest.raises(CheckpointError, match="unexpected"):
        load_checkpoint(run)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    run, _ = _saved(tmp_path)
    atomic_write_text(run / "x.json", "{}")
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors", "x.json"]


# -- data paths relative to the run directory -----------------------------------------------------------------


def _data(source, images=None):
    return {
        "source": source,
        "load": {"source": source, "images": images, "labels": ["label"], "seed": 1},
        "fingerprint": "f",
    }


def test_data_paths_are_stored_relative_to_the_run_and_resolved_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "data" / "clothes").mkdir(parents=True)
    (tmp_path / "pics").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    given = _data("data/clothes", images="pics")
    save_checkpoint("runs/x", _model(), data=given)
    assert given == _data("data/clothes", images="pics")  # the caller's dict is not changed
    stored = read_config("runs/x")["data"]
    assert stored["source"] == stored["load"]["source"] == os.path.join("..", "..", "data", "clothes")
    assert stored["load"]["images"] == os.path.join("..", "..", "pics")
    assert stored["load"]["labels"] == ["label"] and stored["fingerprint"] == "f"

    monkeypatch.chdir(tmp_path / "elsewhere")
    run = os.path.join("..", "runs", "x")
    load = resolve_data_load(run, read_config(run))
    assert Path(load["source"]).resolve() == (tmp_path / "data" / "clothes").resolve()
    assert Path(load["images"]).resolve() == (tmp_path / "pics").resolve()
    assert load["labels"] == ["label"] and load["seed"] == 1


def test_absolute_data_paths_stay_absolute(tmp_path):
    data = tmp_path / "clothes"
    data.mkdir()
    run, cfg = _saved(tmp_path, data=_data(str(data)))
    assert cfg["data"]["load"]["source"] == str(data)
    assert resolve_data_load(run, read_config(run))["source"] == str(data)


def test_missing_data_suggests_data_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint("run", _model(), data=_data("gone/clothes"))
    with pytest.raises(FileNotFoundError, match="--data") as e:
        resolve_data_load("run", read_config("run"))
    assert "the run's data ../gone/clothes is not found from here" in str(e.value)
    with pytest.raises(ValueError, match="records no data source; pass --data"):
        resolve_data_load("run", {"data": {}})


def test_format_1_data_paths_are_tried_from_the_run_then_as_given(tmp_path, monkeypatch):
    (tmp_path / "data" / "clothes").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    save_checkpoint("runs/x", _model())
    cfg = json.loads(Path("runs/x/config.json").read_text())
    _write(Path("runs/x"), {**cfg, "format": 1, "data": _data("data/clothes")})  # relative to the cwd
    assert resolve_data_load("runs/x", read_config("runs/x"))["source"] == "data/clothes"
    (tmp_path / "runs" / "x" / "data" / "clothes").mkdir(parents=True)  # run-relative reading wins
    assert resolve_data_load("runs/x", read_config("runs/x"))["source"] == os.path.join(
        "runs", "x", "data", "clothes"
    )
    monkeypatch.chdir(tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="pass --data"):
        resolve_data_load(
            "elsewhere", {"format": 2, "data": {**_data("data/clothes"), "paths_relative_to": "cwd"}}
        )
