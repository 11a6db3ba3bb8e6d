"""The runtime-only install (base + `runtime` extra) pulls no torch: predicting from .onnx files needs none."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_runtime_extra_does_not_pull_torch():
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = _names(project["dependencies"]) | _names(extras["runtime"])
    assert not runtime & {"torch", "torchvision", "timm", "vestis"}, runtime
    assert "onnxruntime" in runtime
    assert "torch" in _names(extras["torch"]) and "onnx" in _names(extras["export"])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_licence_is_declared_and_shipped():
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression (a table is deprecated by setuptools)
    for name in project["license-files"]:
        text = (PYPROJECT.parent / name).read_text()
        assert "Apache License" in text and "Version 2.0, January 2004" in text
