"""A tiny two-head model and a folder of good and bad inputs."""

from __future__ import annotations

import pytest
import torch

from tests.predict.helpers import HEADS, png_bytes
from vestis.models import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("test_tiny", heads=HEADS).eval()


@pytest.fixture
def files(tmp_path):
    """Distinct good images plus every kind of bad input, with their paths."""
    f = {}
    for n in range(4):
        f[f"good{n}"] = tmp_path / f"good{n}.png"
        f[f"good{n}"].write_bytes(png_bytes(n))
    f["corrupt"] = tmp_path / "corrupt.png"
    f["corrupt"].write_bytes(png_bytes(9)[:60])
    f["empty"] = tmp_path / "empty.jpg"
    f["empty"].write_bytes(b"")
    f["text"] = tmp_path / "notes.txt"
    f["text"].write_text("not an image")
    folder = tmp_path / "shop"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.png").write_bytes(png_bytes(10))
    (folder / "sub" / "a.jpg").write_bytes(png_bytes(11))  # a PNG named .jpg still loads
    (folder / "readme.txt").write_text("skipped: not an image extension")
    f["folder"] = folder
    (tmp_path / "empty_dir").mkdir()
    f["empty_dir"] = tmp_path / "empty_dir"
    return f
