"""Classification heads and the multi-head model."""

from __future__ import annotations

import torch
from torch import nn

from vestis.models.head_config import HeadConfig
from vestis.models.preprocess import Preprocess


def make_head(in_features: int, num_classes: int, cfg: HeadConfig) -> nn.Module:
    if cfg.type == "linear":
        return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, cfg.hidden),
        nn.GELU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(cfg.hidden, num_classes),
    )


class VestisModel(nn.Module):
    """Backbone + a dict of heads. ``forward`` returns ``{head: logits}``."""

    def __init__(
        self,
        backbone: nn.Module,
        backbone_name: str,
        preprocess: Preprocess,
        heads: dict[str, list[str]],
        head_cfg: HeadConfig,
        pretrained: bool,
        head_cfgs: dict[str, HeadConfig] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.preprocess = preprocess
        self.head_cfg = head_cfg
        self.pretrained = pretrained
        self.num_features = int(backbone.num_features)
        self.classes: dict[str, list[str]] = {}
        # heads whose configuration differs from ``head_cfg`` (fast mode chooses each head's type on validation)
        self.head_cfgs: dict[str, HeadConfig] = {}
        self._keys: dict[str, str] = {}
        self.heads = nn.ModuleDict()
        for name, classes in heads.items():
            self.add_head(name, classes, cfg=(head_cfgs or {}).get(name))

    def add_head(
        self, name: str, classes: list[str], module: nn.Module | None = None, cfg: HeadConfig | None = None
    ) -> None:
        """Add (or replace) head ``name`` (built from ``cfg``, default the model's ``head_cfg``, unless a
        ready ``module`` of that configuration is given). Heads are stored under positional keys (h0, h1, ...),
        so any label column name works, even ones like 'type' that clash with module attributes."""
        if len(classes) < 2:
            raise ValueError(f"head {name!r} needs at least 2 classes, got {classes}")
        cfg = cfg or self.head_cfg
        self.head_cfgs.pop(name, None)
        if cfg != self.head_cfg:
            self.head_cfgs[name] = cfg
        key = self._keys.setdefault(name, f"h{len(self._keys)}")
        self.classes[name] = list(classes)
        self.heads[key] = module if module is not None else make_head(self.num_features, len(classes), cfg)

    def head(self, name: str) -> nn.Module:
        return self.heads[self._keys[name]]

    def keep_heads(self, names) -> None:
        """Only the heads ``names`` (in the model's order), stored under the keys a model built with just them has
        (h0, h1, ...), so that its checkpoint loads as one."""
        kept = [(h, self.head(h), self.classes[h], self.head_cfgs.get(h)) for h in self.classes if h in names]
        self.heads, self.classes, self._keys, self.head_cfgs = nn.ModuleDict(), {}, {}, {}
        for h, module, classes, cfg in kept:
            self.add_head(h, classes, module, cfg)

    @torch.no_grad()
    def grow_head(self, name: str, classes: list[str]) -> None:
        """Give head ``name`` the classes ``classes`` (a superset of its own, in any order): the output layer is
        rebuilt with the learned row (weights and bias) of each class it had; new classes get fresh rows."""
        old = self.classes[name]
        if set(old) - set(classes):
            raise ValueError(f"head {name!r}: growing cannot drop classes {sorted(set(old) - set(classes))}")
        head = self.head(name)
        if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
            raise ValueError(f"head {name!r}: cannot grow a head that does not end in a Linear layer")
        last = head[-1]
        new = nn.Linear(last.in_features, len(classes)).to(last.weight.device, last.weight.dtype)
        rows = {c: i for i, c in enumerate(old)}
        for i, c in enumerate(classes):
            if c in rows:
                new.weight[i] = last.weight[rows[c]]
                new.bias[i] = last.bias[rows[c]]
        head[-1] = new
        self.classes[name] = list(classes)

    def freeze(self, groups: int = 0, batchnorm: bool = False) -> list[str]:
        """Freeze the backbone's first ``groups`` layer groups (timm's ``group_matcher``: the stem, then each block
        stage): no gradients, BatchNorm statistics fixed. ``batchnorm``: every backbone BatchNorm keeps its
        pretrained statistics (its scale and shift still train). Lasts through ``train()``; returns the frozen
        module names. Freezing the high-resolution early stages saves most of their backward pass."""
        self._frozen_bn: list[nn.Module] = []
        names: list[str] = []
        if groups > 0:
            matcher = getattr(self.backbone, "group_matcher", None)
            if matcher is None:
                raise ValueError(
                    f"backbone {self.backbone_name!r} has no layer groups (group_matcher) to freeze"
                )
            from timm.models import group_modules

            ordered = list(group_modules(self.backbone, matcher(coarse=True)).values())
            if groups >= len(ordered):
                raise ValueError(
                    f"freeze: backbone {self.backbone_name!r} has {len(ordered)} layer groups; freeze at most "
                    f"{len(ordered) - 1} (the last group feeds the head)"
                )
            names = [n for group in ordered[:groups] for n in group]
            mods = dict(self.backbone.named_modules())
            for n in names:
                mods[n].requires_grad_(False)
                self._frozen_bn += [
                    m for m in mods[n].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                ]
        if batchnorm:
            self._frozen_bn += [
                m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ]
        self.train(self.training)
        return names

    def train(self, mode: bool = True):
        super().train(mode)
        for m in getattr(self, "_frozen_bn", ()):
            m.eval()
        return self

    def without_heads(self, backbone: nn.Module | None = None) -> VestisModel:
        """A feature extractor over this model's backbone (or ``backbone``), preprocessing and settings, no heads
        (the modules are shared, not copied)."""
        net = self.backbone if backbone is None else backbone
        return VestisModel(net, self.backbone_name, self.preprocess, {}, self.head_cfg, self.pretrained)

    @property
    def colour_stats(self) -> bool:
        return hasattr(self.backbone, "colour")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def classify(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.heads[key](feats) for name, key in self._keys.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(x))
