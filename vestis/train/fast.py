"""Fast mode: a frozen pretrained backbone, cached pooled features, a linear or MLP head per label column.

Head type and weight decay are chosen on the validation split; the test split is never looked at here."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from vestis.data import DataSet, Skipped, load_dataset
from vestis.engine.features import Features, extract_features
from vestis.evaluate import compute_metrics, format_table, summarize
from vestis.models.checkpoint import atomic_write_text, save_checkpoint
from vestis.models.heads import HeadConfig, make_head
from vestis.models.registry import create_model
from vestis.runtime import pick_device
from vestis.train.config import TrainConfig
from vestis.train.losses import make_loss


def selection_score(probs: np.ndarray, y: np.ndarray, select: str) -> float:
    pred = probs.argmax(1)
    if select == "macro_f1":
        return float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0))
    return float((pred == y).mean())


def head_probs(head: nn.Module, X: np.ndarray) -> np.ndarray:
    """Class probabilities for features X (N, V, D), averaged over the V views (test-time augmentation)."""
    head.eval()
    with torch.inference_mode():
        n, v, d = X.shape
        logits = head(torch.from_numpy(X.reshape(n * v, d)).float())
        return torch.softmax(logits.float(), -1).reshape(n, v, -1).mean(1).numpy()


def _fold_standardisation(head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> nn.Module:
    """Train on (x - mean) / std, then fold that into the first Linear so the head takes raw features."""
    first = next(m for m in head.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.weight.div_(std)
        first.bias.sub_(first.weight @ mean)
    return head


def fit_head(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray, num_classes: int,
             head_cfg: HeadConfig, cfg: TrainConfig, reg: float, standardise: bool = True) -> tuple[nn.Module, float, int]:  # fmt: skip
    """Train one head on features (N, V, D), every view a training example, on standardised features (folded
    into the returned head's first layer; ``standardise=False``: raw features).

    linear: multinomial logistic regression (full-batch L-BFGS, L2 penalty ||W||^2 / (2 C n) with C = ``reg``);
    mlp: AdamW (weight decay ``reg``), one-cycle schedule, the epoch best on validation kept.
    Returns (head taking raw features, validation score, epochs or L-BFGS iterations)."""
    torch.manual_seed(cfg.seed)
    n, v, d = Xtr.shape
    X = torch.from_numpy(Xtr.reshape(n * v, d)).float()
    y = torch.from_numpy(np.repeat(ytr, v)).long()
    if standardise:
        mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
        X = (X - mean) / std
        Xv = ((Xva - mean.numpy()) / std.numpy()).astype(np.float32)
    else:
        Xv = Xva.astype(np.float32)

    def final(head: nn.Module) -> nn.Module:  # the returned head takes raw features
        return _fold_standardisation(head.eval(), mean, std) if standardise else head.eval()

    head = make_head(d, num_classes, head_cfg)
    loss_fn = make_loss(cfg.loss, ytr, num_classes, cfg.label_smoothing)

    def score() -> float:  # no validation data: every candidate scores 0 and the first is kept
        return selection_score(head_probs(head, Xv), yva, cfg.select) if len(yva) else 0.0

    if head_cfg.type == "linear":
        linear = next(m for m in head.modules() if isinstance(m, nn.Linear))
        opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=cfg.lbfgs_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)  # fmt: skip
        head.eval()  # deterministic objective (no dropout) for the line search

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(X), y) + linear.weight.pow(2).sum() / (2 * reg * len(X))
            loss.backward()
            return loss

        opt.step(closure)
        iters = opt.state[opt._params[0]].get("n_iter", 0)
        val_score = score()  # before folding: score() feeds standardised features
        return final(head), val_score, int(iters)

    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=reg)
    batch = min(256, max(8, len(X) // 10))  # enough steps per epoch on small data
    steps = cfg.epochs * math.ceil(len(X) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    best, best_state, best_epoch = -1.0, None, 0
    for epoch in range(cfg.epochs):
        head.train()
        for idx in torch.randperm(len(X), generator=g).split(batch):
            opt.zero_grad(set_to_none=True)
            loss_fn(head(X[idx]), y[idx]).backward()
            opt.step()
            sched.step()
        s = score() if len(yva) else float(epoch)  # no validation data: keep the last epoch
        if s > best:
            best, best_state, best_epoch = s, copy.deepcopy(head.state_dict()), epoch + 1
    head.load_state_dict(best_state)
    return final(head), (best if len(yva) else 0.0), best_epoch


def data_fingerprint(ds: DataSet, feats: Features) -> str:
    h = hashlib.sha1()
    for s, digest in sorted(zip(ds.samples, feats.digests, strict=True), key=lambda t: str(t[1])):
        if digest:
            h.update(f"{digest}|{s.split}|{json.dumps(s.labels, sort_keys=True)}\n".encode())
    return h.hexdigest()[:16]


def _say(cfg: TrainConfig, *msg) -> None:
    if not cfg.quiet:
        print(*msg, flush=True)


def train_fast(cfg: TrainConfig) -> dict:
    """Train and save a fast-mode model into ``cfg.out``; returns the run summary (also in config.json)."""
    t0 = time.time()
    device = pick_device(cfg.device)
    ds = load_dataset(**cfg.dataset_args())
    for note in ds.notes:
        _say(cfg, "data:", note)
    model = create_model(cfg.backbone, pretrained=cfg.pretrained)
    views = ("plain", "flip") if cfg.tta else ("plain",)
    paths = [s.path for s in ds.samples]
    feats = extract_features(model, paths, views=views, batch_size=cfg.batch_size, workers=cfg.workers,
                             precision=cfg.precision, cache=cfg.cache, cache_dir=cfg.cache_dir,
                             progress=not cfg.quiet, device=device)  # fmt: skip
    skipped = list(ds.skipped) + [Skipped(str(paths[i]), r) for i, r in sorted(feats.errors.items())]
    if feats.errors:
        _say(cfg, f"skipped {len(feats.errors)} unreadable images (listed in {cfg.out}/skipped.json)")

    head_types = ["linear", "mlp"] if cfg.head == "auto" else [cfg.head]
    plans, notes, grid_log = {}, [], []
    for head in ds.heads:
        lab = [s.labels.get(head) for s in ds.samples]
        tr = [
            i for i, s in enumerate(ds.samples) if s.split == "train" and feats.ok[i] and lab[i] is not None
        ]
        counts = Counter(lab[i] for i in tr)
        classes = sorted(c for c, k in counts.items() if k >= cfg.min_per_class)
        dropped = sorted(set(counts) - set(classes))
        if dropped:
            notes.append(
                f"{head}: {len(dropped)} classes with < {cfg.min_per_class} training images dropped: {dropped[:10]}"
            )
        if len(classes) < 2:
            raise ValueError(f"head {head!r}: need at least 2 classes with training images, found {classes}")
        index = {c: k for k, c in enumerate(classes)}
        tr = [i for i in tr if lab[i] in index]
        va_all = [
            i
            for i, s in enumerate(ds.samples)
            if s.split == "validation" and feats.ok[i] and lab[i] is not None
        ]
        va = [i for i in va_all if lab[i] in index]
        if len(va) < len(va_all):
            unseen = sorted({lab[i] for i in va_all} - set(index))
            notes.append(f"{head}: {len(va_all) - len(va)} validation images of classes absent from training "
                         f"excluded from scoring: {unseen[:10]}")  # fmt: skip
        y = np.array([index.get(x, -1) for x in lab])
        plans[head] = (classes, np.array(tr), np.array(va), y)

    results: dict[tuple, dict] = {}
    for htype in head_types:
        for reg in cfg.linear_c if htype == "linear" else cfg.weight_decays:
            hc = HeadConfig(htype, cfg.hidden, cfg.dropout)
            for head, (classes, tr, va, y) in plans.items():
                va_x = (
                    feats.feats[va] if len(va) else np.zeros((0, len(views), model.num_features), np.float32)
                )
                fitted, score, steps = fit_head(feats.feats[tr], y[tr], va_x, y[va] if len(va) else y[:0],
                                                len(classes), hc, cfg, reg)  # fmt: skip
                knob = "C" if htype == "linear" else "weight_decay"
                grid_log.append({"head": head, "type": htype, knob: reg, "val_score": score, "steps": steps})
                _say(cfg, f"  {head:>16} {htype:>6} {knob}={reg:<7g} val {cfg.select}={score:.4f}")
                results.setdefault((htype, reg), {})[head] = (fitted, score)
    best_key = max(results, key=lambda k: np.mean([s for _, s in results[k].values()]))
    knob = "C" if best_key[0] == "linear" else "weight_decay"
    _say(cfg, f"selected on validation: head={best_key[0]} {knob}={best_key[1]:g}")

    model.head_cfg = HeadConfig(best_key[0], cfg.hidden, cfg.dropout)
    val_metrics = {}
    for head, (classes, _tr, va, y) in plans.items():
        model.add_head(head, classes, results[best_key][head][0])
        if len(va):
            val_metrics[head] = compute_metrics(y[va], head_probs(model.head(head), feats.feats[va]), classes)
            _say(cfg, format_table(val_metrics[head], title=f"validation · {head}"))
    for n in notes:
        _say(cfg, "note:", n)

    out = Path(cfg.out)
    counts = {sp: sum(1 for s in ds.samples if s.split == sp) for sp in ("train", "validation", "test")}
    data_info = {"source": str(cfg.data), "load": {**cfg.dataset_args(), "labels": ds.heads}, "counts": counts,
                 "fingerprint": data_fingerprint(ds, feats), "skipped": len(skipped)}  # fmt: skip
    summary_metrics = {"validation": {h: summarize(m) for h, m in val_metrics.items()}}
    save_checkpoint(out, model, metrics=summary_metrics, data=data_info,
                    train_config={**cfg.to_dict(), "selected": {"head": best_key[0], knob: best_key[1]},
                                  "views": list(views)})  # fmt: skip
    atomic_write_text(out / "skipped.json", json.dumps([s.__dict__ for s in skipped], indent=1))
    atomic_write_text(out / "train_log.json", json.dumps({"grid": grid_log, "notes": notes,
                                                          "seconds": round(time.time() - t0, 1)}, indent=1))  # fmt: skip
    _say(cfg, f"saved {out} ({time.time() - t0:.0f}s)")
    return {
        "out": str(out),
        "metrics": summary_metrics,
        "selected": best_key,
        "notes": notes,
        "skipped": len(skipped),
    }
