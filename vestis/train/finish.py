"""The end of a fine-tuning run: each stage's best model per class group, and the final report (validation
per class and group, the saved model with its metrics, the skipped images and the training log)."""

from __future__ import annotations

import json
import time

from vestis.evaluate import format_table, summarize
from vestis.models.checkpoint import atomic_write_text, read_config
from vestis.train.history import format_imbalance, imbalance_table, score_heads
from vestis.train.records import all_skipped, skipped_line, write_skipped
from vestis.train.resume import mark_finished
from vestis.train.run import Run
from vestis.train.stages import stage_groups, stage_split, staged_groups, targets

__all__ = ["finish", "group_report"]


def group_report(run: Run, si: int) -> dict:
    """After stage ``si`` (not the last): its best model's validation scores per class group so far."""
    st, h = run.stages[si], run.ds.heads[0]
    va = stage_split(run.ds, "validation", st.classes)
    model, probs, ok = run.evaluate_best(va)
    y = targets(run.ds, model.classes, va)[h]
    res = {
        "stage": st.name,
        "groups": stage_groups(run.stages[: si + 1], y[ok], probs[h][ok], model.classes[h]),
    }
    run.say(f"stage {st.name} best model, validation: {json.dumps(res['groups'])}")
    return res


def finish(run: Run) -> dict:
    """Score the best model on validation (per class, per group), save it with its metrics, write the logs."""
    cfg, ds, stages, say = run.cfg, run.ds, run.stages, run.say
    va = [i for i, s in enumerate(ds.samples) if s.split == "validation"]
    model, probs, ok = run.evaluate_best(va)
    yva = targets(ds, model.classes, va)
    val = score_heads(probs, ok, yva, model.classes, cfg.select)
    ytr = targets(ds, model.classes, [i for i, s in enumerate(ds.samples) if s.split == "train"])
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
        groups = staged_groups(stages, yva[h][ok], probs[h][ok], model.classes[h], run.stage_results)
        for g, m in groups["final"].items():
            say(f"group {g}: " + (json.dumps(m) if m else "no validation images"))
        for g, e in groups["effect"].items():
            say(
                f"effect of the later stages on group {g}: top-1 {e['top1_before']:.4f} -> {e['top1_after']:.4f}"
            )
    best = read_config(run.run_dir)["metrics"].get("best_epoch")
    metrics = {
        "validation": {h: summarize(m) for h, m in val["heads"].items()},
        "best_epoch": best,
        "stage": stages[-1].name,
    }
    if groups:
        metrics["groups"] = groups
    skipped = all_skipped(ds, run.bad)
    run.save(model, metrics, skipped=len(skipped))
    write_skipped(run.run_dir, skipped)
    seconds = round(time.time() - run.t0, 1)
    log = {
        "notes": run.notes,
        "per_class": per_class,
        "groups": groups,
        "epochs_run": run.epoch,
        "best_epoch": best,
        "seconds": seconds,
        "validation": val["heads"],
    }
    atomic_write_text(run.run_dir / "train_log.json", json.dumps(log, indent=1))
    mark_finished(run.run_dir)
    line = skipped_line(run.run_dir, ds, len(run.bad))
    if line:
        say(line)
    say(f"saved {run.run_dir} (best epoch {best}, {seconds:.0f}s)")
    return {
        "out": str(run.run_dir),
        "metrics": metrics,
        "notes": run.notes,
        "skipped": len(skipped),
        "epochs_run": run.epoch,
        "best_epoch": best,
    }
