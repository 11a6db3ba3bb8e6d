"""The state of a fine-tuning run: :class:`Run` (what every stage shares: options, process, data, model, logs)
and :class:`Fit` (one stage in training: its data, optimizer, EMA, loaders and counters, which the resume state
holds), with what they do for the trainer: image sets, validation through the inference engine, checkpoints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vestis.engine.infer import infer
from vestis.engine.loader import ImageSet
from vestis.engine.torch_runner import TorchRunner
from vestis.models.checkpoint import save_checkpoint
from vestis.models.preprocess import resolve_transform
from vestis.models.registry import create_model
from vestis.runtime import resolve_precision
from vestis.train.config import TrainConfig
from vestis.train.ema import EMA
from vestis.train.history import History
from vestis.train.records import content_digests, data_info, stored_extras
from vestis.train.resume import load_best
from vestis.train.sampler import EpochSampler
from vestis.train.stages import Stage


def predict_probs(model, images: ImageSet, run: Run) -> tuple[dict, np.ndarray, dict]:
    """Class probabilities per head, averaged over the images' views, through the inference engine (the precision
    inference will use) -> ({head: (n, C)}, ok (n,), {i: error})."""
    runner = TorchRunner(model, run.device, run.eval_precision, channels_last=run.cfg.channels_last)
    out = infer(runner, images, batch_size=run.cfg.batch_size, workers=run.workers)
    return out.probs, out.ok, out.errors


@dataclass
class Run:
    """What every stage shares: options, process, data, model, logs."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    precision: str  # training's (validation: :attr:`eval_precision`)
    workers: int
    ds: object
    stages: list[Stage]
    model: object
    notes: list[str]
    t0: float = 0.0
    on_step: object = None  # on_step(epoch, step_in_epoch) after every optimizer step
    bad: dict = field(default_factory=dict)  # unreadable image path -> reason
    stage_results: list[dict] = field(default_factory=list)  # per class group, after each stage but the last
    epoch: int = 0  # epochs done, over all stages
    cache: list | None = None
    history: History | None = None
    digests: list | None = None  # each sample's content digest (the data fingerprint), read once
    extras: dict | None = None  # stage groups and label hierarchy (records.stored_extras), learned once
    teacher: object = None  # distill.Teacher when the run learns from trained models (--teacher)

    @property
    def eval_precision(self) -> str:
        """Validation runs in the precision inference will use (bf16 where inference uses it)."""
        return resolve_precision(self.device, self.cfg.precision)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)

    @property
    def fmt(self):
        return torch.channels_last if self.cfg.channels_last else torch.preserve_format

    @property
    def views(self) -> tuple[str, ...]:
        return ("plain", "flip") if self.cfg.tta else ("plain",)

    def say(self, *msg) -> None:
        if self.main and not self.cfg.quiet:
            tqdm.write(" ".join(map(str, msg)))

    def images(self, idx: list[int], train: bool = False) -> ImageSet:
        """Samples ``idx`` as the engine's image set: augmented single views to train on, else the test views."""
        pre, cfg = self.model.preprocess, self.cfg
        if train:
            tf = resolve_transform(
                pre,
                train=True,
                augment=cfg.augment,
                crop_scale=cfg.crop_scale,
                erase=cfg.erase,
                size=cfg.train_size,
                zoom_out=cfg.zoom_out,
                low_res=cfg.low_res,
            )
        else:
            tf = resolve_transform(pre)
        cache = [self.cache[i] for i in idx] if self.cache is not None else None
        paths = [self.ds.samples[i].path for i in idx]
        return ImageSet(paths, tf, pre.resize_size, ("plain",) if train else self.views, cache)

    def save(self, model, metrics: dict, skipped: int | None = None) -> None:
        """``model`` as the run's checkpoint, with its metrics, data record and stored options."""
        if self.digests is None:
            self.digests = content_digests(self.ds, progress=not self.cfg.quiet)
        if self.extras is None:  # the same for every save of the run
            self.extras = stored_extras(self.ds, self.stages, self.cfg)
        train_config = {**self.cfg.to_dict(), "views": list(self.views), **self.extras}
        data = data_info(self.cfg, self.ds, self.digests, skipped)
        save_checkpoint(
            self.run_dir, model, include_backbone=True, metrics=metrics, data=data, train_config=train_config
        )

    def evaluate_best(self, va: list[int]):
        """The best model saved so far, and its class probabilities on samples ``va``."""
        model = create_model(
            self.cfg.backbone, pretrained=False, head=self.model.head_cfg, head_cfgs=self.model.head_cfgs
        )
        model.preprocess = self.model.preprocess  # with the native size recorded for this run
        # the saved weights began as these (recorded in the checkpoint)
        model.pretrained = self.cfg.pretrained
        load_best(model, self.run_dir)
        model.to(self.device)
        probs, ok, _ = predict_probs(model, self.images(va), self)
        return model, probs, ok


@dataclass
class Fit:
    """One stage in training: its data, optimizer, EMA, loaders, and counters (what the resume state holds)."""

    stage: Stage
    si: int
    tr: list[int]
    va: list[int]
    ytr: dict
    yva: dict
    net: object
    opt: torch.optim.Optimizer
    ema: EMA | None
    sampler: EpochSampler
    train_loader: object
    val_images: ImageSet
    losses: dict
    total: int
    warmup: int
    step: int = 0
    stage_epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    since: int = 0
