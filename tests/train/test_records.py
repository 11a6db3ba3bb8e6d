"""What fast and fine-tuned runs record about their data: one fingerprint, and every skipped input counted on
the console as in skipped.json."""

from __future__ import annotations

import json

import pytest

from tests.train.test_finetune import ft_cfg
from vestis.data import data_fingerprint, load_dataset
from vestis.data.images import file_digest
from vestis.train import TrainConfig, train


def run_cfg(mode: str, data, tmp_path, **kw) -> TrainConfig:
    if mode == "finetune":
        return ft_cfg(data, tmp_path, epochs=1, head_init="random", **kw)
    return TrainConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        backbone="test_tiny",
        head="linear",
        workers=0,
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


@pytest.mark.parametrize("mode", ["fast", "finetune"])
def test_console_counts_every_skipped_input_and_fingerprint_is_shared(colour_folder, tmp_path, capsys, mode):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # unreadable
    (colour_folder / "train" / "red" / "notes.txt").write_text("not an image")  # left out by the data loader
    summary = train(run_cfg(mode, colour_folder, tmp_path, quiet=False))
    run = tmp_path / "run"
    skipped = json.loads((run / "skipped.json").read_text())
    assert sorted(s["item"].rsplit("/", 1)[-1] for s in skipped) == ["broken.png", "notes.txt"]
    out = capsys.readouterr().out
    line = f"skipped 2 inputs: 1 unreadable image, 1 left out while reading the data (listed in {run}/skipped.json)"
    assert line in out
    assert summary["skipped"] == 2

    config = json.loads((run / "config.json").read_text())
    assert config["data"]["skipped"] == 2
    ds = load_dataset(str(colour_folder))
    digests = [file_digest(s.path.read_bytes()) for s in ds.samples]
    assert config["data"]["fingerprint"] == data_fingerprint(ds.samples, digests)  # the same in both modes
    assert config["data"]["counts"] == {"train": 31, "validation": 12, "test": 12}
