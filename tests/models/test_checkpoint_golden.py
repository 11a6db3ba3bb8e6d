"""Golden files: the bundled model's config must keep loading, with the structure it has today.

``golden/default_config_structure.json`` is a frozen copy of the important structure of
``vestis/assets/default/config.json`` as :func:`read_config` returns it (keys, backbone, heads and classes,
preprocessing, head); ``golden/format1_config.json`` is a frozen copy of that format-1 file, so the migration
stays tested after the bundled model is retrained. Regenerate the structure file deliberately, after a
reviewed format change, with ``VESTIS_UPDATE_GOLDEN=1 pytest tests/models/test_checkpoint_golden.py``."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from vestis.models.checkpoint import BUNDLED, FORMAT, load_checkpoint, read_config, resolve_data_load

GOLDEN = Path(__file__).parent / "golden"
STRUCTURE = GOLDEN / "default_config_structure.json"


def structure(config: dict) -> dict:
    data = config["data"]
    return {
        "format": config["format"],
        "keys": sorted(config),
        "backbone": config["backbone"],
        "pretrained": config["pretrained"],
        "includes_backbone": config["includes_backbone"],
        "head": config["head"],
        "heads": config["heads"],
        "preprocess": config["preprocess"],
        "data_keys": sorted(data),
        "data_load": {k: v for k, v in data["load"].items() if k not in ("source", "images")},
        "paths_relative_to": data.get("paths_relative_to"),
        "metrics_keys": sorted(config["metrics"]),
        "validation_heads": sorted(config["metrics"].get("validation", {})),
    }


def _read_quietly(run_dir) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the bundled config has no key this version does not know
        return read_config(run_dir)


def test_bundled_config_matches_golden_structure():
    got = structure(_read_quietly(BUNDLED))
    if os.environ.get("VESTIS_UPDATE_GOLDEN"):
        STRUCTURE.write_text(json.dumps(got, indent=2) + "\n")
    assert got == json.loads(STRUCTURE.read_text())
    assert got["format"] == FORMAT


def test_frozen_format_1_config_still_reads_and_migrates(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    shutil.copy(GOLDEN / "format1_config.json", run / "config.json")
    raw = json.loads((run / "config.json").read_text())
    assert raw["format"] == 1
    got = _read_quietly(run)
    assert got["migrated_from"] == 1 and got["format"] == FORMAT
    assert got["data"]["paths_relative_to"] == "cwd"
    assert got["heads"] == raw["heads"] and got["preprocess"] == raw["preprocess"]


def test_format_1_data_path_resolves_from_the_training_working_directory(tmp_path, monkeypatch):
    """The bundled model was trained from the repository root with ``../shared/data/...``."""
    repo = tmp_path / "repo"
    run = repo / "vestis" / "assets" / "default"
    run.mkdir(parents=True)
    shutil.copy(GOLDEN / "format1_config.json", run / "config.json")
    source = json.loads((run / "config.json").read_text())["data"]["load"]["source"]
    (repo / source).mkdir(parents=True)
    monkeypatch.chdir(repo)
    assert resolve_data_load(run, read_config(run))["source"] == source
    monkeypatch.chdir(run)
    with pytest.raises(FileNotFoundError, match="pass --data"):
        resolve_data_load(run, read_config(run))


def test_bundled_model_loads():
    model, config = load_checkpoint(None)
    assert (
        model.classes == config["heads"] and model.preprocess.input_size == config["preprocess"]["input_size"]
    )
