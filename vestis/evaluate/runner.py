"""``vestis evaluate``: score a trained model on a split of its data (or on other labelled data).

The model comes in as an engine runner (PyTorch or ONNX Runtime, one model or an ensemble), so evaluation
scores exactly what prediction answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vestis.data import Skipped, load_dataset
from vestis.engine.features import infer_cached
from vestis.evaluate.consistency import hierarchy_line, hierarchy_report, hierarchy_table
from vestis.evaluate.metrics import compute_metrics, format_table
from vestis.evaluate.report import write_report
from vestis.evaluate.summary import summary_lines
from vestis.evaluate.unseen import unseen_report
from vestis.models.run_config import resolve_data_load


def _data_load(card: dict, run_dir) -> dict | None:
    load = (card.get("data") or {}).get("load")
    if not load:
        return None
    return resolve_data_load(run_dir, card) if run_dir is not None else dict(load)


def evaluation_samples(
    card: dict, split: str = "test", data: str | None = None, images: str | None = None, run_dir=None
):
    """(samples, source, split) to score: ``split`` of the run's own data, re-split with its seed (so 'test'
    is the split it never saw), or of ``data`` (other labelled data, all of it unless it has that split)."""
    heads = list(card["heads"])
    if data:
        ds = load_dataset(data, images=images, labels=heads, val=0, test=0)
        split = "all" if split == "test" and not any(s.split == "test" for s in ds.samples) else split
        source = data
    else:
        load = _data_load(card, run_dir)
        if not load:
            raise ValueError(f"{run_dir or 'this model'}: records no data source; pass --data DIR_OR_CSV")
        try:
            ds = load_dataset(**load)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{e}; the run's data is not found from here: pass --data DIR_OR_CSV"
            ) from e
        source = load["source"]
    samples = ds.samples if split == "all" else ds.split(split)
    if not samples:
        raise ValueError(
            f"no samples in split {split!r} (splits: {sorted({str(s.split) for s in ds.samples})})"
        )
    return samples, source, split


def _infer_split(
    runner,
    card,
    split,
    data=None,
    images=None,
    tta=None,
    quiet=True,
    cache_dir=None,
    run_dir=None,
    batch_size=64,
    workers=None,
    cache=True,
):
    """(samples, source, split, views, outputs): the model run over the samples :func:`evaluation_samples`
    picks, with the views it was trained/selected with (``tta`` None) or those ``tta`` asks for."""
    samples, source, split = evaluation_samples(card, split, data, images, run_dir)
    trained_views = tuple((card.get("train_config") or {}).get("views", ["plain"]))
    views = trained_views if tta is None else (("plain", "flip") if tta else ("plain",))
    got = infer_cached(
        runner,
        [s.path for s in samples],
        views,
        cache=cache,
        cache_dir=cache_dir,
        batch_size=batch_size,
        workers=workers,
        progress=not quiet,
    )
    return samples, source, split, views, got


def evaluate_runner(
    runner,
    card: dict,
    split: str = "test",
    data: str | None = None,
    images: str | None = None,
    out: str | Path | None = None,
    tta: bool | None = None,
    quiet: bool = False,
    cache_dir: str | None = None,
    name: str = "model",
    run_dir=None,
    batch_size: int = 64,
    workers: int | None = None,
    explain: int = 0,
) -> dict:
    """Metrics, plots and ``report.md`` for ``split`` ('all' for every sample) into ``out`` (default
    ``runs/eval-NAME-SPLIT``). ``tta``: None uses the views the model was trained/selected with. ``explain``:
    the error gallery draws its first ``explain`` images as Grad-CAM overlays of the predicted class."""
    samples, source, split, views, got = _infer_split(
        runner,
        card,
        split,
        data=data,
        images=images,
        tta=tta,
        quiet=quiet,
        cache_dir=cache_dir,
        run_dir=run_dir,
        batch_size=batch_size,
        workers=workers,
    )
    skipped = [Skipped(str(samples[i].path), r) for i, r in sorted(got.errors.items())]
    notes: list[str] = []
    table, table_source, hierarchy = _hierarchy(card, runner.classes, run_dir, notes)
    results, unseen = _score(samples, got, runner.classes, table, notes)
    if table_source is not None:
        ok = np.flatnonzero(got.ok)
        hierarchy = hierarchy_report(
            table,
            table_source,
            {h: got.probs[h][ok] for h in runner.classes},
            runner.classes,
            {h: [samples[i].labels.get(h) for i in ok] for h in runner.classes},
        )
    out = Path(out) if out is not None else Path("runs") / f"eval-{name}-{split}"
    explainer = _gallery_explainer(runner, run_dir, notes) if explain > 0 else None
    report = write_report(
        out,
        results,
        split,
        skipped=skipped,
        extra={
            "model": name,
            "data": str(source),
            "notes": notes,
            "views": list(views),
            "runtime": runner.name,
        },
        explain=explainer,
        n_explain=explain,
        unseen=unseen,
        hierarchy=hierarchy,
    )
    if not quiet:
        for head, r in results.items():
            print(format_table(r["metrics"], title=f"{split} · {head}"))
        for n in notes:
            print("note:", n)
        if skipped:
            print(f"skipped {len(skipped)} unreadable images (see {out / 'report.md'})")
        print(f"report: {out / 'report.md'}")
        for line in summary_lines(report["summary"], split):
            print(line)
        line = hierarchy_line(report.get("hierarchy") or {})
        if line:
            print(line)
    return report


def score_run(
    run, split: str = "validation", runtime: str = "torch", quiet: bool = True, cache: bool = True
) -> dict:
    """{head: metrics} of a run (``None``/'default': the bundled model) on ``split`` of its own data, with the
    views it was trained with: the figures of :func:`evaluate_run` without its report (no plots, no files), for
    callers that compare many candidates (soups). ``cache=False`` for a throwaway model: its features are not
    written to the feature cache."""
    from vestis.engine.load import load_runner
    from vestis.models.checkpoint import resolve_model_dir

    runner, card = load_runner([run], runtime=runtime)
    run_dir = resolve_model_dir(None if run in (None, "", "default") else run)
    samples, _, _, _, got = _infer_split(runner, card, split, quiet=quiet, run_dir=run_dir, cache=cache)
    results, _ = _score(samples, got, runner.classes, None, [])
    return {head: r["metrics"] for head, r in results.items()}


def _score(samples, got, classes: dict[str, list[str]], table: dict | None, notes: list[str]):
    """(results per head for write_report, unseen-label reports per head). Images whose label the model has
    no class for are scored apart (:func:`unseen_report`), images without a label for a head are counted in
    a note; neither enters that head's metrics."""
    results, unseen = {}, {}
    implied = _implied(table)
    for head, names in classes.items():
        index = {c: k for k, c in enumerate(names)}
        keep = [i for i, s in enumerate(samples) if got.ok[i] and s.labels.get(head) in index]
        new = [
            i
            for i, s in enumerate(samples)
            if got.ok[i] and s.labels.get(head) is not None and s.labels[head] not in index
        ]
        missing = sum(bool(got.ok[i]) and s.labels.get(head) is None for i, s in enumerate(samples))
        if missing:
            notes.append(f"{head}: {missing} images without a {head} label were not scored for it")
        if keep:
            y = np.array([index[samples[i].labels[head]] for i in keep])
            p = got.probs[head][keep]
            results[head] = {
                "metrics": compute_metrics(y, p, names),
                "class_names": names,
                "paths": [str(samples[i].path) for i in keep],
                "y_true": y,
                "probs": p,
            }
            correct = int((p.argmax(axis=1) == y).sum())
        else:
            notes.append(f"{head}: nothing to score")
            correct = 0
        if new:
            labels = sorted({str(samples[i].labels[head]) for i in new})
            notes.append(
                f"{head}: {len(new)} images with labels the model never saw in training ({labels[:10]}): "
                "scored apart (report.md, metrics.json 'unseen')"
            )
            p = got.probs[head][new]
            parent = None
            if head in implied:
                coarse, mapping = implied[head]
                parent = {
                    "head": coarse,
                    "implied": [mapping.get(names[k]) for k in p.argmax(axis=1)],
                    "true": [samples[i].labels.get(coarse) for i in new],
                }
            unseen[head] = unseen_report(
                [str(samples[i].labels[head]) for i in new], p, names, len(keep), correct, parent
            )
    return results, unseen


