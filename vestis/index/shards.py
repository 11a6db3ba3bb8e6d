"""``vestis index build`` under ``torchrun``: every process embeds its shard of the items (one process per GPU,
or several CPU processes, or nodes), rank 0 gathers the vectors and writes the one index.

The process group is the trainer's (:mod:`vestis.train.distributed`: gloo on CPU, nccl on GPU, rank 0 alone
prints). Shards are contiguous slices of the item list, so rank 0 concatenates them in rank order and the
index is the one a single process would build (same ids, same order, the same vectors). Each process embeds
through the feature cache as usual: on a shared cache directory a second build costs no embedding at all."""

from __future__ import annotations

import os

import numpy as np


def world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def start(device: str = "auto") -> tuple[int, int, str]:
    """Join torchrun's process group: -> (rank, world, device to embed on, e.g. "cpu" or "cuda:1")."""
    from vestis.train.distributed import init_distributed

    rank, world, dev = init_distributed(device)
    return rank, world, str(dev)


def stop(world: int) -> None:
    from vestis.train.distributed import close_distributed

    close_distributed(world)


def shard_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """[start, stop) of each rank's contiguous slice of ``n`` items (sizes differ by at most one)."""
    edges = np.linspace(0, n, world + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def embed_sharded(embed, paths: list[str], rank: int, world: int):
    """Run ``embed(paths_of_this_shard)`` -> (vectors (n_ok, D), ok (n,), {position: error}, digests (n,))
    on this rank's slice of ``paths`` and gather the pieces on rank 0, positions mapped back to the whole
    list. -> the whole list's (vectors, ok, errors, digests, shard sizes) on rank 0, None elsewhere."""
    import torch.distributed as dist

    lo, hi = shard_bounds(len(paths), world)[rank]
    vectors, ok, errors, digests = embed(paths[lo:hi])
    piece = (lo, np.asarray(vectors, np.float32), np.asarray(ok, bool), dict(errors), list(digests))
    pieces = [None] * world if rank == 0 else None
    dist.gather_object(piece, pieces, dst=0)
    if rank != 0:
        return None
    pieces.sort(key=lambda p: p[0])
    dims = {p[1].shape[1] for p in pieces if len(p[1])}
    if len(dims) > 1:
        raise RuntimeError(
            f"the processes embedded with different dimensions {sorted(dims)}: one model for all"
        )
    vectors = np.concatenate([p[1] for p in pieces if len(p[1])] or [np.zeros((0, 0), np.float32)])
    ok = np.concatenate([p[2] for p in pieces])
    errors = {p[0] + int(j): e for p in pieces for j, e in p[3].items()}
    digests = [d for p in pieces for d in p[4]]
    if len(ok) != len(paths) or len(vectors) != int(ok.sum()):
        raise RuntimeError("the gathered shards do not add up to the item list")
    return vectors, ok, errors, digests, [len(p[2]) for p in pieces]
