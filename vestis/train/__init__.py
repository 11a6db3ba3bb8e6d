"""Training: feature cache, fast (frozen-backbone) mode, fine-tuning, losses."""

from __future__ import annotations

from vestis.train.config import TrainConfig


def train(cfg: TrainConfig) -> dict:
    """Train a model as ``cfg.mode`` says and save it into ``cfg.out``; returns the run summary."""
    if cfg.mode == "fast":
        from vestis.train.fast import train_fast

        return train_fast(cfg)
    from vestis.train.finetune import train_finetune

    return train_finetune(cfg)


__all__ = ["TrainConfig", "train"]
