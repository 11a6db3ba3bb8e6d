"""The same finetune command under torchrun: two CPU processes (gloo), DistributedDataParallel, rank-0 output;
and the collectives the trainer adds, in two forked processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import COLOURS, make_image, stable_seed
from tests.train.test_finetune import rows
from vestis.cli import main
from vestis.models.checkpoint import load_checkpoint

LOSSES = ("train_loss", "val_loss", "val_top1", "lr", "lr_backbone")


def square_folder(root):
    """Square images: a random-resized crop of scale 1 is then the whole image, so training draws no randomness
    that differs between processes (with no flip and no dropout)."""
    for split, k in (("train", 8), ("validation", 4)):
        for c, rgb in COLOURS.items():
            for i in range(k):
                make_image(
                    root / split / c / f"{c}{i}.png", rgb, size=(36, 36), seed=stable_seed(split, c, i)
                )
    return root


@pytest.mark.parametrize("taught", [False, True])
def test_torchrun_two_processes_matches_single_process(tmp_path, taught):
    """Two processes with batch 4 each take the same steps as one process with batch 8 (the sampler shards each
    batch of the epoch's order; DDP averages the gradients): the weights and metrics must agree. ``taught``:
    a trained teacher too (each process runs it on its own share of the batch)."""
    data = square_folder(tmp_path / "squares")
    common = [
        "--mode",
        "finetune",
        "--backbone",
        "test_tiny",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--quiet",
        "--precision",
        "fp32",
        "--no-tensorboard",
        "--device",
        "cpu",
        "--augment",
        "none",
        "--crop-scale",
        "1.0",
        "--dropout",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    if taught:
        teacher = tmp_path / "teacher"
        assert (
            main(["train", str(data), "--out", str(teacher), "--batch-size", "8", "--lr", "0.03", *common])
            == 0
        )
        common += ["--teacher", str(teacher), "--distill", "0.5"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main(["train", str(data), "--out", str(single), "--batch-size", "8", *common]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "vestis",
        "train",
        str(data),
        "--out",
        str(multi),
        "--batch-size",
        "4",
        *common,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert len(printed) == 1  # only rank 0 reports

    rs, rm = rows(single), rows(multi)
    assert [x["epoch"] for x in rm] == [1, 2] and [x["best"] for x in rm] == [x["best"] for x in rs]
    for a, b in zip(rs, rm, strict=True):
        for k in LOSSES:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (a["epoch"], k)
    ss, sm = (json.loads((r / "last" / "state.json").read_text()) for r in (single, multi))
    assert ss["step"] == sm["step"] == 6 and sm["finished"] and sm["sampler"]["epoch"] == 2
    for name in ("model", "ema", "optimizer"):  # the raw weights, their average and Adam's moments
        ts = load_file(str(single / "last" / ss["files"] / f"{name}.safetensors"))
        tm = load_file(str(multi / "last" / sm["files"] / f"{name}.safetensors"))
        assert ts.keys() == tm.keys()
        for k in ts:
            torch.testing.assert_close(tm[k], ts[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
    fresh = load_file(str(single / "model.safetensors"))
    trained = load_file(str(multi / "model.safetensors"))
    for k in fresh:  # the best checkpoint too
        torch.testing.assert_close(trained[k], fresh[k], rtol=1e-4, atol=1e-5, msg=k)
    model, _ = load_checkpoint(multi)
    assert model.classes == {"label": ["blue", "green", "red"]}


def _collectives(rank: int, store: str, out) -> None:
    import torch.distributed as dist

    from vestis.train.distributed import all_sum, broadcast_flags, union_failures

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    cpu = torch.device("cpu")
    fails = {11: "empty file"} if rank == 0 else {13: "not an image"}
    res = {
        "failed": union_failures(fails, [10, 11, 12, 13], cpu, 2),
        "sum": all_sum([rank + 1.0, 2.0], cpu, 2),
        "flags": broadcast_flags([rank + 5, 7], cpu, 2),
    }
    dist.destroy_process_group()
    out.put((rank, res))


def test_collectives_gather_failures_sums_and_flags(tmp_path):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_collectives, args=(r, str(tmp_path / "store"), out)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert got[0]["failed"] == {11: "empty file", 13: "unreadable image"}  # another process's failure too
    assert set(got[1]["failed"]) == {11, 13}
    assert got[0]["sum"] == got[1]["sum"] == [3.0, 4.0]
    assert got[0]["flags"] == got[1]["flags"] == [5, 7]  # rank 0's


def test_more_gpu_processes_than_gpus_is_a_clear_error(monkeypatch):
    from vestis.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", str(max(torch.cuda.device_count(), 1)))  # one past this node's GPUs
    with pytest.raises(ValueError, match=r"one process per GPU, or add --device cpu"):
        init_distributed("cuda")
