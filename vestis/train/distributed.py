"""Several training processes under ``torchrun`` (gloo on CPU, nccl on GPU): the process group, and the few
collectives the trainer needs beside DistributedDataParallel's gradient averaging. With one process every
helper is a no-op, so the trainer calls them unconditionally."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from vestis.runtime import pick_device


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world, device): torchrun's environment gives several processes (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world <= 1:
        return 0, 1, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"process {local} of this node has no GPU of its own (the node has {torch.cuda.device_count()}): "
                "start one process per GPU, or add --device cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:  # rank 0 reports for all (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    return rank, world, device


def close_distributed(world: int) -> None:
    """Leave the process group. On a clean exit every process first waits for the others at a barrier: a process
    that tore its group down while a peer's last collective was still in flight died in gloo's thread teardown
    ("terminate called without an active exception", SIGABRT) after its work was done. While an exception is
    propagating there is no barrier (the peers may never come)."""
    if world > 1 and dist.is_initialized():
        if sys.exc_info()[1] is None:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_flags(flags: list[int], device, world: int) -> list[int]:
    """Rank 0's integers, in every process."""
    if world == 1:
        return flags
    t = torch.tensor(flags, dtype=torch.long, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def all_sum(values: list[float], device, world: int) -> list[float]:
    """The sum over processes of each value."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def union_failures(fails: dict[int, str], items: list[int], device, world: int) -> dict[int, str]:
    """The items (of ``items``, the same list in every process) that failed in any process -> reason. Reasons
    are not sent: an item another process failed on is reported as an unreadable image."""
    if world == 1:
        return fails
    mask = torch.zeros(len(items), dtype=torch.long, device=device)
    pos = {i: j for j, i in enumerate(items)}
    for i in fails:
        mask[pos[i]] = 1
    dist.all_reduce(mask)
    return {items[j]: fails.get(items[j], "unreadable image") for j in mask.nonzero().flatten().tolist()}
