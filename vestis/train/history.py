"""Training history and reports: ``metrics.jsonl`` (one row per epoch), TensorBoard events (when tensorboard is
installed), ``history.png`` (loss, accuracy, learning rate), and the validation scores the trainer selects on and
reports: per head, per class (with the imbalance remedies' effect) and per class group (staged classes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vestis.evaluate import compute_metrics
from vestis.models.checkpoint import atomic_write_text
from vestis.train.losses import class_weights

METRICS = "metrics.jsonl"


class History:
    """Rows of the epochs done so far. On resume, rows past ``done`` epochs (from an interrupted epoch's
    aftermath) are dropped, and TensorBoard purges its events past that step."""

    def __init__(self, run_dir: str | Path, done: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS
        self.rows: list[dict] = []
        if done and self.path.is_file():
            rows = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
            self.rows = [r for r in rows if r["epoch"] <= done]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (pip install vestis[train])
                pass
            else:
                self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=done + 1 if done else None)

    def log(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                    self.writer.add_scalar(k.replace("_", "/", 1), v, row["epoch"])
            self.writer.flush()

    def plot(self) -> Path:
        return plot_history(self.rows, self.run_dir / "history.png")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_history(rows: list[dict], path: Path) -> Path:
    """Three panels over epochs: train/validation loss, validation top-1 and macro-F1, learning rate; a dotted
    line where a new stage starts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    ep = [r["epoch"] for r in rows]
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "validation")]),
        ("validation", [("val_top1", "top-1"), ("val_macro_f1", "macro-F1")]),
        ("learning rate", [("lr", "head"), ("lr_backbone", "backbone")]),
    ]
    for ax, (title, series) in zip(axes, panels, strict=True):
        for key, label in series:
            ys = [r.get(key) for r in rows]
            if any(y is not None for y in ys):
                ax.plot(ep, [float("nan") if y is None else y for y in ys], marker=".", label=label)
        for a, b in zip(rows, rows[1:], strict=False):
            if a.get("stage") != b.get("stage"):
                ax.axvline(b["epoch"] - 0.5, color="grey", linestyle=":")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    axes[2].set_yscale("log")
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    return path


def score_heads(
    probs, ok, ys: dict[str, np.ndarray], classes: dict[str, list[str]], select: str, head: str | None = None
) -> dict:
    """Metrics per head on the rows with a known label; their means under 'mean', whose 'score' (what selects
    the epoch) is the mean of ``select`` over the heads, or ``head``'s own when one is named."""
    per_head = {}
    for h, y in ys.items():
        keep = ok & (y >= 0)
        if keep.sum():
            per_head[h] = compute_metrics(y[keep], probs[h][keep], classes[h])
    if not per_head:
        return {"heads": {}, "mean": None}
    mean = {k: float(np.mean([m[k] for m in per_head.values()])) for k in ("top1", "macro_f1", "log_loss")}
    mean["score"] = per_head[head][select] if head in per_head else mean[select]
    return {"heads": per_head, "mean": mean}


def group_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str], group: list[str]) -> dict | None:
    """One class group's images: top-1 among all the head's classes, and top-1/top-5/macro-F1 among the
    group's own classes (the published protocol scores each group as its own classifier)."""
    cols = [classes.index(c) for c in group if c in classes]
    keep = np.isin(y, cols)
    if not keep.any() or len(cols) < 2:
        return None
    yk, pk = y[keep], probs[keep]
    p = pk[:, cols] / np.clip(pk[:, cols].sum(1, keepdims=True), 1e-12, None)
    pos = {c: k for k, c in enumerate(cols)}
    m = compute_metrics(np.array([pos[v] for v in yk]), p, [classes[c] for c in cols])
    return {
        "n": int(keep.sum()),
        "top1": float((pk.argmax(1) == yk).mean()),
        "top1_within": m["top1"],
        "top5_within": m["top_k"].get("5"),
        "macro_f1_within": m["macro_f1"],
    }


def imbalance_table(
    head: str, classes: list[str], y_train: np.ndarray, metrics: dict | None, cfg
) -> list[dict]:
    """Per class: training images, share of the epoch's draws (sampler), loss weight, validation recall/F1."""
    counts = np.bincount(y_train[y_train >= 0], minlength=len(classes))
    present = counts > 0
    share = (
        np.where(present, 1.0 / present.sum(), 0.0) if cfg.sampler == "balanced" else counts / counts.sum()
    )
    weights = (
        class_weights(y_train[y_train >= 0], len(classes)).numpy()
        if cfg.loss in ("weighted", "focal")
        else np.ones(len(classes))
    )
    per = {c["class"]: c for c in metrics["per_class"]} if metrics else {}
    return [
        {
            "head": head,
            "class": c,
            "train": int(counts[k]),
            "draw_share": round(float(share[k]), 4),
            "loss_weight": round(float(weights[k]), 3),
            "val_support": per.get(c, {}).get("support", 0),
            "val_recall": per.get(c, {}).get("recall"),
            "val_f1": per.get(c, {}).get("f1"),
        }
        for k, c in enumerate(classes)
    ]


def format_imbalance(rows: list[dict]) -> str:
    w = max(len("class"), *(len(r["class"]) for r in rows))
    out = [
        f"{'class':<{w}}  {'train':>6}  {'draws':>6}  {'weight':>6}  {'val n':>5}  {'recall':>6}  {'f1':>6}"
    ]
    for r in rows:
        rec = "-" if r["val_recall"] is None else f"{r['val_recall']:.3f}"
        f1 = "-" if r["val_f1"] is None else f"{r['val_f1']:.3f}"
        out.append(
            f"{r['class']:<{w}}  {r['train']:>6}  {r['draw_share']:>6.3f}  {r['loss_weight']:>6.2f}  "
            f"{r['val_support']:>5}  {rec:>6}  {f1:>6}"
        )
    return "\n".join(out)
