"""int8 for the ONNX export: static quantisation (QDQ) calibrated on decoded training crops, and the fp32 vs
int8 top-1 check on validation images. Used by :func:`vestis.engine.export.export_onnx`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from vestis.engine.infer import top1
from vestis.engine.ort_runner import INPUT, OnnxRunner

CALIBRATION_SEED = 0
CALIBRATION_BATCH = 16
MAX_CALIBRATION = 256  # calibration images (a seeded sample of the training images when there are more)
# 7-bit weights: on AVX2 CPUs without VNNI, ONNX Runtime's uint8 x int8 kernels (VPMADDUBSW) saturate
# int16 sums with full-range weights; measured on the bundled Lite0 (an AVX2-only CPU) that cost 0.3 point of
# validation top-1 (0.930 vs 0.933) and 0.5 point of test top-1, and reduce_range gave fp32's exact top-1 on
# both. Reduced-range weights are accurate everywhere, so one file runs well on any x86 CPU.
INT8_REDUCE_RANGE = True
INT8_CALIBRATION = "MinMax"  # ReLU6 networks have bounded activations: min/max ranges lose nothing here
# Operators quantised in the int8 model: the convolutions (all of a CNN's arithmetic) and the ops between
# them. Softmax stays float (its probabilities keep full resolution), and so do the heads and the pooled
# features (see _float_tail), so the embedding is not rounded to 8 bits.
INT8_OPS = ["Conv", "Clip", "Relu", "Add", "Mul", "Pad", "MaxPool", "AveragePool", "Concat"]


class _Calibration:
    """onnxruntime's CalibrationDataReader over decoded crops (subclassed lazily: onnxruntime is imported
    only when int8 is asked for)."""

    def __new__(cls, crops: np.ndarray, batch_size: int):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.batches = iter([crops[a : a + batch_size] for a in range(0, len(crops), batch_size)])

            def get_next(self):
                b = next(self.batches, None)
                return None if b is None else {INPUT: np.ascontiguousarray(b)}

        return Reader()


def _float_tail(path: Path) -> list[str]:
    """Nodes that stay float in the int8 model: everything after the last convolution (pooling, flatten, the
    heads' Gemm/MatMul, softmax). They cost nothing next to the convolutions, and keeping them float keeps the
    embedding and the head logits at full resolution."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    last_conv = max((k for k, n in enumerate(g.node) if n.op_type == "Conv"), default=-1)
    return [n.name for n in g.node[last_conv + 1 :] if n.name]


def quantize(fp32: Path, dst: Path, crops: np.ndarray, activations: str, tmp: Path) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
    excluded = _float_tail(prepared)
    quantize_static(
        str(prepared),
        str(dst),
        _Calibration(crops, CALIBRATION_BATCH),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=INT8_OPS,
        nodes_to_exclude=excluded,
        per_channel=True,
        reduce_range=INT8_REDUCE_RANGE,
        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, INT8_CALIBRATION),
        extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True},
    )
    return {
        "format": "QDQ",
        "weights": "int8, per channel, symmetric",
        "activations": f"{activations}, per tensor" + (", symmetric" if activations == "int8" else ""),
        "calibration": INT8_CALIBRATION,
        "reduce_range": INT8_REDUCE_RANGE,
        "quantized_ops": INT8_OPS,
        "float_nodes": len(excluded),
    }


def check_validation(validation, classes: dict) -> None:
    if (
        not isinstance(validation, (tuple, list))
        or len(validation) != 2
        or not isinstance(validation[1], dict)
    ):
        raise ValueError("validation must be (paths, {head: class name per path})")
    paths, labels = validation
    for h, lab in labels.items():
        if h not in classes:
            raise ValueError(f"validation labels for head {h!r}, which the model does not have")
        if len(lab) != len(paths):
            raise ValueError(f"validation: {len(paths)} images but {len(lab)} labels for head {h!r}")


def validate(validation, fp32: Path, int8_runner: OnnxRunner, batch_size, workers, progress) -> dict:
    """Top-1 of the fp32 and the int8 model on the validation images (through the engine's ``infer``)."""
    from vestis.engine.infer import infer

    paths, labels = validation
    result = {}
    for precision, runner in (("fp32", OnnxRunner(fp32, device="cpu")), ("int8", int8_runner)):
        o = infer(
            runner,
            list(paths),
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            desc=f"validation {precision}",
        )
        t = top1(o.probs, o.ok, labels, runner.classes)
        result[f"top1_{precision}"] = t["acc"]
        result["n"] = t["n"]
        result["validation_unreadable"] = int((~o.ok).sum())
    return result
