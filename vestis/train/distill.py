"""A fine-tuning run that starts from, or learns from, trained models.

* ``--init RUN`` (``default``: the bundled model): the network starts as that run's weights, heads included
  where their classes are the data's (otherwise the probe fits new ones); its backbone is the run's.
* ``--teacher RUN`` (repeatable; ``default`` too) with ``--distill W``: knowledge distillation (Hinton et al.
  2015). Each head's loss is ``(1 - W) * hard loss + W * T^2 * KL(teacher || student)`` at temperature ``T``
  (``--distill-temperature``); several teachers are averaged (their tempered probabilities), so an ensemble's
  answers can be taught to one network. The teachers see the very batch the student sees (the same crop, flip,
  augmentation and mixup; "consistent teaching", Beyer et al. 2022), adapted to each teacher's normalisation and
  input size; a teacher's classes must include the student's (other classes' share is dropped and the rest
  renormalised). A head no teacher has is trained on its labels alone."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from vestis.models.checkpoint import load_checkpoint
from vestis.models.preprocess import denormalize
from vestis.models.registry import canonical_name
from vestis.models.run_config import model_name, resolve_model_dir
from vestis.runtime import autocast
from vestis.train.config import TrainConfig


def _load(run: str, role: str, device="cpu"):
    """A trained model for ``--init`` / ``--teacher``: a run directory or the bundled model, not an export."""
    if str(run).endswith(".onnx"):
        raise ValueError(
            f"--{role} {run}: an exported ONNX model has no trainable weights; give the run directory it came from"
        )
    return load_checkpoint(run, device=device)


def init_model(cfg: TrainConfig, heads: list[str]):
    """The model ``cfg.init`` names, heads the data does not have removed -> (model, cfg with its backbone)."""
    from vestis.models import DEFAULT_BACKBONE

    model, config = _load(cfg.init, "init")
    where = resolve_model_dir(cfg.init)
    name = canonical_name(config["backbone"])
    if cfg.backbone != DEFAULT_BACKBONE and canonical_name(cfg.backbone) != name:
        raise ValueError(f"--init {where} is a {name} model; --backbone {cfg.backbone} differs")
    if config.get("colour_stats"):
        raise ValueError(
            f"--init {where}: a model with colour statistics (fast mode only) cannot be fine-tuned"
        )
    model.keep_heads(heads)
    model.pretrained = cfg.pretrained
    return model.train(), dataclasses.replace(cfg, backbone=name)


class Teacher:
    """The teachers of a run, loaded once: :meth:`targets` gives their tempered, averaged probabilities."""

    def __init__(self, runs: list[str], student, device, precision: str, temperature: float, fmt):
        self.models = []
        for run in runs:
            model, _ = _load(run, "teacher", device)
            self.models.append((model_name(run), model.to(memory_format=fmt).eval()))
        self.student_pre, self.device, self.precision = student.preprocess, device, precision
        self.temperature, self.fmt = temperature, fmt
        self.columns: list[dict[str, torch.Tensor]] = [
            {} for _ in self.models
        ]  # per teacher: head -> columns

    def map_classes(self, classes: dict[str, list[str]]) -> list[str]:
        """Each teacher's columns of the student's classes, per head (again when a stage grows the head).
        Returns the heads no teacher has; a teacher lacking some of a head's classes is an error naming them."""
        self.columns = [{} for _ in self.models]
        for (name, model), columns in zip(self.models, self.columns, strict=True):
            for h, cl in classes.items():
                if h not in model.classes:
                    continue
                index = {c: i for i, c in enumerate(model.classes[h])}
                missing = [c for c in cl if c not in index]
                if missing:
                    raise ValueError(
                        f"teacher {name}: head {h!r} lacks the classes {missing[:5]} "
                        f"({len(missing)} of {len(cl)}); a teacher must know every class it teaches"
                    )
                columns[h] = torch.tensor([index[c] for c in cl], device=self.device)
        return [h for h in classes if not any(h in columns for columns in self.columns)]

    def _input(self, x: torch.Tensor, pre) -> torch.Tensor:
        """The student's normalised batch as this teacher expects it (its mean, std and input size)."""
        s = self.student_pre
        if (tuple(pre.mean), tuple(pre.std)) != (tuple(s.mean), tuple(s.std)):
            mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (pre.mean, pre.std))
            x = (denormalize(x, s) - mean) / std
        if tuple(x.shape[-2:]) != (pre.input_size, pre.input_size):
            x = F.interpolate(
                x, size=(pre.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        return x.contiguous(memory_format=self.fmt)

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{head: (n, C) probabilities over the student's classes}, the teachers' mean at the temperature."""
        out: dict[str, list[torch.Tensor]] = {}
        for (_, model), columns in zip(self.models, self.columns, strict=True):
            if not columns:
                continue
            with autocast(self.device, self.precision):
                logits = model(self._input(x, model.preprocess))
            for h, cols in columns.items():
                p = (logits[h].float() / self.temperature).softmax(-1)[:, cols]
                out.setdefault(h, []).append(p / p.sum(-1, keepdim=True).clamp_min(1e-12))
        return {h: torch.stack(ps).mean(0) for h, ps in out.items()}


def distill_loss(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(target || softmax(logits / T))``, averaged over the batch (Hinton et al.'s scaling keeps the
    gradient's size independent of T)."""
    logp = F.log_softmax(logits.float() / temperature, -1)
    kl = (target * (target.clamp_min(1e-12).log() - logp)).sum(-1)
    return kl.mean() * temperature**2
