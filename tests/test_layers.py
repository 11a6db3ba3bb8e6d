"""Imports only go downward: data -> models -> engine -> train / evaluate / predict -> benchmark / api / index -> cli / serve.

Every import in every module counts, including the lazy ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "vestis"
LAYER = {
    "data": 0,
    "runtime": 0,
    "models": 1,
    "engine": 2,
    "train": 3,
    "evaluate": 3,
    "predict": 3,
    "benchmark": 4,
    "api": 4,
    "index": 4,
    "cli": 5,
    "serve": 5,
    "__main__": 5,
}
# the one sanctioned exception: `vestis.train(...)` is the API's train() (the package made callable)
ALLOWED = {("train/__init__.py", "vestis.api")}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "vestis" or len(parts) < 2:
        return None
    return LAYER.get(parts[1])


def test_no_module_imports_upward():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        top = rel.split("/")[0].removesuffix(".py")
        if top == "__init__":  # the package root: the lazy facade
            continue
        mine = LAYER[top]
        for module in _imports(path):
            theirs = _layer(module)
            if theirs is not None and theirs > mine and (rel, module) not in ALLOWED:
                bad.append(f"{rel} imports {module}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_evaluate_and_predict_do_not_import_train():
    for path in [*sorted((ROOT / "evaluate").rglob("*.py")), ROOT / "predict.py"]:
        assert not [m for m in _imports(path) if m.startswith("vestis.train")], path
