"""TrainConfig: flat to use, grouped to store, runtime options kept out of what a run stores."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from vestis.train.config import GROUPS, RUNTIME_FIELDS, STORED_EXTRAS, TrainConfig
from vestis.train.resume import resumed_config, state_config


def test_every_option_has_one_group_and_class_defaults_stay():
    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted([*grouped, "mode"]) == sorted(f.name for f in fields(TrainConfig))
    assert set(GROUPS["runtime"]) == set(RUNTIME_FIELDS)
    # the CLI reads defaults off the class
    assert (TrainConfig.backbone, TrainConfig.head, TrainConfig.hidden) == (
        "tf_efficientnet_lite0",
        "auto",
        512,
    )
    assert TrainConfig.backbone_lr_scale == 0.3 and TrainConfig.out == "runs/train"


def test_stored_shape_is_grouped_without_runtime_options():
    cfg = TrainConfig(
        data="d",
        mode="finetune",
        lr=0.01,
        c=[1.0],
        augment="light",
        workers=3,
        cache_dir="/c",
        out="runs/x",
        quiet=True,
        compile=True,
    )
    d = cfg.to_dict()
    assert list(d) == ["mode", "dataset", "model", "training", "fast", "finetune"]
    assert d["mode"] == "finetune" and d["dataset"]["data"] == "d" and d["training"]["lr"] == 0.01
    assert d["fast"]["c"] == [1.0] and d["finetune"]["augment"] == "light" and d["model"]["backbone"]
    stored = json.dumps(d)
    for name in RUNTIME_FIELDS:
        assert f'"{name}"' not in stored
    assert cfg.to_dict(runtime=True)["runtime"]["workers"] == 3
    again = TrainConfig.from_dict(cfg.to_dict(runtime=True))
    assert again == cfg
    assert TrainConfig.from_dict(d) == TrainConfig(
        data="d", mode="finetune", lr=0.01, c=[1.0], augment="light"
    )


def test_from_dict_takes_flat_nested_and_mixed_and_rejects_misplaced():
    flat = {"data": "d", "mode": "finetune", "lr": 0.01, "workers": 2}
    nested = {"mode": "finetune", "dataset": {"data": "d"}, "training": {"lr": 0.01}, "workers": 2}
    assert TrainConfig.from_dict(flat) == TrainConfig.from_dict(nested)
    with pytest.raises(ValueError, match=r"group 'fast'.*\['lr'\]"):
        TrainConfig.from_dict({"data": "d", "fast": {"lr": 0.1}})
    with pytest.raises(ValueError, match="given twice"):
        TrainConfig.from_dict({"data": "d", "lr": 0.1, "training": {"lr": 0.2}})
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"dataset": {"data": "d"}, "epochz": 3})


def test_old_flat_stored_config_still_reads():
    """Older runs (the frozen format-1 copy of the first bundled model) store a flat config, runtime options and
    extras included."""
    golden = Path(__file__).parents[1] / "models" / "golden" / "format1_config.json"
    stored = json.loads(golden.read_text())["train_config"]
    assert "workers" in stored and "views" in stored and "dataset" not in stored
    cfg = TrainConfig.from_stored(stored, workers=0)
    assert cfg.backbone == "lite0" and cfg.mode == "finetune" and cfg.seed == 1 and cfg.workers == 0
    assert cfg.out == TrainConfig.out  # runtime options are not read from a run
    grouped = {**cfg.to_dict(), **{k: stored[k] for k in STORED_EXTRAS if k in stored}}
    assert TrainConfig.from_stored(grouped, workers=0) == cfg
    with pytest.warns(UserWarning, match="retired_option"):
        TrainConfig.from_stored({**stored, "retired_option": 1})


def test_resume_takes_runtime_options_as_given_and_keeps_the_rest(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    run = TrainConfig(data="data", mode="finetune", lr=0.02, epochs=4, workers=4, out="runs/a", quiet=True)
    stored = state_config(run)
    assert stored["dataset"]["data"] == str(data)  # absolute: the run may resume from elsewhere
    assert "runtime" not in stored
    monkeypatch.chdir(data)
    given = TrainConfig(data=".", mode="finetune", resume="../runs/a", workers=0, device="cpu")
    got = resumed_config(given, stored)
    assert (got.lr, got.epochs, got.data) == (0.02, 4, ".")
    assert (got.workers, got.device, got.quiet, got.out) == (0, "cpu", False, "../runs/a")
    with pytest.raises(ValueError, match=r"lr: stored 0.02, given 0.5"):
        resumed_config(TrainConfig(data=".", mode="finetune", resume="x", lr=0.5), stored)
    with pytest.raises(ValueError, match="data: stored"):
        resumed_config(TrainConfig(data="..", mode="finetune", resume="x"), stored)
    old = {
        **TrainConfig(data=str(data), mode="finetune", lr=0.02).to_dict(runtime=True)["dataset"],
        **{"mode": "finetune", "lr": 0.02, "epochs": 4, "workers": 4, "out": "runs/a", "resume": None},
    }
    assert resumed_config(given, old).lr == 0.02  # a flat state of an older vestis
