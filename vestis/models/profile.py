"""What a model costs: parameters, MACs and FLOPs, theoretical receptive field per stage, measured images/s.

FLOPs come from PyTorch's own counter (:class:`torch.utils.flop_counter.FlopCounterMode`), which counts
convolutions and matrix products (2 FLOPs per multiply-accumulate) and nothing else, so MACs = FLOPs / 2.

The receptive field is followed through the graph as it runs: every tensor carries its receptive field size
and jump (the input pixels between two neighbouring positions); a convolution or pooling with kernel ``k``,
stride ``s`` and dilation ``d`` gives ``rf + (k - 1) * d * jump`` and ``jump * s``; element-wise ops
(additions of residual branches, activations, BatchNorm) take the largest of their inputs. Globally pooled
tensors (squeeze-and-excitation gates) are left out of that maximum, as is usual, so the figure is the
convolutional receptive field. A stage's figure is that of its output."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class RF:
    size: float  # receptive field side, input pixels (inf: global)
    jump: float  # input pixels between neighbouring output positions (the effective stride)


_GLOBAL = RF(math.inf, math.inf)


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _arg(args, kwargs, i: int, name: str, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class ReceptiveFieldMode(TorchFunctionMode):
    """Follows the receptive field of every tensor computed under it (see the module docstring)."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.rf: dict[int, RF] = {id(x): RF(1, 1)}
        self._keep = [x]  # tensors stay alive while tracked, so ids are not reused

    def of(self, t: torch.Tensor) -> RF | None:
        return self.rf.get(id(t))

    def _combine(self, inputs: list[torch.Tensor]) -> RF | None:
        known = [self.rf[id(t)] for t in inputs if id(t) in self.rf]
        spatial = [r for r in known if r is not _GLOBAL]
        if spatial:
            return RF(max(r.size for r in spatial), max(r.jump for r in spatial))
        return _GLOBAL if known else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        src = self.rf.get(id(inputs[0])) if inputs else None
        if name in (
            "conv2d",
            "max_pool2d",
            "avg_pool2d",
            "_max_pool2d",
            "max_pool2d_with_indices",
            "lp_pool2d",
        ):
            new = None
            if src is not None and src is not _GLOBAL:
                if name == "conv2d":
                    k = args[1].shape[-2:] if len(args) > 1 else kwargs["weight"].shape[-2:]
                    stride, dil = _arg(args, kwargs, 3, "stride", 1), _arg(args, kwargs, 5, "dilation", 1)
                else:
                    k = _arg(args, kwargs, 1, "kernel_size", 1)
                    stride = _arg(args, kwargs, 2, "stride", None) or k
                    dil = _arg(args, kwargs, 4, "dilation", 1) if "max" in name else 1
                (k, _), (s, _), (d, _) = _pair(k), _pair(stride), _pair(dil)
                new = RF(src.size + (k - 1) * d * src.jump, src.jump * s)
            else:
                new = src
        elif name.startswith("adaptive_") or (
            name in ("mean", "amax", "sum") and self._reduces_space(args, kwargs)
        ):
            new = _GLOBAL if src is not None else None
        else:
            new = self._combine(inputs)
        if new is not None:
            for t in _tensors(out):
                self.rf[id(t)] = new
                self._keep.append(t)
        return out

    @staticmethod
    def _reduces_space(args, kwargs) -> bool:
        dims = _arg(args, kwargs, 1, "dim", None)
        if dims is None:
            return True
        dims = [dims] if isinstance(dims, int) else list(dims)
        return any(d in (2, 3, -1, -2) for d in dims)


@dataclass
class Stage:
    name: str
    shape: list[int]  # output (C, H, W) at the profiled input size
    params: int
    macs: int
    rf: float  # theoretical receptive field side (input pixels)
    stride: float  # effective stride (jump)


@dataclass
class Profile:
    name: str
    input_size: int
    in_chans: int
    params: int
    backbone_params: int
    head_params: int
    flops: int
    macs: int
    stages: list[Stage] = field(default_factory=list)
    speed: dict[str, float] = field(default_factory=dict)  # "batch_1", "batch_32": images/s, eager fp32

    def to_dict(self) -> dict:
        d = asdict(self)
        for s in d["stages"]:
            s["rf"] = None if math.isinf(s["rf"]) else s["rf"]
            s["stride"] = None if math.isinf(s["stride"]) else s["stride"]
        return d


def stage_modules(backbone: nn.Module) -> list[tuple[str, list[str]]]:
    """The backbone's stages as (label, [module names]): timm's coarse layer groups (``group_matcher``: stem,
    each block stage, the final layers with the last) where the backbone has them, else its direct children.
    The names are the largest modules wholly inside the group, in definition order."""
    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        return [(n, [n]) for n, m in backbone.named_children() if any(True for _ in m.parameters())]
    from timm.models import group_modules

    out = []
    for i, names in enumerate(group_modules(backbone, matcher(coarse=True)).values()):
        tops = _covering(backbone, set(names))
        label = "stem" if i == 0 else f"stage {i}"
        shown = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in tops))
        out.append((f"{label} ({' + '.join(shown[:3])}{' …' if len(shown) > 3 else ''})", tops))
    return out


