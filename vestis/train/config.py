"""Typed training configuration: unknown or invalid options are errors.

:class:`TrainConfig` is flat to use (``cfg.lr``, ``cfg.backbone``; the CLI's options map one to one onto its
fields) and grouped to store: every field belongs to one of :data:`GROUPS`,

* ``dataset``: what is trained on and how it is split;
* ``model``: the network (backbone, head);
* ``training``: the optimisation both modes share;
* ``fast``: fast mode's head fit (also fine-tuning's linear probe);
* ``finetune``: fine-tuning's recipe;
* ``runtime``: how this process runs (workers, device, caches, output): these do not change the result, are
  not stored with a run and may differ when a run is resumed.

:meth:`TrainConfig.to_dict` gives what a run stores, nested by group (runtime left out)::

    {"mode": "finetune", "dataset": {...}, "model": {...}, "training": {...}, "fast": {...}, "finetune": {...}}

:meth:`TrainConfig.from_dict` takes that, the flat dict of older runs (``vestis/assets/default``) and of the
CLI and the Python API, or a mix."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from pathlib import Path

from vestis.models import DEFAULT_BACKBONE
from vestis.models.preprocess import TRAIN_AUGMENTS

LOSSES = ("ce", "weighted", "focal")
MODES = ("fast", "finetune")
HEADS = ("linear", "mlp", "auto")
AUGMENTS = ("auto", *TRAIN_AUGMENTS)
SAMPLERS = ("random", "balanced")
HEAD_INITS = ("probe", "random")


def _names(spaced: str) -> tuple[str, ...]:
    return tuple(spaced.split())


# options that may differ when a run is resumed and are not stored with it (they do not change its result)
RUNTIME_FIELDS = _names(
    "out workers device runtime cache cache_dir quiet compile image_cache tensorboard resume"
)
GROUPS: dict[str, tuple[str, ...]] = {
    "dataset": _names("data images labels id_column path_column pattern split val test min_per_class rare"),
    "model": _names("backbone pretrained head hidden dropout colour_stats fit native_size input_size"),
    "training": _names(
        "seed loss label_smoothing epochs lr weight_decay select select_head loss_weights tta batch_size precision"
    ),
    "fast": _names("c lbfgs_iter"),
    "finetune": _names(
        "backbone_lr_scale warmup_epochs min_lr_scale augment crop_scale erase zoom_out low_res train_size freeze "
        "freeze_bn mixup cutmix sampler ema_decay patience head_init channels_last stages init teacher distill "
        "distill_temperature"
    ),
    "runtime": RUNTIME_FIELDS,
}
TOP_LEVEL = ("mode",)  # stored beside the groups
# stored beside the options by the trainers (not options): test-time views, class groups, fast mode's choice;
# by vestis soup: its members; lineage: what --init and --teacher models were trained on
STORED_EXTRAS = ("views", "groups", "selected", "hierarchy", "soup", "lineage")


def parse_stages(spec: str | None) -> list[tuple[str, int]]:
    """'top:20,rest' -> [('top', 20), ('rest', 0)]. A stage is top:N (the N most frequent classes),
    rest (the classes no earlier stage had) or all; the head grows to every class seen so far."""
    if not spec:
        return []
    stages = []
    for part in spec.split(","):
        name, _, n = part.strip().partition(":")
        if name == "top" and n.isdigit() and int(n) >= 2:
            stages.append(("top", int(n)))
        elif name in ("rest", "all") and not n:
            stages.append((name, 0))
        else:
            raise ValueError(
                f"invalid training option: stage {part!r} in {spec!r}; use top:N (N >= 2), rest or all"
            )
    if len(stages) < 2 or stages[0][0] != "top" or any(s[0] == "top" for s in stages[1:]):
        raise ValueError(f"invalid training option: stages {spec!r}: expected top:N followed by rest or all")
    return stages


@dataclass
class TrainConfig:
    data: str  # (dataset)
    mode: str = "fast"  # (stored at the top level, beside the groups)
    # -- dataset
    images: str | None = None  # catalogue CSV: the image directory
    labels: list[str] | None = None  # label columns (heads); folders: one, named after the folder level
    id_column: str = "id"  # catalogue CSV: the id column
    path_column: str | None = None  # catalogue CSV: a column holding image paths (instead of pattern)
    pattern: str = "{id}.jpg"  # catalogue CSV: image file name from the row's columns
    split: str | None = None  # None (folder splits / seeded split) or "year:even"
    val: float = 0.1  # validation share when the data has no validation split
    test: float = 0.1  # test share when the data has no splits at all
    # classes with fewer training images (--min-count) are dropped from their head or, with rare="fold", folded
    # into one class "other" (in every split, so evaluation scores them as "other"); either way reported
    min_per_class: int = 1
    rare: str = "drop"
    # -- model
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True
    head: str = "auto"  # fast mode: linear, mlp, or auto (both tried, chosen on validation)
    hidden: int = 512
    dropout: float = 0.2
    colour_stats: bool = False  # fast mode: colour statistics of the product pixels beside the features
    fit: str = (
        "crop"  # how an image meets the square input: crop (centre crop) or pad (letterboxed, nothing cut)
    )
    # small training images: their size is recorded and larger inputs are downscaled to it before the usual
    # resize + crop (auto: measured, recorded when small; off; or WxH). vestis.data.resolution
    native_size: str = "auto"
    # the square the network sees (default: the backbone's own, e.g. 224 for lite0); smaller is cheaper in
    # proportion to its area: a 60x80 catalogue holds no more detail at 224 than at 128
    input_size: int | None = None
    # -- training (both modes)
    seed: int = 0  # also draws the split when the data has none
    loss: str = "ce"
    label_smoothing: float = 0.1
    # None: fast mode's MLP head trains for about MLP_STEPS optimiser steps (60 epochs on small data, fewer on large:
    # the best epoch on validation is kept); finetune: 15 per stage
    epochs: int | None = None
    lr: float = 1e-3  # fast mode: the MLP head's; finetune: the head's (the backbone's is scaled)
    # fast mode, MLP head: grid chosen on validation (default 1e-2); finetune: one AdamW value (0.05)
    weight_decay: list[float] | None = None
    select: str = "top1"  # validation metric for model selection: top1 or macro_f1
    select_head: str | None = None  # finetune: select on this head's score (default: the mean over heads)
    # finetune: each head's loss weight, e.g. {"baseColour": 2.0}; heads not named weigh 1
    loss_weights: dict[str, float] | None = None
    tta: bool = True  # flip test-time augmentation (and flipped copies as training views in fast mode)
    batch_size: int = 64
    precision: str = "auto"  # fp32, bf16, auto (stored: bf16 changes the numbers a little)
    # -- fast mode (and the fine-tuning probe)
    c: list[float] | None = None  # linear head: inverse L2 strengths tried (default 0.001 ... 0.1)
    lbfgs_iter: int = 300  # linear head: L-BFGS iterations at most
    # -- fine-tuning (mode finetune)
    # backbone lr = lr * this. Measured (docs/BENCHMARKS.md): 0.3 beat 0.1 on both seeds of a GPU screen (+1.2
    # points of validation top-1, Lite0), 0.03 and 1.0 were worse; on this CPU 0.3 and 0.1 tied (0.918)
    backbone_lr_scale: float = 0.3
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to lr * min_lr_scale
    min_lr_scale: float = 0.01
    # none (crop), light (+flip), trivial (+TrivialAugmentWide), colour-safe (trivial without the colour-changing
    # operations), randaug; auto: trivial, or colour-safe when a head is a colour (resolved and stored at the start)
    augment: str = "auto"
    crop_scale: float = 0.35  # random-resized-crop: smallest area fraction
    erase: float = 0.0  # random-erasing probability
    zoom_out: float = 0.0  # probability of a looser framing (the photo shrunk on its border colour)
    low_res: float = 0.0  # probability of a low-resolution copy (short side 48-160 px, scaled back)
    train_size: int | None = None  # training crop (default: the model's input size, which evaluation uses)
    freeze: int = 0  # backbone layer groups kept frozen (1: the stem, 2: + the first stage, ...)
    # every backbone BatchNorm keeps its pretrained statistics; None: yes when pretrained. Measured: updating them
    # on small augmented batches cost 13 points of validation top-1 after epoch 1 (docs/BENCHMARKS.md)
    freeze_bn: bool | None = None
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # cutmix Beta(alpha, alpha); 0 = off (with both on, each batch uses one of them)
    sampler: str = "random"  # random or balanced (each class drawn equally often, with replacement)
    ema_decay: float = 0.999  # weight EMA (warm-up: min(decay, (1 + t) / (10 + t)) at step t); 0 = off
    patience: int = 5  # stop a stage after this many epochs without a better validation score; 0 = never
    head_init: str = "probe"  # probe (linear head fitted on frozen features first) or random
    channels_last: bool = True
    stages: str | None = None  # e.g. "top:20,rest": train on the 20 most frequent classes, then grow the head
    # start from a trained model's weights ("default": the bundled model; a run directory); vestis.train.distill
    init: str | None = None
    # knowledge distillation: trained models ("default", run directories) whose averaged answers the network also
    # learns, each head's loss (1 - distill) * hard + distill * T^2 * KL(teacher || student) at T = temperature
    teacher: list[str] | None = None
    distill: float = 0.5
    distill_temperature: float = 1.0
    # -- runtime (not stored; may differ on resume)
    out: str = "runs/train"
    workers: int | None = None
    device: str = "auto"
    runtime: str = "auto"  # how features are computed (fast mode, the probe): auto (ONNX Runtime fp32 on a CPU), torch, onnx
    cache: bool = True
    cache_dir: str | None = None
    quiet: bool = False
    compile: bool = False  # torch.compile the model
    image_cache: bool = False  # decode + resize every image once, keep it in memory
    tensorboard: bool = True  # TensorBoard events in RUN/tb (when tensorboard is installed)
    resume: str | None = None  # a run directory to continue (its RUN/last state)

    def __post_init__(self):
        if self.labels is not None:  # --label a,b as well as repeats
            if isinstance(self.labels, str):
                self.labels = [self.labels]
            self.labels = [part.strip() for entry in self.labels for part in str(entry).split(",")]
            self.labels = [x for x in self.labels if x]
        if isinstance(self.teacher, str):
            self.teacher = [self.teacher]
        if self.epochs is None and self.mode == "finetune":
            self.epochs = 15
        if self.freeze_bn is None:
            self.freeze_bn = self.pretrained
        parse_stages(self.stages)
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.head in HEADS, f"head must be one of {HEADS}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.select in ("top1", "macro_f1"), "select must be top1 or macro_f1"),
            (self.precision in ("fp32", "bf16", "auto"), "precision must be fp32, bf16 or auto"),
            (
                0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1,
                "val/test shares must be in [0, 1)",
            ),
            (
                (self.epochs is None or self.epochs >= 1) and self.batch_size >= 1 and self.hidden >= 1,
                "epochs, batch_size, hidden must be >= 1",
            ),
            (self.lr > 0, "lr must be > 0"),
            (
                0 <= self.dropout < 1 and 0 <= self.label_smoothing < 1,
                "dropout and label_smoothing must be in [0, 1)",
            ),
            (self.min_per_class >= 1, "min_per_class must be >= 1"),
            (self.lbfgs_iter >= 1, "lbfgs_iter must be >= 1"),
            (all(x > 0 for x in self.c or [1]), "c values must be > 0"),
            (self.augment in AUGMENTS, f"augment must be one of {AUGMENTS}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}"),
            (self.head_init in HEAD_INITS, f"head_init must be one of {HEAD_INITS}"),
            (self.backbone_lr_scale >= 0, "backbone_lr_scale must be >= 0"),
            (
                self.warmup_epochs >= 0 and 0 <= self.min_lr_scale <= 1,
                "warmup_epochs >= 0, min_lr_scale in [0, 1]",
            ),
            (
                0.05 <= self.crop_scale <= 1
                and all(0 <= p <= 1 for p in (self.erase, self.zoom_out, self.low_res)),
                "crop_scale in [0.05, 1]; erase, zoom_out and low_res in [0, 1]",
            ),
            (self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (self.patience >= 0, "patience must be >= 0"),
            (
                (self.init is None and not self.teacher) or self.mode == "finetune",
                "init and teacher need mode finetune",
            ),
            (
                0 <= self.distill <= 1 and self.distill_temperature > 0,
                "distill in [0, 1], distill_temperature > 0",
            ),
            (not self.teacher or self.distill > 0, "teachers with distill 0 would teach nothing"),
            (self.train_size is None or self.train_size >= 8, "train_size must be >= 8"),
            (self.freeze >= 0, "freeze must be >= 0"),
            (all(x >= 0 for x in self.weight_decay or [0]), "weight_decay must be >= 0"),
            (
                self.mode != "finetune" or len(self.weight_decay or [0]) == 1,
                "finetune takes one weight_decay value",
            ),
            (self.resume is None or self.mode == "finetune", "resume needs mode finetune"),
            (self.rare in ("drop", "fold"), "rare must be drop or fold"),
            (self.fit in ("crop", "pad"), "fit must be crop or pad"),
            (self.input_size is None or self.input_size >= 16, "input_size must be >= 16"),
            (not self.colour_stats or self.mode == "fast", "colour_stats needs mode fast"),
            (self.runtime in ("auto", "torch", "onnx"), "runtime must be auto, torch or onnx"),
            (all(w >= 0 for w in (self.loss_weights or {}).values()), "loss weights must be >= 0"),
            (
                self.labels is None or not set(self.loss_weights or {}) - set(self.labels),
                f"loss_weights name heads that are not label columns: {sorted(self.loss_weights or {})}",
            ),
            (
                self.select_head is None or self.labels is None or self.select_head in self.labels,
                f"select_head {self.select_head!r} is not one of the label columns {self.labels}",
            ),
            (
                not self.stages or self.labels is None or len(self.labels) == 1,
                "stages need a single label column",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid training option: {msg}")
        if self.labels is not None and (not self.labels or len(set(self.labels)) != len(self.labels)):
            raise ValueError("labels must be a non-empty list of distinct column names")

    @property
    def weight_decays(self) -> list[float]:
        return list(self.weight_decay) if self.weight_decay else [1e-2]

    def dataset_args(self) -> dict:
        """Keyword arguments of :func:`vestis.data.load_dataset` (kept in the run, so evaluation re-reads the same)."""
        args = dict(
            source=self.data,
            images=self.images,
            labels=self.labels,
            val=self.val,
            test=self.test,
            seed=self.seed,
            split=self.split,
        )
        if self.rare == "fold" and self.min_per_class > 1:
            args["fold_rare"] = self.min_per_class
        if not Path(self.data).is_dir():
            args.update(id_column=self.id_column, path_column=self.path_column, pattern=self.pattern)
        return args

    @property
    def finetune_weight_decay(self) -> float:
        return self.weight_decay[0] if self.weight_decay else 0.05

    @property
    def linear_c(self) -> list[float]:
        return list(self.c) if self.c else [0.001, 0.003, 0.01, 0.03, 0.1]

    def to_dict(self, runtime: bool = False) -> dict:
        """The options nested by group, as a run stores them; ``runtime=True`` adds the ``runtime`` group."""
        out: dict = {name: getattr(self, name) for name in TOP_LEVEL}
        for group, names in GROUPS.items():
            if group != "runtime" or runtime:
                out[group] = {name: _copy(getattr(self, name)) for name in names}
        return out

    @staticmethod
    def flatten(d: dict) -> dict:
        """Option name -> value from a grouped dict (:meth:`to_dict`), a flat one, or a mix of both; other keys
        (such as :data:`STORED_EXTRAS`) are passed through. An option under the wrong group is an error."""
        flat: dict = {}
        for key, value in d.items():
            if key in GROUPS and isinstance(value, dict):
                wrong = sorted(set(value) - set(GROUPS[key]))
                if wrong:
                    raise ValueError(
                        f"unknown training options in group {key!r}: {wrong}; known: {list(GROUPS[key])}"
                    )
                items = value.items()
            else:
                items = [(key, value)]
            for name, v in items:
                if name in flat:
                    raise ValueError(f"training option {name!r} given twice")
                flat[name] = v
        return flat

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a flat dict (the CLI, the Python API, runs before grouping) or a grouped one (:meth:`to_dict`)."""
        flat = cls.flatten(d)
        unknown = sorted(set(flat) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(_FIELDS)}")
        return cls(**flat)

    @classmethod
    def from_stored(cls, train_config: dict, **runtime) -> TrainConfig:
        """A run's stored ``train_config`` (grouped or, before grouping, flat) with ``runtime`` options as given.
        What the trainers store beside the options (:data:`STORED_EXTRAS`) is dropped, and options this version
        does not know (a newer or an older vestis) are dropped with a warning."""
        flat = {k: v for k, v in cls.flatten(train_config).items() if k not in STORED_EXTRAS}
        unknown = sorted(set(flat) - set(_FIELDS))
        if unknown:
            warnings.warn(
                f"ignoring stored training options this vestis does not know: {unknown}", stacklevel=2
            )
        kept = {k: v for k, v in flat.items() if k in _FIELDS and k not in RUNTIME_FIELDS}
        return cls(**{**kept, **runtime})


def _copy(value):
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


_FIELDS = tuple(f.name for f in fields(TrainConfig))
_grouped = [*TOP_LEVEL, *(name for names in GROUPS.values() for name in names)]
assert sorted(_grouped) == sorted(_FIELDS), "every TrainConfig field belongs to exactly one group"
