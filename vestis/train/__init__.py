"""Training: fast (frozen-backbone) mode, fine-tuning, losses, sampler.

``vestis.train`` is this package and also the Python API's training call: ``vestis.train("data/clothes",
mode="finetune", out="runs/ft")`` trains and returns a :class:`vestis.Model` (:func:`vestis.api.train`);
``vestis.train.train(cfg)`` is the library function below it, taking a :class:`TrainConfig`."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from vestis.train.config import TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Train a model as ``cfg.mode`` says and save it into ``cfg.out``; returns the run summary."""
    out = Path(cfg.resume or cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a run directory: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create the run directory ({e.strerror or e})") from e
    if cfg.mode == "fast":
        from vestis.train.fast import train_fast

        return train_fast(cfg)
    from vestis.train.finetune import train_finetune

    return train_finetune(cfg)


class _CallablePackage(types.ModuleType):
    def __call__(self, data, **options):
        """:func:`vestis.api.train`: train on ``data`` and return the run as a :class:`vestis.Model`."""
        from vestis.api import train as api_train

        return api_train(data, **options)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["TrainConfig", "train"]