def _covering(root: nn.Module, group: set[str]) -> list[str]:
    """The largest modules whose parameter-holding modules all lie in ``group`` (a set of such names)."""
    holders: dict[str, list[str]] = {}
    for name, mod in root.named_modules():
        holders[name] = [
            f"{name}.{n}".strip(".") for n, m in mod.named_modules() if any(True for _ in m.parameters(False))
        ]
    covered = {n for n, h in holders.items() if h and all(x in group for x in h)}
    return [
        n
        for n, _ in root.named_modules()
        if n and n in covered and ".".join(n.split(".")[:-1]) not in covered
    ]


def _count(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def _trace_stages(backbone: nn.Module, x: torch.Tensor, stages: list[tuple[str, list[str]]]):
    """Receptive field, output shape and FLOPs of each stage, from one forward pass."""
    mods = dict(backbone.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []
    hooks = []
    for _, names in stages:
        for n in names:

            def hook(_m, _inp, out, n=n):
                if isinstance(out, torch.Tensor):
                    outputs[n] = out
                    order.append(n)

            hooks.append(mods[n].register_forward_hook(hook))
    try:
        with torch.no_grad(), ReceptiveFieldMode(x) as mode:
            backbone(x)
        result = []
        for stage, names in stages:
            ran = [n for n in order if n in names]
            last = outputs.get(ran[-1]) if ran else None
            rf = mode.of(last) if last is not None else None
            shape = list(last.shape[1:]) if last is not None else []
            result.append((stage, names, shape, rf))
        return result
    finally:
        for h in hooks:
            h.remove()


def _members(model: nn.Module) -> list[nn.Module]:
    return list(getattr(model, "members", [model]))


def profile_model(
    model: nn.Module,
    name: str,
    input_size: int | None = None,
    speed: bool = True,
    seconds: float = 2.0,
    batches: tuple[int, ...] = (1, 32),
) -> Profile:
    """Profile a :class:`~vestis.models.heads.VestisModel` (or an ensemble of them) at ``input_size`` (default:
    its preprocessing's). ``speed``: also measure eager fp32 images/s at each batch size in ``batches``
    (on the current torch device threads; about ``seconds`` per batch size after a warm-up)."""
    if any(
        p.device.type != "cpu" for p in model.parameters()
    ):  # measured on the CPU; leave the caller's alone
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    members = _members(model)
    size = int(input_size or members[0].preprocess.input_size)
    x = torch.randn(1, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    bb_params = sum(p.numel() for m in members for p in m.backbone.parameters())
    counts = [_count(m, x) for m in members]
    flops, per_module = sum(c[0] for c in counts), counts[0][1]
    stages: list[Stage] = []
    if len(members) == 1:
        m = members[0]
        mods = dict(m.backbone.named_modules())
        prefix = f"{type(m).__name__}.backbone"
        for stage, names, shape, rf in _trace_stages(m.backbone, x, stage_modules(m.backbone)):
            p = sum(q.numel() for n in names for q in mods[n].parameters())
            f = sum(per_module.get(f"{prefix}.{n}", 0) for n in names)
            stages.append(
                Stage(stage, shape, p, f // 2, rf.size if rf else math.nan, rf.jump if rf else math.nan)
            )
    prof = Profile(
        name=name,
        input_size=size,
        in_chans=int(getattr(members[0].backbone, "in_chans", 3)),
        params=params,
        backbone_params=bb_params,
        head_params=params - bb_params,
        flops=int(flops),
        macs=int(flops) // 2,
        stages=stages,
    )
    if speed:
        prof.speed = {f"batch_{b}": measure_speed(model, size, b, seconds) for b in batches}
    return prof


@torch.inference_mode()
def measure_speed(model: nn.Module, size: int, batch: int, seconds: float = 2.0) -> float:
    """Images/s of eager fp32 inference on random input, set up as the PyTorch runner runs it: channels-last,
    and freed memory kept in the process (without it big batches page-fault: Lite0 at batch 32, 30 vs 85 img/s)."""
    from vestis.runtime import tune_allocator

    tune_allocator()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    model(x)  # warm-up
    t0, n = time.perf_counter(), 0
    while True:
        model(x)
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 2:
            return n * batch / elapsed


def _fmt(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def format_profile(p: Profile, cpu: str | None = None) -> str:
    lines = [
        f"{p.name} at {p.input_size}x{p.input_size} ({p.in_chans} channel{'s' if p.in_chans > 1 else ''})",
        f"params {_fmt(p.params)} (backbone {_fmt(p.backbone_params)}, heads {_fmt(p.head_params)})",
        f"MACs {_fmt(p.macs)}  FLOPs {_fmt(p.flops)}  (torch.utils.flop_counter: conv + matmul, FLOPs = 2 x MACs)",
    ]
    if p.stages:
        rows = [("stage", "output", "params", "MACs", "RF px", "stride")]
        for s in p.stages:
            rf = "global" if math.isinf(s.rf) else ("?" if math.isnan(s.rf) else f"{s.rf:g}")
            st = "-" if math.isinf(s.stride) or math.isnan(s.stride) else f"{s.stride:g}"
            rows.append((s.name, "x".join(map(str, s.shape)), _fmt(s.params), _fmt(s.macs), rf, st))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += [""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if p.speed:
        speeds = ", ".join(f"batch {k.split('_')[1]}: {v:.1f} img/s" for k, v in p.speed.items())
        lines += ["", f"eager fp32 {speeds}" + (f"  [{cpu}]" if cpu else "")]
    return "\n".join(lines)
