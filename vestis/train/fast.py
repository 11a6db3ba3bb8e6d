"""Fast mode: a frozen pretrained backbone, cached pooled features, a linear or MLP head per label column.

Head type and weight decay are chosen on the validation split; the test split is never looked at here."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from vestis.data import load_dataset
from vestis.data.resolution import record_native_size
from vestis.engine.features import extract_features
from vestis.evaluate import compute_metrics, format_table, summarize
from vestis.models.checkpoint import atomic_write_text, save_checkpoint
from vestis.models.heads import HeadConfig
from vestis.models.registry import create_model
from vestis.runtime import pick_device
from vestis.train.config import TrainConfig
from vestis.train.probe import fit_head, head_probs
from vestis.train.records import all_skipped, data_info, skipped_line, write_skipped


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
    native = record_native_size(model, [s.path for s in ds.samples if s.split == "train"], cfg.native_size)
    if native:
        _say(cfg, f"native size {native[0]}x{native[1]} recorded: larger inputs are downscaled to it first")
    views = ("plain", "flip") if cfg.tta else ("plain",)
    paths = [s.path for s in ds.samples]
    feats = extract_features(
        model,
        paths,
        views=views,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        precision=cfg.precision,
        cache=cfg.cache,
        cache_dir=cfg.cache_dir,
        progress=not cfg.quiet,
        device=device,
    )
    unreadable = {str(paths[i]): r for i, r in feats.errors.items()}
    skipped = all_skipped(ds, unreadable)
    line = skipped_line(Path(cfg.out), ds, len(unreadable))
    if line:
        _say(cfg, line)

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
            notes.append(
                f"{head}: {len(va_all) - len(va)} validation images of classes absent from training "
                f"excluded from scoring: {unseen[:10]}"
            )
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
                fitted, score, steps = fit_head(
                    feats.feats[tr], y[tr], va_x, y[va] if len(va) else y[:0], len(classes), hc, cfg, reg
                )
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
    data = data_info(cfg, ds, feats.digests, skipped=len(skipped))
    summary_metrics = {"validation": {h: summarize(m) for h, m in val_metrics.items()}}
    selected = {"head": best_key[0], knob: best_key[1]}
    train_config = {**cfg.to_dict(), "selected": selected, "views": list(views)}
    save_checkpoint(out, model, metrics=summary_metrics, data=data, train_config=train_config)
    write_skipped(out, skipped)
    log = {"grid": grid_log, "notes": notes, "seconds": round(time.time() - t0, 1)}
    atomic_write_text(out / "train_log.json", json.dumps(log, indent=1))
    _say(cfg, f"saved {out} ({time.time() - t0:.0f}s)")
    return {
        "out": str(out),
        "metrics": summary_metrics,
        "selected": best_key,
        "notes": notes,
        "skipped": len(skipped),
    }
