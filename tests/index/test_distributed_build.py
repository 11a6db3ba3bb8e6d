"""`vestis index build` under torchrun: two CPU processes (gloo) each embed half the catalogue, rank 0 writes
the index, and it is the index one process builds (same ids, paths, metadata and vectors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("torch")

from tests.index.test_cli_index import MODEL, catalogue  # noqa: E402, F401 - the fixture
from vestis.cli import main  # noqa: E402
from vestis.index import Index  # noqa: E402
from vestis.index.shards import shard_bounds  # noqa: E402


def test_shard_bounds_cover_every_item_once():
    for n, world in ((37, 2), (5, 3), (2, 4), (0, 2)):
        b = shard_bounds(n, world)
        assert len(b) == world and b[0][0] == 0 and b[-1][1] == n
        assert all(x[1] == y[0] for x, y in zip(b, b[1:], strict=False))
        assert max(hi - lo for lo, hi in b) - min(hi - lo for lo, hi in b) <= 1


def test_torchrun_two_processes_build_the_single_process_index(catalogue, tmp_path, capsys):  # noqa: F811
    (tmp_path / "images" / "110.jpg").write_bytes(b"broken")  # an unreadable image in rank 0's shard
    common = ["--model", MODEL, "--workers", "0", "--quiet", "--device", "cpu"]
    single = tmp_path / "single"
    args = ["index", "build", str(catalogue), "--out", str(single), *common]
    assert main([*args, "--cache-dir", str(tmp_path / "cache1")]) == 0
    one = json.loads(capsys.readouterr().out)

    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "vestis", "index", "build", str(catalogue), "--out", str(multi), *common]
    cmd += ["--cache-dir", str(tmp_path / "cache2")]  # a cold cache: both processes really embed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert len(printed) == 1  # rank 0 reports for both
    two = printed[0]
    assert two["processes"] == {"world": 2, "embedded_per_rank": [18, 18]}
    assert two["items"] == one["items"] == 35 and two["skipped"] == one["skipped"] == 1
    assert "skipped" in done.stderr and "110.jpg" in done.stderr
    assert sum(1 for f in (tmp_path / "cache2").rglob("*") if f.is_file()) > 0  # embedded there, not reused

    a, b = Index.open(single), Index.open(multi)
    assert a.ids.tolist() == b.ids.tolist() and 110 not in b.ids.tolist()
    assert a.paths == b.paths and a.columns == b.columns and a.digests == b.digests
    assert a.manifest["model"] == b.manifest["model"] and a.manifest["embedding"] == b.manifest["embedding"]
    np.testing.assert_allclose(b.vectors(), a.vectors(), atol=1e-5)
    q = a.vectors()[:3]
    assert [[r["id"] for r in rows] for rows in b.search_vectors(q, k=5)] == [
        [r["id"] for r in rows] for rows in a.search_vectors(q, k=5)
    ]
