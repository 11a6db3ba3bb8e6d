"""The one checkpoint format: a run directory with ``model.safetensors`` + ``config.json``.

The weights file holds the heads, plus the backbone when it was trained (otherwise the backbone is
rebuilt from the registry with its pretrained weights). Nothing is ever unpickled."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vestis import __version__
from vestis.models.heads import HeadConfig, VestisModel
from vestis.models.preprocess import Preprocess
from vestis.models.registry import create_model

FORMAT = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "default"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's tensors (names, dtypes, values): identifies a backbone's exact weights."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(run_dir: str | Path, model: VestisModel, *, include_backbone: bool = False,
                    metrics: dict | None = None, data: dict | None = None, train_config: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:  # fmt: skip
    """Write ``model.safetensors`` and ``config.json`` atomically into ``run_dir``.

    ``dtype`` (e.g. torch.float16) stores floating weights smaller; they are cast back to fp32 on load."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = (
        model.state_dict()
        if include_backbone
        else {"heads." + k: v for k, v in model.heads.state_dict().items()}
    )
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v
    tmp = run_dir / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "vestis", "version": __version__})
    os.replace(tmp, run_dir / WEIGHTS)
    config = {
        "format": FORMAT,
        "vestis_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": model.backbone_name,
        "pretrained": model.pretrained,
        "includes_backbone": include_backbone,
        "backbone_fingerprint": weights_fingerprint(model.backbone),
        "head": model.head_cfg.to_dict(),
        "heads": model.classes,
        "preprocess": model.preprocess.to_dict(),
        "metrics": metrics or {},
        "data": data or {},
        "train_config": train_config or {},
    }
    atomic_write_text(run_dir / CONFIG, json.dumps(config, indent=2))
    return run_dir


def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a vestis model: no {CONFIG} (train one with `vestis train`)"
        )
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(
            f"{path}: unsupported checkpoint format {config.get('format')!r} (this vestis reads {FORMAT})"
        )
    return config


def resolve_model_dir(model: str | Path | None) -> Path:
    """``None`` -> the bundled default model; otherwise a run directory."""
    return BUNDLED if model in (None, "", "default") else Path(model)


def load_checkpoint(
    run_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[VestisModel, dict]:
    """Rebuild the model from a run directory (``None``: the bundled default) in eval mode, with its config."""
    run_dir = resolve_model_dir(run_dir)
    config = read_config(run_dir)
    model = create_model(
        config["backbone"],
        heads=config["heads"],
        pretrained=config["pretrained"] and not config["includes_backbone"],
        head=HeadConfig.from_dict(config["head"]),
    )
    model.preprocess = Preprocess.from_dict(config["preprocess"])
    model.pretrained = config["pretrained"]  # how the weights began, kept when the model is saved again
    state = load_file(str(Path(run_dir) / WEIGHTS))  # safetensors: tensors only
    target = model.state_dict()
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if config["includes_backbone"] or k.startswith("heads.")]
    if missing or unexpected:
        raise ValueError(
            f"{run_dir}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if not config["includes_backbone"] and weights_fingerprint(model.backbone) != config.get(
        "backbone_fingerprint"
    ):
        raise ValueError(
            f"{run_dir}: the head was trained on backbone weights {config.get('backbone_fingerprint')} but "
            f"{config['backbone']} now loads {weights_fingerprint(model.backbone)}; its predictions would be wrong"
        )
    return model.to(device).eval(), config
