"""Which model embeds an index: opening one (a run, an ``.onnx`` file, the bundled default or a bare backbone),
what the index records about it, and refusing a model whose features are not comparable with the index's."""

from __future__ import annotations

import os
from pathlib import Path

from vestis.index.store import Index, ModelMismatch

BACKBONE_PREFIX = "backbone:"


def open_model(
    spec: str | None = None,
    *,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    cache_dir=None,
):
    """The model that embeds: None (the bundled default), a run directory, an ``.onnx`` file or
    ``backbone:NAME`` (a registered backbone's pretrained ImageNet features alone, no heads; PyTorch fp32)."""
    from vestis.api import Model, load

    if spec and str(spec).startswith(BACKBONE_PREFIX):
        from vestis.engine.torch_runner import TorchRunner
        from vestis.models import create_model

        name = str(spec)[len(BACKBONE_PREFIX) :]
        net = create_model(name, heads=None, pretrained=True)
        runner = TorchRunner(net, "cpu" if device == "auto" else device, "fp32")
        return Model(runner, {"backbone": net.backbone_name, "heads": {}}, str(spec), cache_dir)
    return load(spec, runtime=runtime, device=device, precision=precision, cache_dir=cache_dir)


def model_record(model) -> dict:
    """What an index stores about the model that embedded it (the fingerprint decides comparability)."""
    src = model.source
    if src and not str(src).startswith(BACKBONE_PREFIX) and Path(str(src)).exists():
        src = os.path.abspath(str(src))
    return {
        "source": src,
        "fingerprint": model.runner.fingerprint,
        "backbone": model.card.get("backbone"),
        "heads": {h: len(c) for h, c in model.classes.items()},
        "precision": getattr(model.runner, "precision", None),
        "runtime": model.runtime,
    }


def index_model(index: Index, *, device: str = "auto", cache_dir=None):
    """The model recorded in the index, loaded in the precision it embedded with."""
    rec = index.manifest.get("model") or {}
    precision = "fp32" if rec.get("precision") == "fp32" else "auto"
    src = rec.get("source")
    try:
        model = open_model(src, device=device, precision=precision, cache_dir=cache_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"the index's model is not found ({e}); pass --model with the same model"
        ) from None
    check_model(index, model)
    return model


def check_model(index: Index, model) -> None:
    """Refuse a model whose embeddings are not comparable with the index's (another backbone, weights,
    preprocessing or precision)."""
    rec = index.manifest.get("model") or {}
    fp = model.runner.fingerprint
    if rec.get("fingerprint") != fp or int(model.embedding_dim) != index.dim:
        built = rec.get("source") or "the bundled default model"
        raise ModelMismatch(
            f"{index.dir or 'this index'} was built with {built} (features {rec.get('fingerprint')}, "
            f"{rec.get('backbone')}, {rec.get('precision')}, dim {index.dim}); the query model "
            f"{model.source or 'the bundled default model'} computes other features ({fp}, "
            f"{model.card.get('backbone')}, {getattr(model.runner, 'precision', '?')}, dim {model.embedding_dim}): "
            "search with the index's own model or rebuild the index with this one"
        )


def views_of(index: Index) -> tuple[str, ...]:
    return tuple(index.manifest["embedding"].get("views") or ("plain",))
