"""Kill a fine-tuning run mid-epoch, resume it, and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_finetune import ft_cfg, make_catalogue, rows
from vestis.cli import main
from vestis.train import TrainConfig, train
from vestis.train.finetune import train_finetune
from vestis.train.resume import read_state

TIMING = ("seconds", "images_per_s")


def interrupt_at(epoch: int, step: int):
    def hook(e, s):
        if (e, s) == (epoch, step):
            raise KeyboardInterrupt

    return hook


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-6, msg=k)


def without_timing(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rs]


@pytest.mark.parametrize("staged", [False, True])
def test_resume_equals_uninterrupted(colour_folder, tmp_path, staged, capsys):
    # every source of randomness on: augmentation, mixup/cutmix, dropout, balanced sampler, EMA
    kw = dict(augment="trivial", mixup=0.2, cutmix=1.0, sampler="balanced", epochs=3, patience=0)
    data = colour_folder
    if staged:
        data = make_catalogue(tmp_path / "cat")
        kw.update(split="year:even", val=0.3, stages="top:3,rest", epochs=2)
    a, b = tmp_path / "a", tmp_path / "b"
    train(ft_cfg(data, tmp_path, out=str(a), **kw))

    with pytest.raises(KeyboardInterrupt):  # mid-epoch 2 (staged: mid-epoch 3, the first of stage 2)
        train_finetune(ft_cfg(data, tmp_path, out=str(b), **kw), on_step=interrupt_at(3 if staged else 2, 1))
    assert read_state(b)["epoch"] == (2 if staged else 1)
    assert not (b / "train_log.json").exists()  # not finished

    args = [
        "train",
        str(data),
        "--mode",
        "finetune",
        "--resume",
        str(b),
        "--workers",
        "0",
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(args) == 0  # every other option comes from the stored run
    assert_same_tensors(a / "model.safetensors", b / "model.safetensors")
    sa, sb = read_state(a), read_state(b)
    assert sa["epoch"] == sb["epoch"] and sa["step"] == sb["step"] and sb["finished"]
    for name in ("model", "ema", "optimizer"):
        assert_same_tensors(
            a / "last" / sa["files"] / f"{name}.safetensors", b / "last" / sb["files"] / f"{name}.safetensors"
        )
    assert without_timing(rows(a)) == without_timing(rows(b))
    ca, cb = (json.loads((r / "config.json").read_text()) for r in (a, b))
    assert ca["metrics"] == cb["metrics"]
    assert cb["train_config"]["training"]["epochs"] == kw["epochs"]
    assert "runtime" not in cb["train_config"] and "resume" not in TrainConfig.flatten(cb["train_config"])

    capsys.readouterr()
    assert main([*args, "--lr", "0.5"]) == 2  # a resumed run keeps its options
    assert "differ" in capsys.readouterr().err


def test_resume_state_format(colour_folder, tmp_path):
    train(ft_cfg(colour_folder, tmp_path, epochs=1))
    last = tmp_path / "run" / "last"
    state = read_state(tmp_path / "run")
    assert sorted(p.name for p in last.iterdir()) == ["epoch-0001", "state.json"]
    assert {p.name for p in (last / state["files"]).iterdir()} == {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    }
    opt = load_file(str(last / state["files"] / "optimizer.safetensors"))
    assert any(k.endswith(".exp_avg") for k in opt) and any(k.endswith(".exp_avg_sq") for k in opt)
    assert {"param_groups", "scalars"} <= set(state["optimizer"])
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert state["sampler"] == {"seed": 0, "epoch": 1, "balanced": False}
    assert state["config"]["mode"] == "finetune" and state["stage_done"] and state["finished"]
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        read_state(tmp_path)


def raise_at(epoch: int, step: int, exc: BaseException):
    def hook(e, s):
        if (e, s) == (epoch, step):
            raise exc

    return hook


def test_out_of_memory_says_how_to_go_on(colour_folder, tmp_path, capsys):
    out = tmp_path / "run"
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: 9 bytes.")
    with pytest.raises(RuntimeError) as got:
        train_finetune(ft_cfg(colour_folder, tmp_path, epochs=2), on_step=raise_at(2, 1, cpu))
    message = str(got.value)
    assert "\n" not in message and got.value.__cause__ is cpu
    assert message.startswith("out of memory at batch size 8 (") and "not enough memory: 9 bytes" in message
    assert f"--resume {out} --workers 0" in message and "--batch-size" in message
    assert read_state(out)["epoch"] == 1  # the finished epoch is kept, and the advice works
    assert main(["train", str(colour_folder), "--mode", "finetune", "--resume", str(out), "--quiet"]) == 0
    assert read_state(out)["finished"]

    other = RuntimeError("a bug, not memory")  # anything else is raised as it is
    with pytest.raises(RuntimeError) as got:
        train_finetune(
            ft_cfg(colour_folder, tmp_path, out=str(tmp_path / "b")), on_step=raise_at(1, 1, other)
        )
    assert got.value is other
