"""Export a trained model to ONNX (fp32, or int8 static QDQ calibrated on training images), with a parity check.

The exported graph is :class:`~vestis.engine.graph.InferenceGraph` traced on the CPU in fp32: uint8 crops
``image`` (batch, S, S, 3) in, ``probs_0`` .. ``probs_{n-1}`` (one softmax per head) and ``features`` (the
pooled backbone features, before L2 normalisation) out, with a dynamic batch axis. Everything needed to
predict travels in the file's ``"vestis"`` metadata entry (JSON; see :func:`export_onnx`), which
:class:`~vestis.engine.ort_runner.OnnxRunner` reads without torch."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np

from vestis import __version__
from vestis.engine.ort_runner import FORMAT, INPUT, METADATA_KEY, OnnxRunner
from vestis.engine.quantize import (
    CALIBRATION_SEED,
    MAX_CALIBRATION,
    check_validation,
    quantize,
    validate,
)

EMBEDDING_OUTPUT = "features"
EMBEDDING_LAYER = "pooled backbone features (before the heads)"
PARITY_SYNTHETIC = 8  # seeded random images when no parity images are given


def _is_ensemble(model) -> bool:
    return hasattr(model, "members")


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


def _static_same_padding(graph, x) -> int:
    """Replace timm's TensorFlow-style 'same' convolutions and pools (which compute their padding from the
    input's shape at run time: Shape/Gather/Ceil/Pad chains in the ONNX graph, which also block ONNX
    Runtime's Pad+Conv fusion and int8 kernels) by the same operation with the constant padding of this
    input size. Exact at the exported size, and the spatial size is fixed in the exported graph. Returns
    how many modules were replaced."""
    try:
        from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport
        from timm.layers.padding import pad_same_arg
        from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
    except ImportError:  # another timm layout: leave the dynamic padding (slower, still correct)
        return 0
    import torch
    from torch import nn

    kinds = (Conv2dSame, Conv2dSameExport, MaxPool2dSame, AvgPool2dSame)
    sizes: dict = {}

    def record(m, args) -> None:
        sizes[m] = tuple(args[0].shape[-2:])

    hooks = [m.register_forward_pre_hook(record) for m in graph.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            graph(x)
    finally:
        for h in hooks:
            h.remove()

    class StaticSame(nn.Module):
        def __init__(self, inner: nn.Module, pad: list[int], value: float):
            super().__init__()
            self.inner, self.pad, self.value = inner, pad, value
            self.base = next(c for c in type(inner).__mro__[1:] if c.__module__.startswith("torch.nn"))

        def forward(self, x):
            return self.base.forward(self.inner, nn.functional.pad(x, self.pad, value=self.value))

    replaced = 0
    for parent in list(graph.modules()):
        for name, m in list(parent.named_children()):
            if m not in sizes:
                continue
            if isinstance(m, nn.Conv2d):
                kernel, stride, dilation, value = m.weight.shape[-2:], m.stride, m.dilation, 0.0
            else:
                kernel, stride = m.kernel_size, m.stride
                dilation = getattr(m, "dilation", (1, 1))
                value = -float("inf") if isinstance(m, nn.MaxPool2d) else 0.0
            pad = [int(p) for p in pad_same_arg(list(sizes[m]), list(kernel), list(stride), list(dilation))]
            setattr(parent, name, StaticSame(m, pad, value))
            replaced += 1
    return replaced


def _trace(model, path: Path, opset: int) -> None:
    """Trace the inference graph of ``model`` (a CPU fp32 eval copy) into ``path`` and check it."""
    import onnx
    import torch

    from vestis.engine.graph import InferenceGraph

    graph = InferenceGraph(model).eval()
    s = model.preprocess.input_size
    n_heads = len(graph.heads)
    outputs = [f"probs_{k}" for k in range(n_heads)] + [EMBEDDING_OUTPUT]
    dummy = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, s, s, 3), dtype=np.uint8))
    _static_same_padding(graph, dummy)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings: the parity check is the real test
        torch.onnx.export(
            graph,
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT, *outputs]},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def _set_metadata(src: Path, dst: Path, card: dict) -> None:
    import onnx

    m = onnx.load(str(src))
    for p in [p for p in m.metadata_props if p.key == METADATA_KEY]:
        m.metadata_props.remove(p)
    m.metadata_props.add(key=METADATA_KEY, value=json.dumps(card))
    m.producer_name, m.producer_version = "vestis", __version__
    m.doc_string = f"vestis {card['backbone']} classifier ({', '.join(card['heads'])}), {card['precision']}"
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))


def _decode(items: list, pre, batch_size: int, workers: int | None, progress: bool, desc: str):
    """uint8 crops (N, S, S, 3) of the readable ``items`` (through the engine's loader), their positions, and
    the number that could not be read."""
    from tqdm.auto import tqdm

    from vestis.engine.loader import ImageSet, iterate_batches
    from vestis.models.preprocess import load_size, resolve_transform

    ds = ImageSet(list(items), resolve_transform(pre), load_size(pre))
    crops, idx, errors = [], [], 0
    with tqdm(total=len(ds), unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for batch in iterate_batches(ds, batch_size, workers):
            if batch.x is not None:
                crops.append(batch.x[:, 0])
                idx.append(batch.idx)
            errors += len(batch.errors)
            bar.update(len(batch))
    s = pre.input_size
    if not crops:
        return np.zeros((0, s, s, 3), np.uint8), np.zeros(0, np.int64), errors
    return np.concatenate(crops), np.concatenate(idx), errors


def _run(runner, x: np.ndarray, batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    probs: dict[str, list] = {h: [] for h in runner.classes}
    feats = []
    for a in range(0, len(x), batch_size):
        p, f = runner(x[a : a + batch_size])
        for h in probs:
            probs[h].append(p[h])
        feats.append(f)
    return {h: np.concatenate(v) for h, v in probs.items()}, np.concatenate(feats)


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max((float(np.abs(a[h] - b[h]).max(initial=0.0)) for h in a), default=0.0)


def _parity(model, onnx_runner, parity: list | None, batch_size: int, workers, progress):
    """Probabilities (all heads) and features of ONNX Runtime vs PyTorch fp32 on the CPU: the report's parity
    entries, and the crops and PyTorch probabilities (to compare the int8 model with)."""
    from vestis.engine.torch_runner import TorchRunner

    pre = model.preprocess
    source, x, unreadable = "synthetic", None, 0
    if parity:
        x, _, unreadable = _decode(parity, pre, batch_size, workers, progress, "parity images")
        source = "images"
    if x is None or not len(x):  # none given, or none readable
        s = pre.input_size
        x = np.random.default_rng(0).integers(0, 256, (PARITY_SYNTHETIC, s, s, 3), dtype=np.uint8)
        source = "synthetic"
    torch_runner = TorchRunner(model, device="cpu", precision="fp32")
    tp, tf = _run(torch_runner, x, batch_size)
    op, of = _run(onnx_runner, x, batch_size)
    scale = float(np.abs(tf).max(initial=0.0)) or 1.0
    return {
        "parity_max_abs_diff": _max_diff(tp, op),
        "parity_features_max_rel_diff": float(np.abs(tf - of).max(initial=0.0)) / scale,
        "parity_images": int(len(x)),
        "parity_source": source,
        "parity_unreadable": unreadable,
    }, (x, tp)


def export_onnx(
    model,
    out: str | Path,
    *,
    config: dict | None = None,
    int8: bool = False,
    calibration: list | None = None,
    validation: tuple[list, dict[str, list]] | None = None,
    parity: list | None = None,
    opset: int = 17,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = False,
    source: str | None = None,
    activations: str = "uint8",
    max_calibration: int = MAX_CALIBRATION,
    features_only: bool = False,
) -> dict:
    """Write ``model`` (a :class:`~vestis.models.heads.VestisModel`) to ``out`` as ONNX, atomically; return a
    report (below). An :class:`~vestis.models.ensemble.Ensemble` is refused (export one model at a time).

    ``config``: the run's config (``load_checkpoint``'s); its ``metrics`` go into the metadata. ``source``: what is stored as the model's origin (the run directory, or "bundled").
    ``parity``: image paths for the parity check (default: seeded synthetic images): the largest absolute
    difference of any head's probabilities between ONNX Runtime fp32 and PyTorch fp32 on the CPU.
    ``int8``: static int8 quantisation (QDQ; int8 per-channel weights, ``activations`` 'uint8' or 'int8'
    per tensor, MinMax ranges) calibrated on ``calibration`` (paths of training images, decoded by the
    engine's loader to the model's crops; a seeded sample of ``max_calibration`` when there are more). The
    fp32 model is exported first, to a temporary file, and quantised; ``out`` is the int8 file.
    ``features_only``: a model without heads may be exported (its graph computes the embedding only; fast-mode
    training and the index run backbones this way).
    ``validation``: ``(paths, {head: class name per path})``; with ``int8``, top-1 of the fp32 and the int8
    model on them (by :func:`vestis.engine.infer.infer`) is measured and stored (ignored without ``int8``).

    The metadata (``"vestis"``, JSON) holds ``format``, ``vestis_version``, ``backbone``,
    ``backbone_fingerprint``, ``heads`` (ordered classes), ``outputs`` ({head: "probs_k"}), ``embedding``
    ({output, dim, layer, normalized}), ``preprocess``, ``precision`` ('fp32'/'int8'), ``metrics``,
    ``source``, ``parity``, ``opset``, ``created`` and, for int8, ``int8`` (the recipe, the calibration and
    the validation top-1).

    Returns ``{"path", "precision", "bytes", "parity_max_abs_diff", "parity_features_max_rel_diff",
    "parity_images", "parity_source", "parity_unreadable"}``; with int8 also ``"fp32_bytes"``, ``"int8"`` (as in the metadata),
    ``"int8_max_abs_diff"`` (int8 vs PyTorch fp32 probabilities on the parity images) and, with
    ``validation``, ``"top1_fp32"``, ``"top1_int8"`` ({head: accuracy}) and ``"n"`` ({head: images})."""
    import torch

    from vestis.models.checkpoint import weights_fingerprint

    if _is_ensemble(model):
        raise ValueError("cannot export an ensemble to ONNX: export one model at a time")
    if int8 and not calibration:
        raise ValueError("int8 export needs calibration images (paths of training images)")
    if activations not in ("uint8", "int8"):
        raise ValueError(f"activations must be 'uint8' or 'int8', got {activations!r}")
    if not model.classes and not features_only:
        raise ValueError("the model has no heads: nothing to export")
    if int8 and validation is not None:
        check_validation(validation, model.classes)
    config = config or {}
    out = Path(out)
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()  # the caller's model is left as it was
    pre = model.preprocess
    heads = {h: list(c) for h, c in model.classes.items()}
    card = {
        "format": FORMAT,
        "vestis_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": model.backbone_name,
        "backbone_fingerprint": weights_fingerprint(model.backbone),
        "heads": heads,
        "outputs": {h: f"probs_{k}" for k, h in enumerate(heads)},
        "embedding": {
            "output": EMBEDDING_OUTPUT,
            "dim": int(model.num_features),
            "layer": EMBEDDING_LAYER,
            "normalized": False,
        },
        "preprocess": pre.to_dict(),
        "precision": "fp32",
        "metrics": config.get("metrics"),
        "source": source,
        "opset": opset,
    }
    target = _atomic_target(out)
    report: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="vestis-export-") as tmp:
            tmp = Path(tmp)
            fp32 = tmp / "fp32.onnx"
            _trace(model, fp32, opset)
            _set_metadata(fp32, fp32, card)
            par, (px, tp) = _parity(
                model, OnnxRunner(fp32, device="cpu"), parity, batch_size, workers, progress
            )
            report.update(par)
            card["parity"] = {
                "max_abs_diff": par["parity_max_abs_diff"],
                "images": par["parity_images"],
                "source": par["parity_source"],
                "against": "torch fp32 (cpu)",
            }
            if not int8:
                _set_metadata(fp32, target, card)
            else:
                items = list(calibration)
                if len(items) > max_calibration:
                    pick = sorted(random.Random(CALIBRATION_SEED).sample(range(len(items)), max_calibration))
                    items = [items[i] for i in pick]
                crops, _, failed = _decode(items, pre, batch_size, workers, progress, "calibration images")
                if not len(crops):
                    raise ValueError(
                        f"int8 calibration: none of the {len(items)} calibration images could be read"
                    )
                quantized = tmp / "int8.onnx"
                recipe = quantize(fp32, quantized, crops, activations, tmp)
                recipe.update(
                    {
                        "calibration_images": int(len(crops)),
                        "calibration_unreadable": failed,
                        "calibration_seed": CALIBRATION_SEED,
                    }
                )
                int8_card = {**card, "precision": "int8", "int8": recipe}
                _set_metadata(quantized, quantized, int8_card)
                int8_runner = OnnxRunner(quantized, device="cpu")
                ip, _ = _run(int8_runner, px, batch_size)
                report["int8_max_abs_diff"] = _max_diff(tp, ip)
                recipe["max_abs_diff_vs_fp32"] = report["int8_max_abs_diff"]
                if validation is not None:
                    recipe.update(validate(validation, fp32, int8_runner, batch_size, workers, progress))
                    report.update({k: recipe[k] for k in ("top1_fp32", "top1_int8", "n")})
                report["int8"] = recipe
                report["fp32_bytes"] = fp32.stat().st_size
                _set_metadata(quantized, target, int8_card)
        os.replace(target, out)
    finally:
        if target.exists():
            target.unlink()
    report.update({"path": str(out), "precision": "int8" if int8 else "fp32", "bytes": out.stat().st_size})
    return report
