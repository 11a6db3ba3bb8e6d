"""The same finetune command under torchrun: two CPU processes (gloo), DistributedDataParallel, rank-0 output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_finetune import rows
from vestis.cli import main
from vestis.models.checkpoint import load_checkpoint


def test_torchrun_two_processes_matches_single_process_checkpoint(colour_folder, tmp_path):
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"not an image")  # skipped in whichever rank
    common = ["--mode", "finetune", "--backbone", "test_tiny", "--epochs", "2", "--workers", "0", "--quiet",
              "--precision", "fp32", "--batch-size", "4", "--no-tensorboard", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["train", str(colour_folder), "--out", str(single), *common]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vestis", "train", str(colour_folder), "--out", str(multi), *common]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert len(printed) == 1  # only rank 0 reports

    ws, wm = load_file(str(single / "model.safetensors")), load_file(str(multi / "model.safetensors"))
    assert {k: v.shape for k, v in ws.items()} == {k: v.shape for k, v in wm.items()}
    cs, cm = (json.loads((r / "config.json").read_text()) for r in (single, multi))
    assert cs["heads"] == cm["heads"] and cs["includes_backbone"] is cm["includes_backbone"] is True
    assert not any(
        torch.equal(ws[k], wm[k]) for k in ws if k.endswith("body.0.weight")
    )  # trained differently
    model, _ = load_checkpoint(multi)
    assert model.classes == {"label": ["blue", "green", "red"]}
    r = rows(multi)
    assert [x["epoch"] for x in r] == [1, 2] and r[0]["unreadable"] == 1  # gathered from both processes
    assert any("broken.png" in s["item"] for s in json.loads((multi / "skipped.json").read_text()))
    state = json.loads((multi / "last" / "state.json").read_text())
    assert state["finished"] and state["sampler"]["epoch"] == 2


def test_more_gpu_processes_than_gpus_is_a_clear_error(monkeypatch):
    from vestis.train import TrainConfig
    from vestis.train.finetune import _init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", str(max(torch.cuda.device_count(), 1)))  # one past this node's GPUs
    cfg = TrainConfig(data="x", mode="finetune", device="cuda")
    with pytest.raises(ValueError, match=r"one process per GPU, or add --device cpu"):
        _init_distributed(cfg)
