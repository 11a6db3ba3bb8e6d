"""Options shared by several subcommands."""

from __future__ import annotations


def _add_runtime(p, default_runtime: str = "auto") -> None:
    from vestis.engine.load import PRECISIONS, RUNTIMES

    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=default_runtime,
        help="auto: ONNX Runtime fp32 on a CPU when installed (same answers, faster), else PyTorch",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="PyTorch: auto (bf16 where the CPU/GPU has fast bf16 units, else fp32), fp32, bf16",
    )
