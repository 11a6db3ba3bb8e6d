"""Test images whose label the model never saw in training: reported and scored apart from the known classes
(whose metrics stay as they are), never silently counted wrong or left out."""

from __future__ import annotations

from collections import Counter

import numpy as np

N_PREDICTED = 10  # most frequent predictions listed for all unseen images together
N_PER_LABEL = 3  # ... and for each unseen label


def _ranked(counter: Counter, n: int, total: int) -> list[dict]:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [{"label": k, "count": int(v), "share": v / total} for k, v in items]


def unseen_report(
    labels: list[str],
    probs: np.ndarray,
    classes: list[str],
    known_n: int,
    known_correct: int,
    parent: dict | None = None,
) -> dict:
    """What the model did with ``labels`` (true values it has no class for), given its ``probs`` (N, C) on
    those images.

    Returns ``{"n", "labels": {label: count} (most frequent first), "predicted": [{"label", "count", "share"}]
    (what they were taken for), "by_label": {label: [{"label", "count", "share"}]}, "mean_confidence" (mean top
    probability: how sure the model was of a class that cannot be right), "top1_all" (top-1 over known and
    unseen images together, the unseen counted wrong: the figure a user sees on this data)}`` and, when
    ``parent`` is given (``{"head", "implied": [the coarser class the prediction implies, or None],
    "true": [the image's coarser label, or None]}``), ``"parent": {"head", "n", "top1"}``: how often the
    prediction at least lands in the right coarser class (e.g. an unseen article type taken for a known one of
    the same sub-category)."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) != len(probs):
        raise ValueError(f"{len(labels)} labels but {len(probs)} rows of probabilities")
    n = len(labels)
    pred = [classes[k] for k in probs.argmax(axis=1)] if n else []
    by: dict[str, Counter] = {}
    for t, p in zip(labels, pred, strict=True):
        by.setdefault(t, Counter())[p] += 1
    counts = Counter(labels)
    out = {
        "n": n,
        "labels": {k: int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))},
        "predicted": _ranked(Counter(pred), N_PREDICTED, n) if n else [],
        "by_label": {
            t: _ranked(by[t], N_PER_LABEL, counts[t]) for t in sorted(by, key=lambda t: (-counts[t], t))
        },
        "mean_confidence": float(probs.max(axis=1).mean()) if n else None,
        "top1_all": known_correct / (known_n + n) if known_n + n else None,
    }
    if parent is not None:
        pairs = [
            (i, t)
            for i, t in zip(parent["implied"], parent["true"], strict=True)
            if i is not None and t is not None
        ]
        out["parent"] = {
            "head": parent["head"],
            "n": len(pairs),
            "top1": sum(i == t for i, t in pairs) / len(pairs) if pairs else None,
        }
    return out


def unseen_markdown(head: str, u: dict, max_labels: int = 30) -> list[str]:
    """The report's section for one head's unseen labels."""
    out = [
        f"### Labels not seen in training ({u['n']} images, {len(u['labels'])} labels)",
        "",
        "Not in the metrics above (the model has no class for them, so they cannot be right); scored here. "
        f"Top-1 over all images with these counted wrong: {u['top1_all']:.4f}; the model's mean confidence on "
        f"them: {u['mean_confidence']:.4f}.",
    ]
    par = u.get("parent")
    if par and par["n"]:
        out.append(
            f"Predicted class implies the right `{par['head']}` for {par['top1']:.4f} of them (n={par['n']})."
        )
    out += ["", "| unseen label | images | taken for (top predictions) |", "|---|---:|---|"]
    for label, count in list(u["labels"].items())[:max_labels]:
        taken = ", ".join(f"{_c(p['label'])} {p['count']}" for p in u["by_label"].get(label, []))
        out.append(f"| {_c(label)} | {count} | {taken} |")
    if len(u["labels"]) > max_labels:
        out.append(f"\n... and {len(u['labels']) - max_labels} more labels (all in metrics.json)")
    pred = ", ".join(f"{_c(p['label'])} {p['count']} ({p['share']:.0%})" for p in u["predicted"])
    return out + ["", f"Most frequent predictions for them: {pred}", ""]


def _c(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
