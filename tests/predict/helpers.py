"""What the prediction tests share: tiny PNGs, a fast config, and the checks of the JSON contract."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vestis.engine.torch_runner import TorchRunner
from vestis.predict import PredictConfig, predict

HEADS = {"label": ["a", "b", "c"], "colour": ["red", "blue"]}


def png_bytes(seed: int, size: int = 32, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def fast(**kw) -> PredictConfig:
    return PredictConfig(**{"workers": 0, "progress": False, **kw})


def R(model) -> TorchRunner:
    return TorchRunner(model, "cpu", "fp32")


def run(model, inputs, **kw) -> list[dict]:
    return list(predict(R(model), [str(i) for i in inputs], fast(**kw)))


def check_prediction(r: dict, top_k: int) -> None:
    assert set(r) == {"input", "predictions"}
    assert isinstance(r["input"], str)
    assert list(r["predictions"]) == list(HEADS)
    for head, preds in r["predictions"].items():
        assert len(preds) == min(top_k, len(HEADS[head]))
        labels = [p["label"] for p in preds]
        assert len(set(labels)) == len(labels) and set(labels) <= set(HEADS[head])
        scores = [p["score"] for p in preds]
        for p in preds:
            assert set(p) == {"label", "score"} and type(p["score"]) is float and type(p["label"]) is str
            assert 0.0 <= p["score"] <= 1.0 and p["score"] == round(p["score"], 6)
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) <= 1 + 1e-5
        if len(preds) == len(HEADS[head]):
            assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def check_error(r: dict) -> None:
    assert set(r) == {"input", "error"}
    assert isinstance(r["input"], str) and isinstance(r["error"], str) and r["error"]
