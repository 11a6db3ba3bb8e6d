"""The ONNX Runtime runtime: an exported vestis ``.onnx`` file as a runner. No torch here, directly or not.

The file carries everything needed to predict in its ``"vestis"`` metadata entry (written by
:func:`vestis.engine.export.export_onnx`): heads and their classes in order, which output holds each head's
probabilities, the embedding output, the preprocessing, the precision and the backbone fingerprint. Only
``onnxruntime``, NumPy and Pillow are needed; :func:`vestis.engine.infer.infer` runs an :class:`OnnxRunner`
exactly like a :class:`~vestis.engine.torch_runner.TorchRunner`."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from vestis.models.preprocess import Preprocess

METADATA_KEY = "vestis"
FORMAT = 1  # the metadata format this version writes and reads
INPUT = "image"
PRECISIONS = ("fp32", "int8")


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once): ONNX Runtime's best intra-op
    thread count on CPU. Falls back to the logical CPU count where /proc/cpuinfo says nothing."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            blocks = f.read().strip().split("\n\n")
        for block in blocks:
            fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
            fields = {k.strip(): v.strip() for k, v in fields.items()}
            if int(fields["processor"]) in allowed:
                cores.add((fields.get("physical id", "0"), fields["core id"]))
    except (OSError, KeyError, ValueError):
        cores = set()
    return max(1, min(len(cores), len(allowed)) if cores else len(allowed))


def _ort():
    try:
        import onnxruntime
    except ModuleNotFoundError as e:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError(
            "running an ONNX model needs onnxruntime: pip install 'vestis[runtime]' (or onnxruntime-gpu)",
            name=e.name or "onnxruntime",
        ) from e
    return onnxruntime


def _open_session(path: Path, options=None, providers=None):
    """An InferenceSession, or a one-line error naming the file (missing, empty, truncated, not ONNX)."""
    ort = _ort()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not an ONNX model (an interrupted export?)")
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph, ...: truncated, damaged or not ONNX
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"{path}: not a readable ONNX model (truncated or damaged?): {msg[:200]}") from None


def _parse_card(meta: dict, path: Path) -> dict:
    """The checked "vestis" metadata of ``path`` (its custom metadata map ``meta``)."""
    if METADATA_KEY not in meta:
        raise ValueError(
            f"{path} is not a vestis model (no vestis metadata); export one with `vestis export RUN --format onnx`"
        )
    try:
        card = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: its vestis metadata is not valid JSON ({e.msg}); re-export the model"
        ) from None

    def bad(what: str):
        return ValueError(f"{path}: damaged vestis metadata: {what}; re-export the model")

    if not isinstance(card, dict):
        raise bad(f"expected an object, got {type(card).__name__}")
    fmt = card.get("format")
    if not isinstance(fmt, int):
        raise bad(f'"format" must be an integer, got {fmt!r}')
    if fmt > FORMAT:
        raise ValueError(
            f"{path}: written by a newer vestis (metadata format {fmt}); upgrade vestis to run it"
        )
    heads = card.get("heads")
    if not isinstance(heads, dict):  # empty: a backbone exported for its features only
        raise bad('"heads" must map each head to its class names')
    for head, classes in heads.items():
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise bad(f"head {head!r} needs a list of at least 2 class names")
    outputs = card.get("outputs")
    if not isinstance(outputs, dict) or set(outputs) != set(heads):
        raise bad('"outputs" must name one output per head')
    emb = card.get("embedding")
    if (
        not isinstance(emb, dict)
        or not isinstance(emb.get("output"), str)
        or not isinstance(emb.get("dim"), int)
    ):
        raise bad('"embedding" needs "output" (a name) and "dim" (an integer)')
    if card.get("precision") not in PRECISIONS:
        raise bad(f'"precision" must be one of {PRECISIONS}, got {card.get("precision")!r}')
    try:
        Preprocess.from_dict(card.get("preprocess"))
    except (ValueError, TypeError) as e:
        raise bad(f"preprocess: {e}") from None
    return card


def read_onnx_metadata(path: str | Path) -> dict:
    """The checked ``"vestis"`` metadata of an exported model (the model card: heads, classes, preprocessing,
    precision, metrics, parity, int8 accuracy). Needs only onnxruntime. Raises ValueError naming the file when
    it is not a vestis model or is damaged, FileNotFoundError when it does not exist."""
    ort = _ort()
    path = Path(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata is read
    options.log_severity_level = 3
    session = _open_session(path, options)
    return _parse_card(dict(session.get_modelmeta().custom_metadata_map), path)


def feature_key(card: dict) -> str:
    """What an ONNX model's features mean: the same formula as the PyTorch runner's
    :func:`~vestis.engine.torch_runner.backbone_key` (backbone, its weights' fingerprint, preprocessing,
    precision), so an fp32 export shares the feature cache and index of its PyTorch fp32 model (they agree
    to ~1e-6) and an int8 export gets its own."""
    ident = {
        "backbone": card.get("backbone"),
        "weights": card.get("backbone_fingerprint"),
        "preprocess": Preprocess.from_dict(card["preprocess"]).to_dict(),
        "precision": card["precision"],
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class OnnxRunner:
    """``runner(x) -> ({head: probs (N, C)}, features (N, D))`` for uint8 crops ``x`` (N, H, W, 3), as float32
    NumPy arrays: the same contract as :class:`~vestis.engine.torch_runner.TorchRunner`.

    ``device``: 'auto' (CUDA when onnxruntime-gpu has it, else CPU), 'cuda' or 'cpu'. ``threads``: intra-op
    threads (default: the physical cores). ``session_config``: extra ONNX Runtime session entries, e.g.
    ``{"session.intra_op.allow_spinning": "0"}`` when decoding processes share the cores.

    The graph is optimised fully (``ORT_ENABLE_ALL``): on the bundled Lite0 (2-core AVX2 CPU) that is 2.6x
    the fp32 speed of ``ORT_ENABLE_EXTENDED`` (blocked NCHWc convolutions), and it is what turns an int8
    model's QuantizeLinear/DequantizeLinear pairs into integer kernels with NHWC layouts."""

    runtime = "onnx"

    def __init__(
        self,
        path: str | Path,
        device: str | None = "auto",
        threads: int | None = None,
        session_config: dict[str, str] | None = None,
    ):
        ort = _ort()
        self.path = Path(path)
        device = device or "auto"
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
        available = ort.get_available_providers()
        providers: list = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in available:
            cuda = (
                "CUDAExecutionProvider",
                {"device_id": int(device.split(":")[1])} if ":" in device else {},
            )
            providers = [cuda, "CPUExecutionProvider"]
        elif device.startswith("cuda"):
            warnings.warn(
                f"device {device!r}: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); "
                "running on the CPU",
                stacklevel=2,
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no per-session warnings on the console
        options.intra_op_num_threads = int(threads) if threads else physical_cores()
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(str(key), str(value))
        self.session = _open_session(self.path, options, providers)
        self.card = _parse_card(dict(self.session.get_modelmeta().custom_metadata_map), self.path)
        self.classes: dict[str, list[str]] = {h: list(c) for h, c in self.card["heads"].items()}
        self.preprocess = Preprocess.from_dict(self.card["preprocess"])
        self.precision: str = self.card["precision"]
        self.num_features: int = int(self.card["embedding"]["dim"])
        self._outputs = [self.card["outputs"][h] for h in self.classes] + [self.card["embedding"]["output"]]
        names = {o.name for o in self.session.get_outputs()}
        missing = [o for o in self._outputs if o not in names]
        inputs = [i.name for i in self.session.get_inputs()]
        if missing:
            raise ValueError(
                f"{self.path}: damaged vestis model: no output {missing[0]!r} in the graph; re-export it"
            )
        if inputs != [INPUT]:
            raise ValueError(
                f"{self.path}: damaged vestis model: inputs {inputs}, expected [{INPUT!r}]; re-export it"
            )
        self.provider: str = self.session.get_providers()[0]
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.threads = options.intra_op_num_threads

    @property
    def name(self) -> str:
        return f"onnx {self.precision} ({self.provider})"

    @property
    def fingerprint(self) -> str:
        """What the features mean (keys the feature cache and an index): see :func:`feature_key`."""
        return feature_key(self.card)

    def __call__(self, x) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if isinstance(x, tuple):
            raise ValueError(f"{self.path} is one model; an ensemble's per-member batches cannot run on it")
        x = np.ascontiguousarray(x, dtype=np.uint8)
        s = self.preprocess.input_size
        if x.ndim != 4 or x.shape[1:] != (s, s, 3):
            raise ValueError(f"expected uint8 crops of shape (N, {s}, {s}, 3), got {x.shape}")
        out = self.session.run(self._outputs, {INPUT: x})
        arrays = [np.asarray(a, dtype=np.float32) for a in out]
        return dict(zip(self.classes, arrays[:-1], strict=True)), arrays[-1]
