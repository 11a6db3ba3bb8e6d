"""Typed training configuration: unknown or invalid options are errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from vestis.models.registry import DEFAULT_BACKBONE
from vestis.train.losses import LOSSES

MODES = ("fast", "finetune")
HEADS = ("linear", "mlp", "auto")


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/train"
    images: str | None = None  # catalogue CSV: the image directory
    labels: list[str] | None = None  # label columns (heads); folders: one, named after the folder level
    id_column: str = "id"  # catalogue CSV: the id column
    path_column: str | None = None  # catalogue CSV: a column holding image paths (instead of pattern)
    pattern: str = "{id}.jpg"  # catalogue CSV: image file name from the row's columns
    split: str | None = None  # None (folder splits / seeded split) or "year:even"
    val: float = 0.1  # validation share when the data has no validation split
    test: float = 0.1  # test share when the data has no splits at all
    seed: int = 0
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True
    mode: str = "fast"
    head: str = "auto"  # fast mode: linear, mlp, or auto (both tried, chosen on validation)
    hidden: int = 512
    dropout: float = 0.2
    loss: str = "ce"
    label_smoothing: float = 0.1
    epochs: int = 60  # fast mode: head epochs
    lr: float = 1e-3
    weight_decay: list[float] | None = None  # fast mode, MLP head: grid chosen on validation (default 1e-4, 1e-2, 1e-1)
    c: list[float] | None = None  # fast mode, linear head: inverse L2 strengths tried (default 0.01, 0.03, 0.1, 0.3)
    lbfgs_iter: int = 300  # fast mode, linear head: L-BFGS iterations at most
    select: str = "top1"  # validation metric for model selection: top1 or macro_f1
    tta: bool = True  # flip test-time augmentation (and flipped copies as training views in fast mode)
    batch_size: int = 64
    workers: int | None = None
    precision: str = "auto"  # fp32, bf16, auto
    device: str = "auto"
    cache: bool = True
    cache_dir: str | None = None
    min_per_class: int = 1  # classes with fewer training images are dropped from that head (reported)
    quiet: bool = False

    def __post_init__(self):
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
                self.epochs >= 1 and self.batch_size >= 1 and self.hidden >= 1,
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
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid training option: {msg}")
        if self.labels is not None and (not self.labels or len(set(self.labels)) != len(self.labels)):
            raise ValueError("labels must be a non-empty list of distinct column names")

    @property
    def weight_decays(self) -> list[float]:
        return list(self.weight_decay) if self.weight_decay else [1e-4, 1e-2, 1e-1]

    def dataset_args(self) -> dict:
        """Keyword arguments of :func:`vestis.data.load_dataset` (kept in the run, so evaluation re-reads the same)."""
        args = dict(source=self.data, images=self.images, labels=self.labels, val=self.val, test=self.test,
                    seed=self.seed, split=self.split)  # fmt: skip
        if not Path(self.data).is_dir():
            args.update(id_column=self.id_column, path_column=self.path_column, pattern=self.pattern)
        return args

    @property
    def linear_c(self) -> list[float]:
        return list(self.c) if self.c else [0.01, 0.03, 0.1, 0.3]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**d)
