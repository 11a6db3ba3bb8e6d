"""Open a model for inference in the runtime asked for: run directories (one, or several as an ensemble),
the bundled default, or an exported ``.onnx`` file (ONNX Runtime, without importing torch).

``runtime='auto'`` picks the fastest runtime whose answers equal eager PyTorch fp32 (docs/BENCHMARKS.md):
ONNX Runtime fp32 on the CPU when onnxruntime is installed (the run is exported once, into the cache, keyed
by its exact weights), PyTorch otherwise (and on a GPU, and for ensembles). bf16 and int8 change the answers
a little, so they are never picked by 'auto': ask for ``precision='bf16'`` (PyTorch) or export with
``--int8``."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")


def is_onnx(source) -> bool:
    return source is not None and str(source).lower().endswith(".onnx")


def has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _check(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")


def onnx_cache_dir(cache_dir: str | Path | None = None) -> Path:
    base = (
        Path(cache_dir)
        if cache_dir
        else Path(os.environ.get("VESTIS_CACHE", Path.home() / ".cache" / "vestis"))
    )
    return base / "onnx"


def _want_onnx(runtime: str, precision: str, device: str, n_models: int) -> bool:
    if runtime == "onnx":
        if precision == "bf16":
            raise ValueError(
                "bf16 is a PyTorch precision; use --runtime torch (ONNX Runtime runs fp32 or int8)"
            )
        if n_models > 1:
            raise ValueError("an ensemble runs in PyTorch only: use --runtime torch or auto")
        if not has_onnxruntime():
            raise RuntimeError("--runtime onnx needs onnxruntime: pip install 'vestis[runtime]'")
        return True
    if runtime == "torch":
        return False
    return (
        n_models == 1
        and precision in ("auto", "fp32")
        and str(device) in ("auto", "cpu")
        and has_onnxruntime()
        and not _cuda_wanted(device)
    )


def _cuda_wanted(device: str) -> bool:
    if str(device).startswith("cuda"):
        return True
    if device != "auto":
        return False
    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        return False  # no NVIDIA device here: no need to import torch to ask
    import torch

    return torch.cuda.is_available()


def exported_path(run_dir: Path, cache_dir=None) -> Path:
    """Where a run's ONNX export is cached: keyed by the bytes of its ``config.json`` and weights and the vestis
    version, so a cached export is found without importing torch or building the model."""
    from vestis import __version__
    from vestis.models.checkpoint import CONFIG, WEIGHTS

    h = hashlib.sha1(__version__.encode())
    for name in (CONFIG, WEIGHTS):
        try:
            h.update((run_dir / name).read_bytes())
        except OSError:  # reported properly when the run is loaded
            h.update(b"missing")
    return onnx_cache_dir(cache_dir) / f"run-{h.hexdigest()[:20]}.onnx"


def load_runner(
    sources=None,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    cache_dir=None,
    quiet: bool = True,
):
    """-> (runner, card). ``sources``: None (the bundled default), a run directory, a list of them (an
    ensemble) or an ``.onnx`` file. ``card``: the checkpoint's config (an ONNX file: its metadata)."""
    _check(runtime, precision)
    srcs = list(sources) if isinstance(sources, (list, tuple)) else [sources]
    srcs = srcs or [None]
    if any(is_onnx(s) for s in srcs):
        if len(srcs) > 1:
            raise ValueError("an .onnx file is one model: ensembles take run directories")
        if runtime == "torch":
            raise ValueError(f"{srcs[0]} is an ONNX file: it runs in ONNX Runtime (--runtime onnx or auto)")
        if precision == "bf16":
            raise ValueError("bf16 is a PyTorch precision; an .onnx file runs in its own precision")
        if not has_onnxruntime():
            raise RuntimeError("an .onnx model needs onnxruntime: pip install 'vestis[runtime]'")
        if not Path(srcs[0]).is_file():
            raise FileNotFoundError(f"{srcs[0]}: no such ONNX file")
        from vestis.engine.ort_runner import OnnxRunner

        runner = OnnxRunner(srcs[0], device=device)
        return runner, dict(runner.card)
    if _want_onnx(runtime, precision, device, len(srcs)):
        from vestis.engine.ort_runner import OnnxRunner
        from vestis.models.checkpoint import read_config, resolve_model_dir

        run_dir = resolve_model_dir(srcs[0])
        config = read_config(run_dir)  # a damaged run fails here, naming the file
        path = exported_path(run_dir, cache_dir)
        if not path.is_file():
            from vestis.engine.export import export_onnx
            from vestis.models.checkpoint import load_checkpoint

            model, config = load_checkpoint(run_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not quiet:
                print(f"exporting to ONNX once (cached in {path.parent})", flush=True)
            export_onnx(model, path, config=config, source=str(srcs[0] or "bundled"))
        return OnnxRunner(path, device="cpu" if device == "auto" else device), config
    from vestis.engine.torch_runner import TorchRunner
    from vestis.models.ensemble import load_models

    model, config = load_models(srcs)

    return TorchRunner(model, device, precision), config


def feature_runner(
    model, device="auto", precision: str = "auto", runtime: str = "auto", cache_dir=None, quiet: bool = True
):
    """A runner for ``model``'s pooled backbone features (its heads are not used): fast-mode training, the
    fine-tuning probe and the index embed many images through it. ``runtime='auto'`` runs ONNX Runtime fp32
    on the CPU, as :func:`load_runner` does (the backbone is exported once into the cache, keyed by its exact
    weights and preprocessing; fp32 features of both runtimes share the feature cache), PyTorch otherwise."""
    _check(runtime, precision)
    device = str(device)  # also a torch.device
    if _want_onnx(runtime, precision, device, 1):
        from vestis.engine.ort_runner import OnnxRunner
        from vestis.engine.torch_runner import backbone_key

        path = onnx_cache_dir(cache_dir) / f"backbone-{backbone_key(model, 'fp32')}.onnx"
        if not path.is_file():
            from vestis.engine.export import export_onnx

            path.parent.mkdir(parents=True, exist_ok=True)
            if not quiet:
                print(f"exporting the backbone to ONNX once (cached in {path.parent})", flush=True)
            export_onnx(model.without_heads(), path, source=model.backbone_name, features_only=True)
        return OnnxRunner(path, device="cpu" if device == "auto" else device)
    from vestis.engine.torch_runner import TorchRunner

    return TorchRunner(model, device, precision)
