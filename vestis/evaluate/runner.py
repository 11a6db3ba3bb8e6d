"""``vestis evaluate``: score a trained run on a split of its data (or on other labelled data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vestis.data import Skipped, load_dataset
from vestis.evaluate.metrics import compute_metrics, format_table
from vestis.evaluate.report import write_report
from vestis.models.checkpoint import load_checkpoint, resolve_model_dir
from vestis.models.ensemble import check_same_classes
from vestis.train.fast import head_probs
from vestis.train.features import extract_features


def evaluate_run(run: str | Path | list | None, split: str = "test", data: str | None = None, images: str | None = None,
                 out: str | Path | None = None, tta: bool | None = None, quiet: bool = False,
                 cache_dir: str | None = None) -> dict:  # fmt: skip
    """Metrics, plots and ``report.md`` for ``split`` ('all' for every sample) into ``out`` (default RUN/eval-SPLIT).

    The data defaults to the run's own source, re-split with its seed, so 'test' is the split the run never saw.
    Several runs (a list) are scored as an ensemble: their class probabilities averaged, per head; they must
    share heads and classes, and the data (source and split) is the first run's."""
    runs = list(run) if isinstance(run, (list, tuple)) else [run]
    run_dirs = [resolve_model_dir(r) for r in runs]
    model, config = load_checkpoint(run_dirs[0])
    info = config.get("data", {})
    if data:
        source = data
        ds = load_dataset(data, images=images, labels=list(model.classes), val=0, test=0)
        split = "all" if split == "test" and not any(s.split == "test" for s in ds.samples) else split
    elif info.get("load"):
        source = info["load"]["source"]
        ds = load_dataset(**info["load"])
    else:
        raise ValueError(f"{run_dirs[0]}: the run records no data source; pass --data")
    samples = ds.samples if split == "all" else ds.split(split)
    if not samples:
        raise ValueError(
            f"no samples in split {split!r} (splits: {sorted({str(s.split) for s in ds.samples})})"
        )
    probs: dict[str, np.ndarray] = {}
    ok = np.ones(len(samples), dtype=bool)
    errors: dict[int, str] = {}
    first_classes = model.classes
    run_views = []  # the test-time views each run was scored with
    for k, run_dir in enumerate(run_dirs):
        if k:
            model, config = load_checkpoint(run_dir)
            check_same_classes(first_classes, model.classes, str(run_dirs[0]), str(run_dir))
        views = tuple(config.get("train_config", {}).get("views", ["plain"])) if tta is None else (
            ("plain", "flip") if tta else ("plain",))  # fmt: skip
        run_views.append(list(views))
        feats = extract_features(
            model, [s.path for s in samples], views=views, progress=not quiet, cache_dir=cache_dir
        )
        ok &= feats.ok
        errors.update(feats.errors)
        for h in model.classes:
            probs[h] = probs.get(h, 0) + head_probs(model.head(h), feats.feats) / len(run_dirs)
    skipped = [Skipped(str(samples[i].path), r) for i, r in sorted(errors.items())]
    run_dir = run_dirs[0]
    results, notes = {}, []
    for head, classes in model.classes.items():
        index = {c: k for k, c in enumerate(classes)}
        keep = [i for i, s in enumerate(samples) if ok[i] and s.labels.get(head) in index]
        unknown = [s for i, s in enumerate(samples) if ok[i] and s.labels.get(head) not in index]
        if unknown:
            labels = sorted({str(s.labels.get(head)) for s in unknown})
            notes.append(f"{head}: {len(unknown)} images with labels the model does not know were not scored: "
                         f"{labels[:10]}")  # fmt: skip
        if not keep:
            notes.append(f"{head}: nothing to score")
            continue
        y = np.array([index[samples[i].labels[head]] for i in keep])
        p = probs[head][keep]
        results[head] = {"metrics": compute_metrics(y, p, classes), "class_names": classes,
                         "paths": [str(samples[i].path) for i in keep], "y_true": y, "probs": p}  # fmt: skip
    if out is None:  # never write into the installed package's bundled model
        name = f"eval-{split}" + ("-ensemble" if len(run_dirs) > 1 else "")
        out = (
            run_dir / name if runs[0] not in (None, "", "default") else Path("runs") / f"eval-default-{split}"
        )
    out = Path(out)
    report = write_report(out, results, split, skipped=skipped,
                          extra={"model": ", ".join(map(str, run_dirs)), "data": str(source), "notes": notes,
                                 "views": run_views[0] if len(run_dirs) == 1 else run_views})  # fmt: skip
    if not quiet:
        for head, r in results.items():
            print(format_table(r["metrics"], title=f"{split} · {head}"))
        for n in notes:
            print("note:", n)
        if skipped:
            print(f"skipped {len(skipped)} unreadable images (see {out / 'report.md'})")
        print(f"report: {out / 'report.md'}")
    return report