def _implied(table: dict | None) -> dict[str, tuple[str, dict]]:
    """head -> (the next coarser head of the chain, {value: the coarser value it implies})."""
    chain = (table or {}).get("chain", [])
    return {
        fine: (chain[j + 1], {c[j]: c[j + 1] for c in table["combos"]}) for j, fine in enumerate(chain[:-1])
    }


def _hierarchy(card: dict, classes: dict, run_dir, notes: list[str]):
    """(the hierarchy table or None, where it came from or None, the report's hierarchy section when it is
    known already: None for a model with one head, a note when no table can be had)."""
    heads = list(classes)
    if len(heads) < 2:
        return None, None, None

    def load_train():
        return evaluation_samples(card, "train", run_dir=run_dir)[0]

    try:
        table, source = hierarchy_table(card, heads, load_train)
    except (ValueError, FileNotFoundError) as e:
        notes.append(f"hierarchy: not checked: {e}")
        return None, None, {"source": "none", "chain": [], "note": str(e)}
    return table, source, None


def _gallery_explainer(runner, run_dir, notes: list[str]):
    """``(paths, head, classes) -> overlays`` for the error gallery, or None (with a note) when the model has
    no single PyTorch model to explain (an ensemble; an .onnx file without its run)."""
    model = getattr(runner, "model", None)
    if model is None and run_dir is not None:
        from vestis.models.ensemble import load_models

        model = load_models([run_dir])[0]
    if model is None or hasattr(model, "members"):
        notes.append("--explain: Grad-CAM needs one PyTorch model (not an ensemble or a bare .onnx file)")
        return None
    from vestis.engine.explain import Explainer

    cam = Explainer(model)

    def overlays(paths, head, classes):
        out = []
        for path, cls in zip(paths, classes, strict=True):
            try:
                out.append(cam.images([path], head, int(cls))[0].overlay)
            except Exception:  # an image that cannot be read again is drawn as it is (a grey tile)
                out.append(None)
        return out

    return overlays


