"""Evaluation artefacts: confusion-matrix and error-gallery PNGs, metrics.json and a markdown report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # Figure + savefig renders with Agg; no pyplot, no display needed
from PIL import Image

from .confusion import MAX_PLOT_CLASSES, frequent_classes, top_confusions, write_confusion_csv
from .consistency import hierarchy_markdown
from .metrics import compute_metrics, fmt_value, most_confident_errors
from .summary import summary_markdown, summary_rows
from .unseen import unseen_markdown

MAX_ANNOTATED_CLASSES = 60
N_ERRORS = 16
MAX_SKIPPED_LISTED = 100


def plot_confusion(
    confusion: list[list[int]],
    class_names: list[str],
    path: Path,
    normalize: bool = True,
    title: str = "",
    row_totals=None,
) -> Path:
    """Confusion matrix heat map (rows = true): colours row-normalised, cells annotated with raw counts.
    ``row_totals``: each row's count in the full matrix when this is a part of it (the row fractions then
    stay fractions of the whole class)."""
    cm = np.asarray(confusion, dtype=np.int64)
    C = len(class_names)
    if cm.shape != (C, C):
        raise ValueError(f"confusion has shape {cm.shape}, expected ({C}, {C}) for {C} class names")
    rows = cm.sum(axis=1, keepdims=True) if row_totals is None else np.asarray(row_totals).reshape(C, 1)
    colour = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) if normalize else cm.astype(float)

    side = min(max(5.0, 0.35 * C + 2.5), 40.0)
    font = max(4.0, min(10.0, 400.0 / max(C, 1)))
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(colour, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row fraction" if normalize else "count")
    ticks = np.arange(C)
    ax.set_xticks(ticks, labels=class_names, rotation=90, fontsize=font)
    ax.set_yticks(ticks, labels=class_names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if C <= MAX_ANNOTATED_CLASSES:
        hi = colour.max() / 2 if colour.max() > 0 else 1
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=font * 0.8,
                color="white" if colour[i, j] > hi else "black",
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _thumbnail(path, size: int = 256) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im)
    except Exception:  # any unreadable/corrupt/missing file becomes a grey tile
        return None


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_gallery(items: list[dict], path: Path, title: str = "", cols: int = 4) -> Path:
    """Grid of images captioned "true → pred (score)"; unreadable images are drawn as grey tiles. An item's
    ``overlay`` (a uint8 image: the Grad-CAM of the predicted class over the model's crop) replaces its image."""
    cols = max(1, min(int(cols), max(len(items), 1)))
    nrows = max(1, math.ceil(len(items) / cols))
    fig = Figure(figsize=(3.0 * cols, 3.3 * nrows + (0.5 if title else 0)))
    if title:
        fig.suptitle(title)
    if not items:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no images to show", ha="center", va="center")
    for n, item in enumerate(items):
        ax = fig.add_subplot(nrows, cols, n + 1)
        ax.set_axis_off()
        overlay = item.get("overlay")
        img = overlay if overlay is not None else _thumbnail(item.get("path", ""))
        if img is None:
            ax.imshow(np.full((64, 64, 3), 160, dtype=np.uint8))
            ax.text(32, 32, "unreadable", ha="center", va="center", fontsize=9)
        else:
            ax.imshow(img)
        score = item.get("score")
        score_txt = f" ({score:.2f})" if isinstance(score, (int, float)) else ""
        ax.set_title(
            f"{_short(str(item.get('true', '?')))} →\n{_short(str(item.get('pred', '?')))}{score_txt}",
            fontsize=8,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "head"


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _skipped(item) -> dict:
    if isinstance(item, dict):
        return {"item": str(item["item"]), "reason": str(item["reason"])}
    return {"item": str(item.item), "reason": str(item.reason)}


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _confusion_png(m: dict, names: list[str], path: Path, head: str, split: str) -> str:
    """The heat map, limited to the most frequent classes when there are too many to read; returns the
    caption."""
    keep = frequent_classes(m["confusion"], MAX_PLOT_CLASSES)
    if keep is None:
        plot_confusion(m["confusion"], names, path, title=f"{head} ({split})")
        return f"confusion matrix for {head}"
    cm = np.asarray(m["confusion"])
    what = f"the {len(keep)} most frequent of {len(names)} classes"
    plot_confusion(
        cm[np.ix_(keep, keep)],
        [names[i] for i in keep],
        path,
        title=f"{head} ({split}): {what}",
        row_totals=cm.sum(axis=1)[keep],
    )
    return f"confusion matrix for {head}, {what} (all in the CSV)"


def _confusions_md(m: dict, files: dict[str, str], caption: str) -> list[str]:
    out = [
        f"![{caption}]({files['confusion']})",
        "",
        f"Full matrix: [{files['csv']}]({files['csv']}) (rows = true, columns = predicted).",
        "",
    ]
    if m["top_confusions"]:
        out += [
            f"### Top confusions ({len(m['top_confusions'])})",
            "",
            "| true | predicted | count | share of true class |",
            "|---|---|---:|---:|",
        ]
        out += [
            f"| {_cell(c['true'])} | {_cell(c['pred'])} | {c['count']} | {c['share']:.1%} |"
            for c in m["top_confusions"]
        ]
        out.append("")
    return out


def _head_section(
    head: str,
    m: dict,
    errors: list[dict],
    files: dict[str, str],
    caption: str = "",
    unseen: dict | None = None,
) -> list[str]:
    top_k = "".join(f" | top-{k} {v:.4f}" for k, v in m["top_k"].items())
    out = [
        f"## Head `{head}`",
        "",
        f"- samples: {m['n']}",
        f"- top-1 {m['top1']:.4f}{top_k} | macro-F1 {m['macro_f1']:.4f} | weighted-F1 {m['weighted_f1']:.4f}"
        f" | balanced accuracy {m['balanced_accuracy']:.4f} | log loss {m['log_loss']:.4f}",
        "",
        "| class | support | precision | recall | f1 | accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    cols = ("precision", "recall", "f1", "accuracy")
    for c in m["per_class"]:
        out.append(
            f"| {_cell(c['class'])} | {c['support']} | " + " | ".join(fmt_value(c[k]) for k in cols) + " |"
        )
    for label, key in (("**macro avg**", "macro_avg"), ("**weighted avg**", "weighted_avg")):
        out.append(f"| {label} | {m['n']} | " + " | ".join(fmt_value(m[key][k]) for k in cols) + " |")
    out.append("")
    if unseen:
        out += unseen_markdown(head, unseen)
    out += _confusions_md(m, files, caption or f"confusion matrix for {head}")
    out += [f"### Most confidently wrong ({len(errors)})", ""]
    if errors:
        out += [
            f"![most confidently wrong for {head}]({files['errors']})",
            "",
            "| # | image | true | pred | score |",
            "|---:|---|---|---|---:|",
        ]
        out += [
            f"| {i} | {_cell(e['path'])} | {_cell(e['true'])} | {_cell(e['pred'])} | {e['score']:.4f} |"
            for i, e in enumerate(errors, 1)
        ]
    else:
        out.append("No misclassified images.")
    return out + [""]


def write_report(
    out_dir: Path,
    results: dict[str, dict],
    split: str,
    skipped: list | None = None,
    extra: dict | None = None,
    explain=None,
    n_explain: int = 0,
    unseen: dict | None = None,
    hierarchy: dict | None = None,
) -> dict:
    """Write metrics.json, confusion_{head}.png, errors_{head}.png and report.md into out_dir.

    results: head -> {"metrics", "class_names", "paths", "y_true", "probs"} ("metrics" is computed if absent).
    skipped: objects with .item/.reason (vestis.data.types.Skipped) or dicts with those keys.
    explain: ``(paths, head, class indices) -> [overlay uint8 image or None, ...]``: the first ``n_explain``
    most confidently wrong images are drawn as Grad-CAM overlays of their predicted class.
    unseen: head -> :func:`vestis.evaluate.unseen.unseen_report` (images whose label the model never saw);
    hierarchy: :func:`vestis.evaluate.consistency.hierarchy_report`.
    Each head also gets confusion_{head}.csv (the full matrix) and ``top_confusions`` in its metrics; the
    PNG shows the most frequent classes when there are more than ``MAX_PLOT_CLASSES``.
    Returns the metrics.json content: {"split", "summary": [one row per head], "heads": {head: metrics},
    "unseen": {head: ...}, "hierarchy": {...} (when given), "skipped": [...], **extra}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped_list = [_skipped(s) for s in (skipped or [])]
    clash = {"split", "summary", "heads", "unseen", "hierarchy", "skipped"} & set(extra or {})
    if clash:
        raise ValueError(f"extra must not override reserved metrics.json keys: {sorted(clash)}")

    heads, sections = {}, []
    for head, r in results.items():
        names, y_true, probs = list(r["class_names"]), np.asarray(r["y_true"]), np.asarray(r["probs"])
        paths = [str(p) for p in r["paths"]]
        if len(paths) != len(y_true):
            raise ValueError(f"head {head!r}: {len(paths)} paths but {len(y_true)} labels")
        m = dict(r.get("metrics") or compute_metrics(y_true, probs, names))
        m["top_confusions"] = top_confusions(m["confusion"], names)
        stem = _safe(head)
        files = {
            "confusion": f"confusion_{stem}.png",
            "csv": f"confusion_{stem}.csv",
            "errors": f"errors_{stem}.png",
        }
        caption = _confusion_png(m, names, out_dir / files["confusion"], head, split)
        write_confusion_csv(m["confusion"], names, out_dir / files["csv"])
        errors = [
            {
                "path": paths[i],
                "true": names[int(y_true[i])],
                "pred": names[int(probs[i].argmax())],
                "score": float(probs[i].max()),
            }
            for i in most_confident_errors(y_true, probs, k=max(N_ERRORS, n_explain if explain else 0))
        ]
        title = f"{head}: most confidently wrong ({split})"
        if explain is not None and n_explain > 0 and errors:
            shown = errors[:n_explain]
            overlays = explain([e["path"] for e in shown], head, [names.index(e["pred"]) for e in shown])
            gallery = [{**e, "overlay": o} for e, o in zip(shown, overlays, strict=True)] + errors[n_explain:]
            title += f"; Grad-CAM of the predicted class on the first {len(shown)}"
        else:
            gallery = errors
        plot_gallery(gallery, out_dir / files["errors"], title=title)
        heads[head] = m
        sections += _head_section(head, m, errors, files, caption, (unseen or {}).get(head))

    summary = summary_rows(heads, {h: len(r["class_names"]) for h, r in results.items()}, unseen, hierarchy)
    payload = {"split": split, "summary": summary, "heads": heads, "unseen": unseen or {}}
    if hierarchy is not None:
        payload["hierarchy"] = hierarchy
    payload.update({"skipped": skipped_list, **(extra or {})})
    text = json.dumps(payload, indent=2, default=_json_default)
    (out_dir / "metrics.json").write_text(text + "\n", encoding="utf-8")

    md = [
        f"# Evaluation report: split `{split}`",
        "",
        *summary_markdown(summary),
        f"- heads: {len(heads)} ({', '.join(f'`{h}`' for h in heads)})",
        *(f"- samples for `{h}`: {m['n']}" for h, m in heads.items()),
        f"- skipped inputs: {len(skipped_list)}",
    ]
    md += [
        f"- {_cell(k)}: {_cell(json.dumps(v, default=_json_default))[:200]}" for k, v in (extra or {}).items()
    ]
    md.append("")
    missing = sorted(set(unseen or {}) - set(heads))
    for head in missing:  # a head with nothing known to score still reports its unseen labels
        md += [f"## Head `{head}`", "", *unseen_markdown(head, unseen[head])]
    if hierarchy is not None:
        md += hierarchy_markdown(hierarchy)
    if skipped_list:
        md += ["## Skipped inputs", "", "| item | reason |", "|---|---|"]
        md += [f"| {_cell(s['item'])} | {_cell(s['reason'])} |" for s in skipped_list[:MAX_SKIPPED_LISTED]]
        if len(skipped_list) > MAX_SKIPPED_LISTED:
            md.append(f"\n... and {len(skipped_list) - MAX_SKIPPED_LISTED} more (all listed in metrics.json)")
        md.append("")
    (out_dir / "report.md").write_text("\n".join(md + sections), encoding="utf-8")
    return json.loads(text)
