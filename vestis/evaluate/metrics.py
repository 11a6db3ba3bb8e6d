"""Pure evaluation metrics: numpy arrays in, plain JSON-serialisable dicts out (no I/O)."""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

_PROB_SUM_TOL = 1e-2  # rows of `probs` must sum to 1 within this; catches logits passed by mistake


def _validate(y_true, probs, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes/ranges and return (int64 labels, float64 row-normalised probabilities)."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (N,), got shape {y.shape}")
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, C), got shape {p.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} samples but probs has {p.shape[0]} rows")
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero samples (N == 0)")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {n_classes} class names")
    if p.shape[1] < 2:
        raise ValueError(f"need at least 2 classes, got {p.shape[1]}")
    if not (np.issubdtype(y.dtype, np.integer) or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
        raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= p.shape[1])
    if bad.any():
        raise ValueError(f"y_true has {int(bad.sum())} label(s) outside [0, {p.shape[1]}), e.g. {y[bad][0]}")
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise ValueError("probs must be finite and non-negative (pass probabilities, not logits)")
    sums = p.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > _PROB_SUM_TOL):
        raise ValueError(
            f"probs rows must sum to 1 (got sums in [{sums.min():.4g}, {sums.max():.4g}]); "
            "pass softmax probabilities, not logits"
        )
    return y, p / sums[:, None]


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str], ks: tuple[int, ...] = (3, 5)
) -> dict:
    """Classification metrics for one head.

    y_true: int (N,) indices into class_names; probs: float (N, C) class probabilities, C == len(class_names).
    Returns {"n", "top1", "top_k": {"3": ..}, "macro_f1", "weighted_f1", "balanced_accuracy", "log_loss",
    "macro_avg"/"weighted_avg": {"precision", "recall", "f1", "accuracy"},
    "per_class": [{"class", "support", "precision", "recall", "f1", "accuracy" (one-vs-rest)}] in class order,
    "confusion": C x C ints, rows = true, cols = predicted}.

    Macro averages (``macro_f1``, ``macro_avg``) are taken over classes with support > 0 in ``y_true``
    (as ``balanced_accuracy`` is), so a class absent from this split neither drags them down nor counts as
    a perfect class; it is still listed in ``per_class`` with support 0 and ``None`` (JSON null, shown as
    "-") for recall, F1 and accuracy, and for precision too unless the class was predicted (then 0.0).
    ``top_k`` holds only k < C.
    """
    C = len(class_names)
    y, p = _validate(y_true, probs, C)
    n = int(y.shape[0])
    labels = list(range(C))
    y_pred = p.argmax(axis=1)
    present = sorted(set(y.tolist()))

    top_k = {}
    for k in sorted(set(int(k) for k in ks)):
        if 1 <= k < C:
            top_k[str(k)] = float(
                accuracy_score(y, y_pred) if k == 1 else top_k_accuracy_score(y, p, k=k, labels=labels)
            )

    prec, rec, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    mcm = multilabel_confusion_matrix(y, y_pred, labels=labels)  # per class [[tn, fp], [fn, tp]]
    ovr_acc = (mcm[:, 0, 0] + mcm[:, 1, 1]) / n
    predicted = mcm[:, 1, 1] + mcm[:, 0, 1]  # tp + fp
    per_class = [
        {
            "class": name,
            "support": int(support[i]),
            # undefined (None) without a true image of the class: recall, F1, accuracy; precision also
            # needs the class to have been predicted at least once
            "precision": float(prec[i]) if support[i] or predicted[i] else None,
            "recall": float(rec[i]) if support[i] else None,
            "f1": float(f1[i]) if support[i] else None,
            "accuracy": float(ovr_acc[i]) if support[i] else None,
        }
        for i, name in enumerate(class_names)
    ]

    def avg(average: str) -> dict:
        p_, r_, f_, _ = precision_recall_fscore_support(
            y, y_pred, labels=present, average=average, zero_division=0
        )
        w = support[present] if average == "weighted" else None
        return {
            "precision": float(p_),
            "recall": float(r_),
            "f1": float(f_),
            "accuracy": float(np.average(ovr_acc[present], weights=w)),
        }

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected, not a problem
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y, y_pred))

    macro, weighted = avg("macro"), avg("weighted")
    return {
        "n": n,
        "top1": float(accuracy_score(y, y_pred)),
        "top_k": top_k,
        "macro_f1": macro["f1"],
        "weighted_f1": weighted["f1"],
        "balanced_accuracy": balanced,
        "log_loss": float(log_loss(y, p, labels=labels)),
        "macro_avg": macro,
        "weighted_avg": weighted,
        "per_class": per_class,
        "confusion": confusion_matrix(y, y_pred, labels=labels).tolist(),
    }


def most_confident_errors(y_true, probs, k: int = 16) -> list[int]:
    """Indices of the k wrong predictions with the highest predicted-class probability, highest first."""
    y, p = _validate(y_true, probs)
    pred, conf = p.argmax(axis=1), p.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-conf[wrong], kind="stable")]
    return [int(i) for i in order[: max(int(k), 0)]]


def fmt_value(v, digits: int = 4) -> str:
    """A metric for a table: ``digits`` decimals, or "-" when it is undefined (None / NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def format_table(metrics: dict, title: str = "") -> str:
    """Fixed-width text table: one row per class, macro/weighted averages, then top-1, top-k and macro-F1.

    Undefined per-class values (a class without true samples in this split) are shown as "-"."""
    cols = ("precision", "recall", "f1", "accuracy")
    rows = [(c["class"], c["support"], *(c[k] for k in cols)) for c in metrics["per_class"]]
    avgs = [
        (label, metrics["n"], *(metrics[key][k] for k in cols))
        for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg"))
        if key in metrics
    ]
    w = max([len("class"), *(len(str(r[0])) for r in rows + avgs)])
    header = f"{'class':<{w}}  {'support':>7}" + "".join(f"  {c:>9}" for c in cols)

    def line(r) -> str:
        return f"{str(r[0]):<{w}}  {r[1]:>7d}" + "".join(f"  {fmt_value(v):>9}" for v in r[2:])

    rule = "-" * len(header)
    out = ([title, rule] if title else []) + [header, rule, *map(line, rows), rule, *map(line, avgs), rule]
    out.append(f"{'top-1':<12} {metrics['top1']:.4f}")
    out += [f"{'top-' + k:<12} {v:.4f}" for k, v in metrics.get("top_k", {}).items()]
    out.append(f"{'macro-F1':<12} {metrics['macro_f1']:.4f}")
    for key, label in (
        ("weighted_f1", "weighted-F1"),
        ("balanced_accuracy", "balanced acc"),
        ("log_loss", "log loss"),
    ):
        if key in metrics:
            out.append(f"{label:<12} {metrics[key]:.4f}")
    out.append(f"{'n':<12} {metrics['n']}")
    return "\n".join(out)


def summarize(metrics: dict) -> dict:
    """The headline figures of a :func:`compute_metrics` result (what a checkpoint's config.json keeps)."""
    keys = ("n", "top1", "top_k", "macro_f1", "weighted_f1", "balanced_accuracy")
    return {k: metrics[k] for k in keys if k in metrics}