def evaluate_run(
    run: str | Path | list | None,
    split: str = "test",
    data: str | None = None,
    images: str | None = None,
    out: str | Path | None = None,
    tta: bool | None = None,
    quiet: bool = False,
    cache_dir: str | None = None,
    runtime: str = "torch",
    device: str = "auto",
    precision: str = "auto",
    explain: int = 0,
) -> dict:
    """:func:`evaluate_runner` for run directories (``None``: the bundled model; a list: their ensemble, class
    probabilities averaged, on the first run's data) or an ``.onnx`` file. The report goes to RUN/eval-SPLIT
    by default (``runs/eval-default-SPLIT`` for the bundled model, never into the installed package)."""
    from vestis.engine.load import is_onnx, load_runner
    from vestis.models.checkpoint import resolve_model_dir

    runs = list(run) if isinstance(run, (list, tuple)) else [run]
    runner, card = load_runner(runs, runtime=runtime, device=device, precision=precision, cache_dir=cache_dir)
    first = runs[0]
    bundled = first in (None, "", "default")
    run_dir = None if bundled or is_onnx(first) else resolve_model_dir(first)
    if out is None:
        suffix = f"eval-{split}" + ("-ensemble" if len(runs) > 1 else "")
        out = (
            run_dir / suffix
            if run_dir is not None
            else Path("runs") / f"eval-{'default' if bundled else Path(first).stem}-{split}"
        )
    name = ", ".join(str(r) if r not in (None, "", "default") else "the bundled model" for r in runs)
    return evaluate_runner(
        runner,
        card,
        split,
        data,
        images,
        out,
        tta,
        quiet,
        cache_dir,
        name,
        run_dir if run_dir is not None else (resolve_model_dir(None) if bundled else None),
        explain=explain,
    )
