"""Fast mode: a frozen pretrained backbone, cached pooled features, a linear or MLP head per label column.

Each head chooses its own type (linear or MLP) and regularisation on the validation split; the test split is
never looked at here. With ``--stages top:20,rest`` (one label column) the first stage's head learns the 20
most frequent classes and the last stage's head every class: both groups are scored on validation, and the
first group's change between the stages is reported (the backbone is frozen, so each stage's head is fitted
on the images of every class seen so far)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vestis.data import load_dataset
from vestis.engine.colour import ColourRunner
from vestis.engine.features import extract_features
from vestis.engine.load import feature_runner
from vestis.evaluate import compute_metrics, format_table, summarize
from vestis.models.checkpoint import atomic_write_text, save_checkpoint
from vestis.models.heads import HeadConfig
from vestis.models.registry import create_model
from vestis.runtime import pick_device
from vestis.train.config import TrainConfig
from vestis.train.probe import fit_head, head_probs
from vestis.train.records import (
    all_skipped,
    data_info,
    set_preprocess,
    skipped_line,
    stored_extras,
    write_skipped,
)
from vestis.train.stages import plan_stages, stage_groups, staged_groups

# head=auto tries the linear head only below this many training rows (images x views). Measured on the 44k
# catalogue (70,000 rows, docs/BENCHMARKS.md): the MLP won all seven heads on validation, by 0.5 to 5.8 points,
# and the linear heads' L-BFGS path took about two thirds of the 27-minute grid. Ask for --head linear to fit it.
AUTO_LINEAR_MAX_ROWS = 40_000


def _say(cfg: TrainConfig, *msg) -> None:
    if not cfg.quiet:
        print(*msg, flush=True)


def _plans(ds, feats, classes: dict[str, list[str]], trained: dict[str, set[str]]) -> dict:
    """Per head: (classes, training rows, validation rows, class index per sample (-1: none))."""
    plans = {}
    for head, cl in classes.items():
        index = {c: k for k, c in enumerate(cl)}
        y = np.array([index.get(s.labels.get(head), -1) for s in ds.samples])
        tr = [
            i
            for i, s in enumerate(ds.samples)
            if s.split == "train" and feats.ok[i] and s.labels.get(head) in trained[head]
        ]
        va = [i for i, s in enumerate(ds.samples) if s.split == "validation" and feats.ok[i] and y[i] >= 0]
        plans[head] = (cl, np.array(tr, dtype=np.int64), np.array(va, dtype=np.int64), y)
    return plans


def _choose_heads(plans: dict, feats, cfg: TrainConfig, num_features: int, views, grid_log: list) -> dict:
    """Each head's type and regularisation, chosen on its own validation score: {head: (module, HeadConfig,
    knob, value, score)}."""
    chosen = {}
    for head, (classes, tr, va, y) in plans.items():
        va_x = feats.feats[va] if len(va) else np.zeros((0, len(views), num_features), np.float32)
        head_types = [cfg.head]
        if cfg.head == "auto":
            head_types = ["linear", "mlp"] if len(tr) * len(views) < AUTO_LINEAR_MAX_ROWS else ["mlp"]
        for htype in head_types:
            knob = "C" if htype == "linear" else "weight_decay"
            warm: dict = {}  # linear: a path from strong to weak regularisation, each fit starting from the last
            for reg in sorted(cfg.linear_c) if htype == "linear" else cfg.weight_decays:
                hc = HeadConfig(htype, cfg.hidden, cfg.dropout)
                t = time.time()
                fitted, score, steps = fit_head(
                    feats.feats[tr], y[tr], va_x, y[va], len(classes), hc, cfg, reg, warm=warm
                )
                grid_log.append(
                    {
                        "head": head,
                        "type": htype,
                        knob: reg,
                        "val_score": score,
                        "steps": steps,
                        "seconds": round(time.time() - t, 1),
                    }
                )
                _say(cfg, f"  {head:>16} {htype:>6} {knob}={reg:<7g} val {cfg.select}={score:.4f}")
                if head not in chosen or score > chosen[head][4]:
                    chosen[head] = (fitted, hc, knob, reg, score)
        _, hc, knob, reg, score = chosen[head]
        _say(cfg, f"{head}: selected on validation: head={hc.type} {knob}={reg:g} ({cfg.select} {score:.4f})")
    return chosen


def train_fast(cfg: TrainConfig) -> dict:
    """Train and save a fast-mode model into ``cfg.out``; returns the run summary (also in config.json)."""
    t0 = time.time()
    device = pick_device(cfg.device)
    ds = load_dataset(**cfg.dataset_args())
    for note in ds.notes:
        _say(cfg, "data:", note)
    model = create_model(cfg.backbone, pretrained=cfg.pretrained, colour_stats=cfg.colour_stats)
    note = set_preprocess(model, cfg, ds)
    if note:
        _say(cfg, note)
    views = ("plain", "flip") if cfg.tta else ("plain",)
    paths = [s.path for s in ds.samples]
    # with colour statistics: the backbone's features (cached on their own), then the statistics beside them
    backbone = model.without_heads(model.backbone.net) if cfg.colour_stats else model
    runner = feature_runner(backbone, device, cfg.precision, cfg.runtime, cfg.cache_dir, quiet=cfg.quiet)
    extract = dict(
        views=views,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        cache=cfg.cache,
        cache_dir=cfg.cache_dir,
        progress=not cfg.quiet,
    )
    feats = extract_features(runner, paths, **extract)
    if cfg.colour_stats:
        colour = extract_features(ColourRunner(model.preprocess), paths, digests=feats.digests, **extract)
        feats.feats = np.concatenate([feats.feats, colour.feats], axis=-1)
        feats.ok &= colour.ok
    t_features = time.time() - t0
    unreadable = {str(paths[i]): r for i, r in feats.errors.items()}
    skipped = all_skipped(ds, unreadable)
    line = skipped_line(Path(cfg.out), ds, len(unreadable))
    if line:
        _say(cfg, line)

    notes, grid_log, stage_results = [], [], []
    stages = plan_stages(ds, cfg, notes)
    for si, st in enumerate(stages):
        if len(stages) > 1:
            _say(
                cfg, f"stage {st.name}: {', '.join(f'{h}: {len(c)} classes' for h, c in st.classes.items())}"
            )
        trained = st.classes if si else st.train  # later stages: every class seen so far (see the docstring)
        plans = _plans(ds, feats, st.classes, {h: set(c) for h, c in trained.items()})
        chosen = _choose_heads(plans, feats, cfg, model.num_features, views, grid_log)
        if len(stages) > 1 and si < len(stages) - 1:
            h = ds.heads[0]
            _, _, va, y = plans[h]
            probs = head_probs(chosen[h][0], feats.feats[va])
            groups = stage_groups(stages[: si + 1], y[va], probs, st.classes[h])
            stage_results.append({"stage": st.name, "groups": groups})
            _say(cfg, f"stage {st.name}, validation: {json.dumps(groups)}")

    first = chosen[ds.heads[0]][1]
    model.head_cfg = first
    val_metrics, selected = {}, {}
    for head, (fitted, hc, knob, reg, _score) in chosen.items():
        classes, _tr, va, y = plans[head]
        model.add_head(head, classes, fitted, cfg=hc)
        selected[head] = {"head": hc.type, knob: reg}
        if len(va):
            val_metrics[head] = compute_metrics(y[va], head_probs(model.head(head), feats.feats[va]), classes)
            _say(cfg, format_table(val_metrics[head], title=f"validation · {head}"))
    summary_metrics = {"validation": {h: summarize(m) for h, m in val_metrics.items()}}
    groups = None
    if len(stages) > 1:
        h = ds.heads[0]
        _, _, va, y = plans[h]
        probs = head_probs(model.head(h), feats.feats[va])
        groups = staged_groups(stages, y[va], probs, model.classes[h], stage_results)
        summary_metrics["groups"] = groups
        for g, e in groups["effect"].items():
            _say(
                cfg,
                f"group {g}: validation top-1 {e['top1_before']:.4f} after its stage, {e['top1_after']:.4f} at the end",
            )
    for n in notes:
        _say(cfg, "note:", n)

    out = Path(cfg.out)
    data = data_info(cfg, ds, feats.digests, skipped=len(skipped))
    train_config = {**cfg.to_dict(), "selected": selected, "views": list(views), **stored_extras(ds, stages)}
    save_checkpoint(out, model, metrics=summary_metrics, data=data, train_config=train_config)
    write_skipped(out, skipped)
    seconds = round(time.time() - t0, 1)
    log = {
        "grid": grid_log,
        "notes": notes,
        "selected": selected,
        "groups": groups,
        "seconds": seconds,
        "seconds_features": round(t_features, 1),
        "features_runtime": runner.name,
    }
    atomic_write_text(out / "train_log.json", json.dumps(log, indent=1))
    _say(cfg, f"saved {out} ({seconds:.0f}s: features {t_features:.0f}s with {runner.name})")
    return {
        "out": str(out),
        "metrics": summary_metrics,
        "selected": selected,
        "notes": notes,
        "skipped": len(skipped),
    }
