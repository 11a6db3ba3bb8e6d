"""Heads fitted on frozen pooled features: fast mode's linear or MLP head (:func:`fit_head`), and the linear
probe fine-tuning starts from (:func:`probe_heads`, LP-FT: Kumar et al. 2022), which is the same logistic
regression on raw features, reading and filling the same feature cache."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from vestis.engine.features import extract_features
from vestis.engine.load import feature_runner
from vestis.models.heads import HeadConfig, make_head
from vestis.train.config import TrainConfig
from vestis.train.losses import make_loss
from vestis.train.stages import targets

# the probe's C values: raw pooled features are ~3x smaller than standardised ones, so ~10x fast mode's C
PROBE_C = (0.1, 0.3, 1.0, 3.0)
MLP_STEPS = 6000


def mlp_epochs(rows: int, batch: int) -> int:
    """Fast mode's MLP epochs when not set: 60 on small data, about :data:`MLP_STEPS` optimiser steps on large
    data (at least 10 epochs): 60 epochs of 70,000 rows (the 44k catalogue's training split in two views) took
    most of the 25 minutes its seven heads needed."""
    return int(min(60, max(10, math.ceil(MLP_STEPS / math.ceil(rows / batch)))))


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


def fit_head(
    Xtr: np.ndarray,
    ytr: np.ndarray,
    Xva: np.ndarray,
    yva: np.ndarray,
    num_classes: int,
    head_cfg: HeadConfig,
    cfg: TrainConfig,
    reg: float,
    standardise: bool = True,
    warm: dict | None = None,
) -> tuple[nn.Module, float, int]:
    """Train one head on features (N, V, D), every view a training example, on standardised features (folded
    into the returned head's first layer; ``standardise=False``: raw features).

    linear: multinomial logistic regression (full-batch L-BFGS, L2 penalty ||W||^2 / (2 C n) with C = ``reg``);
    mlp: AdamW (weight decay ``reg``), one-cycle schedule, the epoch best on validation kept.
    ``warm`` (linear): a dict carried from one call to the next along a path of C values: the previous
    solution starts this one (on 70,000 rows, a path from strong to weak regularisation needs far fewer
    L-BFGS iterations than cold starts), and this solution is left there for the next.
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
        opt = torch.optim.LBFGS(
            head.parameters(),
            lr=1,
            max_iter=cfg.lbfgs_iter,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-6,
            tolerance_change=1e-9,
        )
        head.eval()  # deterministic objective (no dropout) for the line search
        if warm and "state" in warm:
            head.load_state_dict(warm["state"])

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(head(X), y) + linear.weight.pow(2).sum() / (2 * reg * len(X))
            loss.backward()
            return loss

        opt.step(closure)
        iters = opt.state[opt._params[0]].get("n_iter", 0)
        if warm is not None:
            warm["state"] = copy.deepcopy(head.state_dict())
        val_score = score()  # before folding: score() feeds standardised features
        return final(head), val_score, int(iters)

    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=reg)
    batch = min(256, max(8, len(X) // 10))  # enough steps per epoch on small data
    epochs = cfg.epochs or mlp_epochs(len(X), batch)
    steps = epochs * math.ceil(len(X) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    best, best_state, best_epoch = -1.0, None, 0
    for epoch in range(epochs):
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


def fit_probe(x, y, xv, yv, num_classes: int, head_cfg: HeadConfig, cfg: TrainConfig) -> tuple:
    """A linear probe on frozen features (N, D): fast mode's logistic regression (:func:`fit_head`), for each C in
    ``cfg.c`` (default :data:`PROBE_C`), chosen on validation. Raw, not standardised features: folding a
    standardisation into the weights would amplify near-constant features, which fine-tuning then moves.
    The C values are fitted from strong to weak regularisation, each warm-started from the last.
    Returns (head, validation score, C)."""
    best, warm = None, {}  # along the path of C values, each fit starts from the last (as fast mode's)
    for c in sorted(cfg.c or PROBE_C):
        head, score, _ = fit_head(
            x[:, None], y, xv[:, None], yv, num_classes, head_cfg, cfg, c, standardise=False, warm=warm
        )
        if best is None or score > best[1]:
            best = (head, score, c)
    return best


def probe_heads(model, ds, tr: list[int], va: list[int], classes, cfg, device, say) -> dict[int, str]:
    """Each head of ``model`` starts as a linear probe on frozen features (:func:`fit_probe`) of samples ``tr``
    (chosen on ``va``); the features come from, and go to, the feature cache. Returns the unreadable images
    {sample index: reason}."""
    feats = extract_features(
        feature_runner(model, device, cfg.precision, cfg.runtime, cfg.cache_dir, quiet=cfg.quiet),
        [ds.samples[i].path for i in tr + va],
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        cache=cfg.cache,
        cache_dir=cfg.cache_dir,
        progress=not cfg.quiet,
    )
    ytr, yva = targets(ds, classes, tr), targets(ds, classes, va)
    f, n = feats.feats[:, 0], len(tr)
    for h, cl in classes.items():
        a = feats.ok[:n] & (ytr[h] >= 0)
        b = feats.ok[n:] & (yva[h] >= 0)
        head, score, c = fit_probe(f[:n][a], ytr[h][a], f[n:][b], yva[h][b], len(cl), model.head_cfg, cfg)
        model.add_head(h, cl, head)
        say(f"probe {h}: C={c:g} val {cfg.select}={score:.4f}")
    return {(tr + va)[i]: e for i, e in feats.errors.items()}
