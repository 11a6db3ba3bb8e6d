"""Predicting from an exported ONNX file never imports torch: proved in a subprocess where torch cannot be
imported at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tests.conftest import make_image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEADS = {"type": ["shirt", "dress", "hat"], "colour": ["red", "blue"]}

# Runs in the subprocess: torch (and the torch-only libraries) made unimportable before anything else.
CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = ("torch", "torchvision", "timm", "safetensors")
    attempts = []

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, NoTorch())
    for name in BLOCKED:
        sys.modules.pop(name, None)

    from vestis.engine.infer import infer
    from vestis.engine.ort_runner import OnnxRunner, read_onnx_metadata

    model, paths = sys.argv[1], sys.argv[2:]
    runner = OnnxRunner(model)
    out = infer(runner, paths, views=("plain", "flip"), batch_size=2, workers=2)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
    assert sys.modules.get("torch") is None, "torch got imported"
    print(json.dumps({
        "probs": {h: p.tolist() for h, p in out.probs.items()},
        "embeddings": out.embeddings.tolist(),
        "ok": out.ok.tolist(),
        "errors": {str(k): v for k, v in out.errors.items()},
        "classes": runner.classes,
        "card_heads": read_onnx_metadata(model)["heads"],
        "loaded": loaded,
        "attempts": attempts,
    }))
    """
)


def test_predicting_from_onnx_never_imports_torch(tmp_path):
    from vestis.engine.export import export_onnx
    from vestis.engine.infer import infer
    from vestis.engine.torch_runner import TorchRunner
    from vestis.models.registry import create_model

    model = create_model("test_tiny", heads=HEADS)
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(model, onnx_path)
    paths = [
        str(make_image(tmp_path / f"img{i}.png", (40 * i, 200 - 30 * i, 90), size=(36 + i, 50), seed=i))
        for i in range(5)
    ]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    items = [*paths[:2], str(broken), *paths[2:]]

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(onnx_path), *items],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    assert got["loaded"] == [], f"torch-only modules were imported: {got['loaded']}"
    # not even tried: where torch is installed, a guarded `try: import torch` would load it
    assert got["attempts"] == [], f"imports of torch-only modules were attempted: {got['attempts']}"
    assert got["classes"] == HEADS and got["card_heads"] == HEADS
    assert got["ok"] == [True, True, False, True, True, True] and list(got["errors"]) == ["2"]
    want = infer(
        TorchRunner(model, device="cpu", precision="fp32"), items, views=("plain", "flip"), workers=0
    )
    for head in HEADS:
        np.testing.assert_allclose(np.array(got["probs"][head]), want.probs[head], atol=1e-5)
    np.testing.assert_allclose(np.array(got["embeddings"]), want.embeddings, atol=1e-4)
