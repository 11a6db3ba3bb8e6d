"""Fine-tuning (``vestis train --mode finetune``): the whole network trained end to end.

The recipe, every part a :class:`TrainConfig` field: the head starts from a linear probe on frozen features
(LP-FT, Kumar et al. 2022), AdamW with the backbone at a tenth of the head's learning rate, linear warm-up then
cosine decay, label smoothing, random-resized crop + flip + TrivialAugment, optional mixup/cutmix, class-weighted
or focal loss or a class-balanced sampler, weight EMA, the best epoch on validation kept (early stopping) and
flip test-time augmentation. bf16 autocast and channels_last; DistributedDataParallel under torchrun.

Staged classes (``--stages top:20,rest``): train on the 20 most frequent classes, then grow the head to every
class (keeping the learned rows) and go on with the rest; both groups are reported.

After every epoch a resumable state goes to ``RUN/last/``: ``state.json`` (epoch, optimizer hyper-parameters
and step counts, EMA and sampler state, RNG states, best score, config) and the tensors it names in
``RUN/last/epoch-NNNN/{model,ema,optimizer}.safetensors``. ``state.json`` is replaced atomically last, so it
always names a complete set; nothing is pickled. The best model so far is the run's own checkpoint
(``RUN/model.safetensors`` + ``config.json``), so the run can be evaluated while it trains."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vestis.data import Skipped, load_dataset
from vestis.engine.features import extract_features
from vestis.engine.infer import infer
from vestis.engine.loader import ImageSet, default_workers
from vestis.engine.torch_runner import TorchRunner
from vestis.evaluate import format_table, summarize
from vestis.models.checkpoint import WEIGHTS, atomic_write_text, read_config, save_checkpoint
from vestis.models.heads import HeadConfig
from vestis.models.preprocess import resolve_transform
from vestis.models.registry import create_model
from vestis.runtime import autocast, pick_device, resolve_precision, tune_allocator
from vestis.train.config import RUNTIME_FIELDS, TrainConfig, parse_stages
from vestis.train.ema import EMA
from vestis.train.fast import fit_head
from vestis.train.history import History, format_imbalance, group_metrics, imbalance_table, score_heads
from vestis.train.losses import make_loss
from vestis.train.sampler import EpochSampler, build_image_cache, make_loader

STATE_FORMAT = 1
PROBE_C = (
    0.1,
    0.3,
    1.0,
    3.0,
)  # raw pooled features are ~3x smaller than standardised ones: ~10x fast mode's C


# ---------------------------------------------------------------------------------------------- data plan
@dataclass
class Stage:
    name: str  # "all" (no stages), "top:20", "rest" or "all"
    classes: dict[str, list[str]]  # each head's classes during this stage (earlier stages' first)
    group: list[str]  # the classes this stage adds (a group in the report); first head
    train: dict[str, set[str]]  # classes whose images are trained on


def plan_stages(ds, cfg: TrainConfig, notes: list[str]) -> list[Stage]:
    """Classes per head (those with >= min_per_class training images) and the stages over them."""
    classes, counts = {}, {}
    for h in ds.heads:
        counts[h] = Counter(s.labels.get(h) for s in ds.split("train") if s.labels.get(h) is not None)
        keep = sorted(c for c, k in counts[h].items() if k >= cfg.min_per_class)
        if len(keep) < len(counts[h]):
            dropped = sorted(set(counts[h]) - set(keep))
            notes.append(f"{h}: {len(dropped)} classes with < {cfg.min_per_class} training images dropped: "
                         f"{dropped[:10]}")  # fmt: skip
        unseen = [s for s in ds.samples if s.labels.get(h) is not None and s.labels[h] not in keep]
        absent = sorted({s.labels[h] for s in unseen if s.split != "train"} - set(keep))
        if absent:
            n = sum(1 for s in unseen if s.split != "train")
            notes.append(f"{h}: {len(absent)} classes have no training images, so the model cannot predict them; "
                         f"their {n} validation/test images are reported, not scored: {absent[:10]}")  # fmt: skip
        if len(keep) < 2:
            raise ValueError(f"head {h!r}: need at least 2 classes with training images, found {keep}")
        classes[h] = keep
    spec = parse_stages(cfg.stages)
    if not spec:
        return [Stage("all", classes, classes[ds.heads[0]], {h: set(c) for h, c in classes.items()})]
    h = ds.heads[0]
    by_freq = sorted(classes[h], key=lambda c: (-counts[h][c], c))
    stages, seen = [], []
    for name, n in spec:
        group = sorted(by_freq[:n]) if name == "top" else sorted(set(classes[h]) - set(seen))
        if not group or (name == "top" and n >= len(classes[h])):
            raise ValueError(
                f"stages {cfg.stages!r}: {len(classes[h])} classes leave nothing for stage {name!r}"
            )
        seen += [c for c in group if c not in seen]
        trained = set(seen) if name == "all" else set(group)
        stages.append(Stage(f"top:{n}" if name == "top" else name, {h: list(seen)}, group, {h: trained}))
    return stages


def _targets(ds, classes: dict[str, list[str]], idx: list[int]) -> dict[str, np.ndarray]:
    """Class index per sample and head (-1: missing, or a class the head does not have)."""
    out = {}
    for h, cl in classes.items():
        pos = {c: k for k, c in enumerate(cl)}
        out[h] = np.array([pos.get(ds.samples[i].labels.get(h), -1) for i in idx], dtype=np.int64)
    return out


# ---------------------------------------------------------------------------------- optimisation pieces
def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; backbone at lr * backbone_lr_scale; no weight decay on biases and norm layers (ndim < 2)."""
    groups = []
    for part, scale in ((model.backbone, cfg.backbone_lr_scale), (model.heads, 1.0)):
        params = [p for p in part.parameters() if p.requires_grad]
        for decay in (True, False):
            ps = [p for p in params if (p.ndim >= 2) == decay]
            wd = cfg.finetune_weight_decay if decay else 0.0
            groups.append({"params": ps, "weight_decay": wd, "base_lr": cfg.lr * scale, "lr": cfg.lr * scale})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_scale(step: int, total: int, warmup: int, min_scale: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``min_scale`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_scale + (1 - min_scale) * 0.5 * (1 + math.cos(math.pi * t))


def mix_batch(x: torch.Tensor, mixup: float, cutmix: float):
    """Mixup or cutmix (one of those enabled, chosen per batch): -> (x, perm or None, lam); the loss is
    lam * loss(y) + (1 - lam) * loss(y[perm])."""
    modes = [(m, a) for m, a in (("mixup", mixup), ("cutmix", cutmix)) if a > 0]
    if not modes or len(x) < 2:
        return x, None, 1.0
    mode, alpha = modes[int(torch.randint(len(modes), ()))]
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x)).to(x.device)
    if mode == "mixup":
        return x.lerp(x[perm], 1 - lam), perm, lam
    H, W = x.shape[-2:]
    h, w = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(H, ())), int(torch.randint(W, ()))
    y0, y1, x0, x1 = (
        max(cy - h // 2, 0),
        min(cy + h - h // 2, H),
        max(cx - w // 2, 0),
        min(cx + w - w // 2, W),
    )
    x = x.clone()
    x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x, perm, 1 - (y1 - y0) * (x1 - x0) / (H * W)


def _head_loss(fn, logits, y, perm, lam):
    def part(t):
        m = t >= 0
        return fn(logits[m], t[m]) if bool(m.any()) else logits.sum() * 0.0  # keep every head in the graph

    return part(y) if perm is None else lam * part(y) + (1 - lam) * part(y[perm])


def _seed(cfg: TrainConfig, epoch: int, rank: int) -> None:
    """Each epoch's randomness (augmentation, also in worker processes; mixup; dropout) comes from (seed, epoch,
    rank), so a resumed or multi-process run draws the same numbers as an uninterrupted one."""
    s = (cfg.seed * 1_000_003 + epoch * 1009 + rank) % 2**31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


# ------------------------------------------------------------------------------------------- resume state
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    np_state = np.random.get_state()
    py = random.getstate()
    return {"torch": _b64(torch.get_rng_state()),
            "cuda": [_b64(torch.cuda.get_rng_state())] if torch.cuda.is_initialized() else [],  # this GPU
            "numpy": [np_state[0], np_state[1].tolist(), *map(float, np_state[2:])],
            "python": [py[0], list(py[1]), py[2]]}  # fmt: skip


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(_unb64(s["torch"]))
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(s["cuda"][0]))
    n = s["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), int(n[2]), int(n[3]), float(n[4])))
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))


def optimizer_state(opt) -> tuple[dict, dict]:
    """-> (tensors keyed 'PARAM_INDEX.NAME' for safetensors, JSON-able rest: param groups, scalar state)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt, tensors: dict, meta: dict) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, v in [*tensors.items(), *meta["scalars"].items()]:
        i, k = key.split(".", 1)
        p = params[int(i)]
        if torch.is_tensor(v) and v.shape == p.shape:
            v = torch.empty_like(p).copy_(v)  # the parameter's device and memory format (channels_last)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_state(run_dir: Path, epoch: int, tensors: dict[str, dict], meta: dict) -> None:
    """Tensors into RUN/last/epoch-NNNN/*.safetensors, then ``state.json`` (the commit) names them."""
    last = run_dir / "last"
    sub = last / f"epoch-{epoch:04d}"
    sub.mkdir(parents=True, exist_ok=True)
    for name, ts in tensors.items():
        save_file(ts, str(sub / f"{name}.safetensors.tmp"))
        os.replace(sub / f"{name}.safetensors.tmp", sub / f"{name}.safetensors")
    atomic_write_text(last / "state.json", json.dumps({**meta, "files": sub.name}))
    for old in last.glob("epoch-*"):
        if old != sub:
            shutil.rmtree(old, ignore_errors=True)


def read_state(run_dir: Path) -> dict:
    path = run_dir / "last" / "state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no last/state.json; was it a finetune run?)")
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: unsupported resume state format {state.get('format')!r}")
    return state


def state_tensors(run_dir: Path, state: dict, name: str) -> dict:
    f = run_dir / "last" / state["files"] / f"{name}.safetensors"
    return load_file(str(f)) if f.is_file() else {}


def resumed_config(given: TrainConfig, stored: dict) -> TrainConfig:
    """The stored config, with the runtime options (workers, quiet, device, ...) as given now. Any other option
    given with a non-default value that differs from the stored one is an error: a resumed run is the same run."""
    default = TrainConfig(data=given.data, mode="finetune")
    merged, conflicts = dict(stored), []
    for f in fields(TrainConfig):
        now = getattr(given, f.name)
        if f.name in RUNTIME_FIELDS:
            merged[f.name] = now
        elif f.name == "data":
            if Path(now).resolve() != Path(stored["data"]).resolve():
                conflicts.append(f"data: stored {stored['data']!r}, given {now!r}")
        elif now != stored.get(f.name) and now != getattr(default, f.name):
            conflicts.append(f"{f.name}: stored {stored.get(f.name)!r}, given {now!r}")
    if conflicts:
        raise ValueError(
            "--resume continues a run with its own options; these differ: " + "; ".join(conflicts)
        )
    merged["out"] = given.resume
    return TrainConfig.from_dict(merged)


# ----------------------------------------------------------------------------------------------- evaluation
def predict_probs(model, images: ImageSet, run) -> tuple[dict, np.ndarray, dict]:
    """Class probabilities per head, averaged over the images' views, through the inference engine (the precision
    inference will use) -> ({head: (n, C)}, ok (n,), {i: error})."""
    runner = TorchRunner(model, run.device, run.eval_precision, channels_last=run.cfg.channels_last)
    out = infer(runner, images, batch_size=run.cfg.batch_size, workers=run.workers)
    return out.probs, out.ok, out.errors


# ------------------------------------------------------------------------------------------- distributed
def _init_distributed(cfg: TrainConfig):
    """(rank, world, device): torchrun's environment gives several processes (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(cfg.device)
    if world <= 1:
        return 0, 1, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"process {local} of this node has no GPU of its own (the node has "
                             f"{torch.cuda.device_count()}): start one process per GPU, or add --device cpu")  # fmt: skip
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:  # rank 0 reports for all (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    return rank, world, device


def _broadcast_flags(flags: list[int], device, world: int) -> list[int]:
    if world == 1:
        return flags
    t = torch.tensor(flags, dtype=torch.long, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def _all_sum(values: list[float], device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# -------------------------------------------------------------------------------------------------- trainer
def _shape_heads(model, classes: dict[str, list[str]]) -> None:
    for h, cl in classes.items():
        if model.classes.get(h) != cl:
            model.add_head(h, cl)


def _load_weights(model, tensors: dict) -> None:
    target = model.state_dict()
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in tensors.items()}, strict=True)


def fit_probe(x, y, xv, yv, num_classes: int, head_cfg: HeadConfig, cfg: TrainConfig) -> tuple:
    """A linear probe on frozen features (N, D): fast mode's logistic regression (:func:`fit_head`), for each C in
    ``cfg.c`` (default :data:`PROBE_C`), chosen on validation. Raw, not standardised features: folding a
    standardisation into the weights would amplify near-constant features, which fine-tuning then moves.
    Returns (head, validation score, C)."""
    best = None
    for c in cfg.c or PROBE_C:
        head, score, _ = fit_head(
            x[:, None], y, xv[:, None], yv, num_classes, head_cfg, cfg, c, standardise=False
        )
        if best is None or score > best[1]:
            best = (head, score, c)
    return best


def probe_heads(model, ds, tr: list[int], va: list[int], classes, cfg, device, say) -> dict[int, str]:
    """Each head starts as a linear probe on frozen features (:func:`fit_probe`); the features come from, and
    go to, the fast-mode feature cache. Returns the unreadable images {sample index: reason}."""
    feats = extract_features(model, [ds.samples[i].path for i in tr + va], batch_size=cfg.batch_size,
                             workers=cfg.workers, precision=cfg.precision, cache=cfg.cache, cache_dir=cfg.cache_dir,
                             progress=not cfg.quiet, device=device)  # fmt: skip
    ytr, yva = _targets(ds, classes, tr), _targets(ds, classes, va)
    f, n = feats.feats[:, 0], len(tr)
    for h, cl in classes.items():
        a = feats.ok[:n] & (ytr[h] >= 0)
        b = feats.ok[n:] & (yva[h] >= 0)
        head, score, c = fit_probe(f[:n][a], ytr[h][a], f[n:][b], yva[h][b], len(cl), model.head_cfg, cfg)
        model.add_head(h, cl, head)
        say(f"probe {h}: C={c:g} val {cfg.select}={score:.4f}")
    return {(tr + va)[i]: e for i, e in feats.errors.items()}


def train_finetune(cfg: TrainConfig, on_step=None) -> dict:
    """Fine-tune and save into ``cfg.out`` (or continue ``cfg.resume``); returns the run summary.

    ``on_step(epoch, step_in_epoch)``, if given, is called after every optimizer step (tests use it to
    interrupt a run)."""
    rank, world, device = _init_distributed(cfg)
    try:
        return _train(cfg, rank, world, device, on_step)
    except KeyboardInterrupt:
        if rank == 0:
            print(
                f"interrupted; continue with: vestis train ... --mode finetune --resume {cfg.resume or cfg.out}"
            )
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Run:
    """What every stage shares: options, process, data, model, logs."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    precision: str
    workers: int
    ds: object
    stages: list[Stage]
    model: object
    notes: list[str]
    bad: dict  # unreadable image path -> reason
    stage_results: list[dict]
    epoch: int  # epochs done, over all stages
    t0: float
    on_step: object = None
    cache: list | None = None
    history: History | None = None

    @property
    def eval_precision(self) -> str:
        """Validation runs in the precision inference will use (bf16 where inference uses it)."""
        return resolve_precision(self.device, self.cfg.precision)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)

    @property
    def fmt(self):
        return torch.channels_last if self.cfg.channels_last else torch.preserve_format

    @property
    def views(self) -> tuple[str, ...]:
        return ("plain", "flip") if self.cfg.tta else ("plain",)

    def say(self, *msg) -> None:
        if self.main and not self.cfg.quiet:
            tqdm.write(" ".join(map(str, msg)))

    def images(self, idx: list[int], train: bool = False) -> ImageSet:
        pre, cfg = self.model.preprocess, self.cfg
        tf = (resolve_transform(pre, train=True, augment=cfg.augment, crop_scale=cfg.crop_scale, erase=cfg.erase,
                                size=cfg.train_size) if train else resolve_transform(pre))  # fmt: skip
        return ImageSet([self.ds.samples[i].path for i in idx], tf, pre.resize_size,
                        ("plain",) if train else self.views,
                        [self.cache[i] for i in idx] if self.cache is not None else None)  # fmt: skip

    def data_info(self) -> dict:
        ds, cfg = self.ds, self.cfg
        fp = hashlib.sha1("".join(f"{s.path}|{s.split}|{json.dumps(s.labels, sort_keys=True)}\n"
                                  for s in ds.samples).encode()).hexdigest()[:16]  # fmt: skip
        return {"source": str(cfg.data), "load": {**cfg.dataset_args(), "labels": ds.heads},
                "counts": {sp: len(ds.split(sp)) for sp in ("train", "validation", "test")}, "fingerprint": fp}  # fmt: skip

    def train_config(self) -> dict:
        groups = (
            [{"stage": st.name, "classes": st.group} for st in self.stages] if len(self.stages) > 1 else None
        )
        return {**self.cfg.to_dict(), "resume": None, "views": list(self.views), "groups": groups}


@dataclass
class Fit:
    """One stage in training: its data, optimizer, EMA, loaders, and counters (what the resume state holds)."""

    stage: Stage
    si: int
    tr: list[int]
    va: list[int]
    ytr: dict
    yva: dict
    net: object
    opt: torch.optim.Optimizer
    ema: EMA | None
    sampler: EpochSampler
    train_loader: object
    val_images: ImageSet
    losses: dict
    total: int
    warmup: int
    step: int = 0
    stage_epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    since: int = 0


def _train(cfg: TrainConfig, rank: int, world: int, device, on_step) -> dict:
    t0 = time.time()
    tune_allocator()
    state = None
    if cfg.resume:
        state = read_state(Path(cfg.resume))
        cfg = resumed_config(cfg, state["config"])
        set_rng_state(state["rng"])
    ds = load_dataset(**cfg.dataset_args())
    notes: list[str] = []
    stages = plan_stages(ds, cfg, notes)
    _seed(cfg, 0, 0)  # the same random initial weights (--no-pretrained) in every process
    head_cfg = HeadConfig("mlp" if cfg.head == "mlp" else "linear", cfg.hidden, cfg.dropout)
    run = Run(cfg, rank, world, device, resolve_precision(device, cfg.precision, training=True),
              default_workers() if cfg.workers is None else cfg.workers, ds, stages,
              create_model(cfg.backbone, pretrained=cfg.pretrained, head=head_cfg), notes,
              dict(state["bad"]) if state else {}, list(state["stage_results"]) if state else [],
              state["epoch"] if state else 0, t0, on_step)  # fmt: skip
    frozen = run.model.freeze(cfg.freeze, cfg.freeze_bn)
    if frozen:
        run.say(f"frozen: {cfg.freeze} backbone layer group(s), {len(frozen)} modules")
    if state:
        run.say(f"resuming {cfg.out} after epoch {state['epoch']}")
    for note in ds.notes:
        run.say("data:", note)
    for note in notes:
        run.say("note:", note)
    if cfg.image_cache:
        idx = [i for i, s in enumerate(ds.samples) if s.split in ("train", "validation")]
        built = build_image_cache([ds.samples[i].path for i in idx], run.model.preprocess.resize_size, run.workers,
                                  run.main and not cfg.quiet)  # fmt: skip
        run.cache = [None] * len(ds.samples)
        for i, x in zip(idx, built, strict=True):
            run.cache[i] = x
    if run.main:
        run.history = History(run.run_dir, run.epoch, cfg.tensorboard)

    for si in range(state["stage"] if state else 0, len(stages)):
        restore = state if state is not None and state["stage"] == si else None
        if not restore or not restore["stage_done"]:
            fit = _start_stage(run, si, restore)
            stop = False
            while fit.stage_epoch < cfg.epochs and not stop:
                stop = _epoch(run, fit)
            if stop:
                run.say(f"early stop: no better validation {cfg.select} for {cfg.patience} epochs")
        if si < len(stages) - 1 and run.main:  # a stage before the last: its best model, per class group
            run.stage_results.append(_group_report(run, si))
    summary = {"out": str(run.run_dir), "metrics": {}, "notes": notes, "skipped": 0, "epochs_run": run.epoch}
    if run.main:
        summary = _finish(run)
        run.history.close()
    return summary


def _stage_split(run: Run, split: str, classes: dict) -> list[int]:
    return [i for i, s in enumerate(run.ds.samples)
            if s.split == split and any(s.labels.get(h) in classes[h] for h in run.ds.heads)]  # fmt: skip


def _start_stage(run: Run, si: int, restore: dict | None) -> Fit:
    """The model for stage ``si`` (probed, grown from the last stage's best, or as saved), and its optimizer."""
    cfg, model, st, heads = run.cfg, run.model, run.stages[si], run.ds.heads
    tr, va = _stage_split(run, "train", st.train), _stage_split(run, "validation", st.classes)
    ytr, yva = _targets(run.ds, st.classes, tr), _targets(run.ds, st.classes, va)
    _seed(cfg, 10_000 + si, 0)  # head init: the same numbers in every process and on resume
    if restore:
        _shape_heads(model, restore["classes"])
        _load_weights(model, state_tensors(run.run_dir, restore, "model"))
    elif si == 0 and cfg.head_init == "probe" and model.head_cfg.type == "linear":
        if run.main:
            errs = probe_heads(model, run.ds, tr, va, st.classes, cfg, run.device, run.say)
            run.bad.update({str(run.ds.samples[i].path): e for i, e in errs.items()})
        else:
            _shape_heads(model, st.classes)  # DDP copies rank 0's probed heads over these
    elif si == 0:
        _shape_heads(model, st.classes)
    else:
        _load_weights_from_run(model, run.run_dir)
        _seed(cfg, 10_000 + si, 0)  # the new rows' initial weights
        for h, cl in st.classes.items():
            model.grow_head(h, cl)
    model.to(run.device, memory_format=run.fmt)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 and run.main else None
    net = model
    if run.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None)  # fmt: skip
    if cfg.compile:
        net = torch.compile(net)
    opt = make_optimizer(model, cfg)
    sampler = EpochSampler(ytr[heads[0]], cfg.sampler == "balanced", cfg.seed, run.rank, run.world)
    train_loader = make_loader(run.images(tr, train=True), cfg.batch_size, run.workers, sampler,
                               drop_last=len(sampler) > cfg.batch_size, pin=run.device.type == "cuda")  # fmt: skip
    losses = {h: make_loss(cfg.loss, ytr[h][ytr[h] >= 0], len(st.classes[h]), cfg.label_smoothing).to(run.device)
              for h in heads}  # fmt: skip
    steps = len(train_loader)
    fit = Fit(st, si, tr, va, ytr, yva, net, opt, ema, sampler, train_loader, run.images(va), losses,
              total=cfg.epochs * steps, warmup=round(cfg.warmup_epochs * steps))  # fmt: skip
    if restore:
        load_optimizer_state(opt, state_tensors(run.run_dir, restore, "optimizer"), restore["optimizer"])
        if ema is not None:
            _load_weights(ema.module, state_tensors(run.run_dir, restore, "ema"))
            ema.updates = restore["ema_updates"]
        fit.step, fit.stage_epoch, fit.since = restore["step"], restore["stage_epoch"], restore["since_best"]
        fit.best, fit.best_epoch = restore["best"], restore["best_epoch"]
    run.say(f"stage {st.name}: {len(tr)} training images, {len(va)} validation images, {len(st.classes[heads[0]])} "
            f"classes, {steps} steps per epoch on {run.world} process(es), {run.device}, training {run.precision}, validation {run.eval_precision}")  # fmt: skip
    return fit


def _epoch(run: Run, fit: Fit) -> bool:
    """One epoch, then (rank 0) validation, the best checkpoint, logs and the resume state. Returns: stop."""
    run.epoch += 1
    fit.stage_epoch += 1
    _seed(run.cfg, run.epoch, run.rank)
    fit.sampler.set_epoch(run.epoch)
    t = time.time()
    loss_sum, n_img, fails = _train_epoch(run, fit)
    seconds = time.time() - t
    loss_sum, n_img = _all_sum([loss_sum, n_img], run.device, run.world)
    if run.world > 1:  # images that failed in any process
        mask = torch.zeros(len(fit.tr), dtype=torch.long, device=run.device)
        pos = {i: j for j, i in enumerate(fit.tr)}
        for i in fails:
            mask[pos[i]] = 1
        dist.all_reduce(mask)
        fails = {fit.tr[j]: "unreadable image" for j in mask.nonzero().flatten().tolist()}
    run.bad.update({str(run.ds.samples[i].path): e for i, e in fails.items()})
    stop = False
    if run.main:
        stop = _validate_and_save(run, fit, loss_sum / max(n_img, 1), n_img, len(fails), seconds)
    return bool(_broadcast_flags([int(stop)], run.device, run.world)[0])


def _train_epoch(run: Run, fit: Fit) -> tuple[float, int, dict]:
    cfg, heads, pre = run.cfg, run.ds.heads, run.model.preprocess
    fit.net.train()
    loss_sum, n_img, fails = 0.0, 0, {}
    bar = tqdm(total=len(fit.train_loader), desc=f"epoch {run.epoch} ({fit.stage.name} {fit.stage_epoch}/{cfg.epochs})",
               unit="batch", disable=not run.main or cfg.quiet, leave=False)  # fmt: skip
    for k, (idx, xs, errs) in enumerate(fit.train_loader):
        fails.update({fit.tr[j]: e for j, e in errs})
        if xs is None and run.world == 1:
            continue
        scale = lr_scale(fit.step, fit.total, fit.warmup, cfg.min_lr_scale)
        for g in fit.opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        dummy = xs is None  # every image of this batch failed; the other processes still need a step
        x = torch.zeros(1, 3, pre.input_size, pre.input_size) if dummy else xs[:, 0]
        x = x.to(run.device, non_blocking=True, memory_format=run.fmt)
        x, perm, lam = (x, None, 1.0) if dummy else mix_batch(x, cfg.mixup, cfg.cutmix)
        with autocast(run.device, run.precision):
            out = fit.net(x)
        if dummy:
            loss = sum(z.float().sum() for z in out.values()) * 0.0
        else:
            ys = {h: torch.from_numpy(fit.ytr[h][idx]).to(run.device) for h in heads}
            loss = sum(_head_loss(fit.losses[h], out[h].float(), ys[h], perm, lam) for h in heads)
        fit.opt.zero_grad(set_to_none=True)
        loss.backward()
        fit.opt.step()
        fit.step += 1
        if fit.ema is not None:
            fit.ema.update(run.model)
        if not dummy:
            loss_sum, n_img = loss_sum + loss.item() * len(idx), n_img + len(idx)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{cfg.lr * scale:.2e}")
        if run.on_step is not None:
            run.on_step(run.epoch, k + 1)
    bar.close()
    return loss_sum, n_img, fails


def _validate_and_save(
    run: Run, fit: Fit, train_loss: float, n_img: int, n_fails: int, seconds: float
) -> bool:
    """Score the epoch on validation, keep it if best, log it, write the resume state. Returns: stop early."""
    cfg, st = run.cfg, fit.stage
    eval_model = fit.ema.module if fit.ema is not None else run.model
    probs, ok, errs = predict_probs(eval_model, fit.val_images, run)
    run.bad.update({str(run.ds.samples[fit.va[j]].path): e for j, e in errs.items()})
    val = score_heads(probs, ok, fit.yva, st.classes, cfg.select)
    score = val["mean"]["score"] if val["mean"] else float(fit.stage_epoch)  # no validation data: the last
    improved = score > fit.best
    if improved:
        fit.best, fit.best_epoch, fit.since = score, run.epoch, 0
        save_checkpoint(run.run_dir, eval_model, include_backbone=True, data=run.data_info(),
                        metrics={"validation": {h: summarize(m) for h, m in val["heads"].items()},
                                 "best_epoch": run.epoch, "stage": st.name},
                        train_config=run.train_config())  # fmt: skip
    else:
        fit.since += 1
    stop = bool(cfg.patience) and fit.since >= cfg.patience
    stage_done = stop or fit.stage_epoch >= cfg.epochs
    mean = val["mean"] or {}
    row = {"epoch": run.epoch, "stage": fit.si, "stage_epoch": fit.stage_epoch, "train_loss": train_loss,
           "val_loss": mean.get("log_loss"), "val_top1": mean.get("top1"), "val_macro_f1": mean.get("macro_f1"),
           "lr": fit.opt.param_groups[-1]["lr"], "lr_backbone": fit.opt.param_groups[0]["lr"],
           "seconds": round(seconds, 2), "images_per_s": round(n_img / max(seconds, 1e-9), 1),
           "unreadable": n_fails, "best": improved}  # fmt: skip
    run.history.log(row)
    if seconds > 5 or stage_done:  # (drawing takes a fraction of a second)
        run.history.plot()
    run.say(f"epoch {run.epoch:>3} {st.name} {fit.stage_epoch}/{cfg.epochs}  train loss {train_loss:.4f}  "
            + (f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.4f} macro-F1 {row['val_macro_f1']:.4f}  "
               if val["mean"] else "no validation data  ")
            + f"lr {row['lr']:.2e}  {seconds:.0f}s {row['images_per_s']:.0f} img/s" + ("  *" if improved else ""))  # fmt: skip
    _save_state(run, fit, stage_done)
    return stop


def _save_state(run: Run, fit: Fit, stage_done: bool) -> None:
    def cpu(sd):
        return {k: v.detach().cpu().contiguous() for k, v in sd.items()}

    opt_tensors, opt_meta = optimizer_state(fit.opt)
    tensors = {"model": cpu(run.model.state_dict()), "optimizer": opt_tensors}
    if fit.ema is not None:
        tensors["ema"] = cpu(fit.ema.module.state_dict())
    meta = {"format": STATE_FORMAT, "epoch": run.epoch, "stage": fit.si, "stage_epoch": fit.stage_epoch,
            "stage_done": stage_done, "finished": False, "step": fit.step, "classes": run.model.classes,
            "best": fit.best, "best_epoch": fit.best_epoch, "since_best": fit.since,
            "ema_updates": fit.ema.updates if fit.ema is not None else 0, "optimizer": opt_meta,
            "sampler": fit.sampler.state_dict(), "rng": rng_state(), "bad": sorted(run.bad.items()),
            "stage_results": run.stage_results, "config": run.cfg.to_dict()}  # fmt: skip
    write_state(run.run_dir, run.epoch, tensors, meta)


def _load_weights_from_run(model, run_dir: Path) -> None:
    """The best model saved so far (the run's checkpoint) into ``model``, heads reshaped to fit it."""
    _shape_heads(model, read_config(run_dir)["heads"])
    _load_weights(model, load_file(str(run_dir / WEIGHTS)))


def _evaluate_best(run: Run, va: list[int]):
    """The best model saved so far, and its class probabilities on samples ``va``."""
    cfg = run.cfg
    model = create_model(cfg.backbone, pretrained=False, head=run.model.head_cfg)
    model.pretrained = cfg.pretrained  # the saved weights began as these (recorded in the checkpoint)
    _load_weights_from_run(model, run.run_dir)
    model.to(run.device)
    probs, ok, _ = predict_probs(model, run.images(va), run)
    return model, probs, ok


def _group_report(run: Run, si: int) -> dict:
    st, h = run.stages[si], run.ds.heads[0]
    va = _stage_split(run, "validation", st.classes)
    model, probs, ok = _evaluate_best(run, va)
    y = _targets(run.ds, model.classes, va)[h]
    res = {"stage": st.name, "groups": {}}
    for s in run.stages[: si + 1]:
        res["groups"][s.name] = group_metrics(y[ok], probs[h][ok], model.classes[h], s.group)
    run.say(f"stage {st.name} best model, validation: {json.dumps(res['groups'])}")
    return res


def _finish(run: Run) -> dict:
    """Score the best model on validation (per class, per group), save it with its metrics, write the logs."""
    cfg, ds, stages, say = run.cfg, run.ds, run.stages, run.say
    va = [i for i, s in enumerate(ds.samples) if s.split == "validation"]
    model, probs, ok = _evaluate_best(run, va)
    yva = _targets(ds, model.classes, va)
    val = score_heads(probs, ok, yva, model.classes, cfg.select)
    ytr = _targets(ds, model.classes, [i for i, s in enumerate(ds.samples) if s.split == "train"])
    per_class, groups = [], None
    for h, m in val["heads"].items():
        say(format_table(m, title=f"validation · {h} (best epoch)"))
        rows = imbalance_table(h, model.classes[h], ytr[h], m, cfg)
        per_class += rows
        say(
            f"per class · {h}: training images, share of draws ({cfg.sampler} sampler), loss weight ({cfg.loss})"
        )
        say(format_imbalance(rows))
    if len(stages) > 1:
        h = ds.heads[0]
        final = {s.name: group_metrics(yva[h][ok], probs[h][ok], model.classes[h], s.group) for s in stages}
        effect = {}
        for res in run.stage_results:
            for g, m in res["groups"].items():
                if m and final.get(g):
                    effect[g] = {"after_stage": res["stage"], "top1_before": m["top1"], "top1_after": final[g]["top1"],
                                 "change": final[g]["top1"] - m["top1"]}  # fmt: skip
        groups = {"final": final, "stages": run.stage_results, "effect": effect}
        for g, m in final.items():
            say(f"group {g}: " + (json.dumps(m) if m else "no validation images"))
        for g, e in effect.items():
            say(
                f"effect of the later stages on group {g}: top-1 {e['top1_before']:.4f} -> {e['top1_after']:.4f}"
            )
    best = read_config(run.run_dir)["metrics"].get("best_epoch")
    metrics = {"validation": {h: summarize(m) for h, m in val["heads"].items()}, "best_epoch": best,
               "stage": stages[-1].name}  # fmt: skip
    if groups:
        metrics["groups"] = groups
    skipped = list(ds.skipped) + [Skipped(p, r) for p, r in sorted(run.bad.items())]
    save_checkpoint(run.run_dir, model, include_backbone=True, metrics=metrics,
                    data={**run.data_info(), "skipped": len(skipped)}, train_config=run.train_config())  # fmt: skip
    atomic_write_text(run.run_dir / "skipped.json", json.dumps([s.__dict__ for s in skipped], indent=1))
    seconds = round(time.time() - run.t0, 1)
    log = {"notes": run.notes, "per_class": per_class, "groups": groups, "epochs_run": run.epoch,
           "best_epoch": best, "seconds": seconds, "validation": val["heads"]}  # fmt: skip
    atomic_write_text(run.run_dir / "train_log.json", json.dumps(log, indent=1))
    state_path = run.run_dir / "last" / "state.json"
    if state_path.is_file():
        atomic_write_text(state_path, json.dumps({**json.loads(state_path.read_text()), "finished": True}))
    if run.bad:
        say(f"skipped {len(run.bad)} unreadable images (listed in {run.run_dir}/skipped.json)")
    say(f"saved {run.run_dir} (best epoch {best}, {seconds:.0f}s)")
    return {"out": str(run.run_dir), "metrics": metrics, "notes": run.notes, "skipped": len(skipped),
            "epochs_run": run.epoch, "best_epoch": best}  # fmt: skip
