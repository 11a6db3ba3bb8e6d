"""The one checkpoint format: a run directory with ``model.safetensors`` + ``config.json``.

The weights file holds the heads, plus the backbone when it was trained (otherwise the backbone is
rebuilt from the registry with its pretrained weights). Nothing is ever unpickled.

``config.json`` is versioned (``format``). The reader:

* migrates older formats on read (format 1 -> 2: data paths were stored relative to the working directory
  of the training run; format 2 stores them relative to the run directory, see :func:`resolve_data_load`;
  2 -> 3: nothing to change, format 3 only adds optional keys);
* refuses a newer format with "written by a newer vestis (format N); upgrade";
* warns (once per file) about top-level keys it does not know, and otherwise ignores them;
* raises :class:`CheckpointError` (a ``ValueError``), one line naming the file, for anything damaged:
  corrupt JSON, a config that is not an object or lacks ``backbone`` / ``heads``, malformed heads, a bad
  ``preprocess`` (unknown keys there too: a model prepared differently would predict wrongly) or ``head``,
  and a truncated / empty / foreign ``model.safetensors`` or weights that do not fit the model.

The writer uses the oldest format that holds the model: 3 when it has per-head head types (``head_types``) or
colour statistics (``colour_stats``), which a format-2 reader would ignore and then build the wrong model
for; otherwise 2, which the previous vestis still reads.

Importing this module does not import torch (only loading and saving weights does)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from vestis import __version__
from vestis.models.preprocess import Preprocess
from vestis.models.run_config import (
    BUNDLED,
    CONFIG,
    FORMAT,
    KNOWN_KEYS,
    CheckpointError,
    _head_config,
    _store_data,
    atomic_write_text,
    missing_data_message,
    read_config,
    resolve_data_load,
    resolve_model_dir,
    written_format,
)

if TYPE_CHECKING:
    import torch

    from vestis.models.heads import VestisModel

WEIGHTS = "model.safetensors"
# the config side lives in run_config; these names are part of this module's interface too
__all__ = [
    "BUNDLED",
    "CONFIG",
    "FORMAT",
    "KNOWN_KEYS",
    "WEIGHTS",
    "CheckpointError",
    "atomic_write_text",
    "load_checkpoint",
    "missing_data_message",
    "read_config",
    "read_weights",
    "resolve_data_load",
    "resolve_model_dir",
    "save_checkpoint",
    "weights_fingerprint",
]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's tensors (names, dtypes, values): identifies a backbone's exact weights."""
    import torch

    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# -- writing and loading weights ----------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | Path,
    model: VestisModel,
    *,
    include_backbone: bool = False,
    metrics: dict | None = None,
    data: dict | None = None,
    train_config: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` atomically into ``run_dir``.

    ``dtype`` (e.g. torch.float16) stores floating weights smaller; they are cast back to fp32 on load.
    ``data``: ``source``, ``load.source`` and ``load.images`` as the user gave them (relative to the working
    directory); they are stored relative to ``run_dir`` (absolute ones stay absolute), so the run keeps
    finding its data from any working directory (:func:`resolve_data_load`)."""
    from safetensors.torch import save_file

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
    tmp = run_dir / f"{WEIGHTS}.{os.getpid()}.tmp"
    try:
        save_file(tensors, str(tmp), metadata={"format": "vestis", "version": __version__})
        os.replace(tmp, run_dir / WEIGHTS)
    finally:
        if tmp.exists():
            tmp.unlink()
    config = {
        "format": FORMAT,
        "vestis_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": model.backbone_name,
        "pretrained": model.pretrained,
        "includes_backbone": include_backbone,
        "backbone_fingerprint": weights_fingerprint(model.backbone),
        **({"colour_stats": True} if model.colour_stats else {}),
        "head": model.head_cfg.to_dict(),
        **({"head_types": {h: c.to_dict() for h, c in model.head_cfgs.items()}} if model.head_cfgs else {}),
        "heads": model.classes,
        "preprocess": model.preprocess.to_dict(),
        "metrics": metrics or {},
        "data": _store_data(data, run_dir),
        "train_config": train_config or {},
    }
    config["format"] = written_format(config)  # 2 unless a format-3 key is used: older readers still read it
    atomic_write_text(run_dir / CONFIG, json.dumps(config, indent=2))
    return run_dir


def read_weights(run_dir: str | Path) -> dict:
    """The tensors of ``RUN/model.safetensors``; :class:`CheckpointError` naming the file when it is missing,
    empty, truncated or not a safetensors file."""
    from safetensors.torch import load_file

    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the run directory has {CONFIG} but no weights)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (an interrupted save?); retrain or restore it")
    try:
        return load_file(str(path))  # safetensors: tensors only
    except Exception as e:  # SafetensorError, OSError, ...: truncated or not a safetensors file
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or damaged?): {msg[:200]}"
        ) from None


def load_checkpoint(
    run_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[VestisModel, dict]:
    """Rebuild the model from a run directory (``None``: the bundled default) in eval mode, with its config."""
    from vestis.models.registry import create_model

    run_dir = resolve_model_dir(run_dir)
    config = read_config(run_dir)
    try:
        model = create_model(
            config["backbone"],
            heads=config["heads"],
            pretrained=config["pretrained"] and not config["includes_backbone"],
            head=_head_config(config["head"]),
            head_cfgs={h: _head_config(d) for h, d in config.get("head_types", {}).items()},
            colour_stats=config.get("colour_stats", False),
        )
    except ValueError as e:  # e.g. an unknown backbone name
        raise CheckpointError(f"{Path(run_dir) / CONFIG}: {e}") from None
    model.preprocess = Preprocess.from_dict(config["preprocess"])
    model.pretrained = config["pretrained"]  # how the weights began, kept when the model is saved again
    state = read_weights(run_dir)
    target = model.state_dict()
    weights = Path(run_dir) / WEIGHTS
    bad_shape = [k for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if bad_shape:
        k = bad_shape[0]
        raise CheckpointError(
            f"{weights}: weights do not fit the model ({len(bad_shape)} tensors of the wrong shape, e.g. {k} "
            f"{tuple(state[k].shape)} vs {tuple(target[k].shape)}; do config.json's heads match?)"
        )
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(
            f"{weights}: weights do not fit the model: {' '.join(str(e).split())[:200]}"
        ) from None
    missing = [k for k in missing if config["includes_backbone"] or k.startswith("heads.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if not config["includes_backbone"] and weights_fingerprint(model.backbone) != config.get(
        "backbone_fingerprint"
    ):
        raise CheckpointError(
            f"{run_dir}: the head was trained on backbone weights {config.get('backbone_fingerprint')} but "
            f"{config['backbone']} now loads {weights_fingerprint(model.backbone)}; its predictions would be wrong"
        )
    return model.to(device).eval(), config
