"""Shared fixtures: tiny synthetic image sets (generated, seconds) and the path of the real data."""

from __future__ import annotations

import importlib.util
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLOTHING = SHARED / "clothing-dataset-small"
PRODUCTS = SHARED / "fashion-product-images-small"

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def load_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module, registered under ``NAME`` so that the scripts loaded after
    it import it as they do when run (as the script beside them)."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available at {path} (see ../shared/README.md)")
    return path


def stable_seed(*parts) -> int:
    """A seed from names, the same in every run (Python's ``hash()`` of a string is salted per process)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def make_image(path: Path, colour, size=(40, 48), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(
        np.uint8
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def make_colour_folder(root: Path, colours: dict | None = None, counts: dict | None = None) -> Path:
    """root/{train,validation,test}/{red,green,blue}/*.png (or ``colours``' classes; ``counts`` per split):
    trivially separable classes."""
    counts = counts or {"train": 10, "validation": 4, "test": 4}
    for split, k in counts.items():
        for c, rgb in (colours or COLOURS).items():
            for i in range(k):
                make_image(root / split / c / f"{c}{i}.png", rgb, seed=stable_seed(split, c, i))
    return root


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """root/{train,validation,test}/{red,green,blue}/*.png: trivially separable classes."""
    return make_colour_folder(tmp_path / "colours")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def train_tiny(data, out, cache, *extra: str) -> int:
    """`vestis train` on the tiny test backbone (a fast-mode linear head, seconds); returns the exit code."""
    from vestis.cli import main

    args = ["--backbone", "test_tiny", "--epochs", "2", "--head", "linear", "--workers", "0", "--quiet"]
    return main(["train", str(data), "--out", str(out), "--cache-dir", str(cache), *args, *extra])
