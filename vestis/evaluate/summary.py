"""One line per attribute: the summary table at the top of report.md and the lines ``vestis evaluate`` ends
with. Top-5 only where it means something: heads with more than 5 classes."""

from __future__ import annotations


def summary_rows(
    heads: dict[str, dict],
    n_classes: dict[str, int],
    unseen: dict | None = None,
    hierarchy: dict | None = None,
) -> list[dict]:
    """``heads``: head -> compute_metrics result. One ``{"head", "n", "classes", "top1", "top5" (None with 5
    classes or fewer), "macro_f1", "unseen" (images with labels the model never saw), "top1_consistent"
    (with consistent decoding; None outside the hierarchy)}`` per head."""
    unseen = unseen or {}
    consistent = (hierarchy or {}).get("heads", {})
    return [
        {
            "head": head,
            "n": m["n"],
            "classes": n_classes[head],
            "top1": m["top1"],
            "top5": m["top_k"].get("5") if n_classes[head] > 5 else None,
            "macro_f1": m["macro_f1"],
            "unseen": unseen[head]["n"] if head in unseen else 0,
            "top1_consistent": consistent[head]["consistent"]["top1"] if head in consistent else None,
        }
        for head, m in heads.items()
    ]


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def summary_markdown(rows: list[dict]) -> list[str]:
    """The table at the top of report.md (the unseen and consistent-decoding columns only when they apply)."""
    unseen = any(r["unseen"] for r in rows)
    consistent = any(r["top1_consistent"] is not None for r in rows)
    head = "| head | n | classes | top-1 | top-5 | macro-F1 |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if consistent:
        head, rule = head + " top-1 consistent |", rule + "---:|"
    if unseen:
        head, rule = head + " unseen labels (not scored above) |", rule + "---:|"
    out = ["## Summary", "", head, rule]
    for r in rows:
        line = f"| `{r['head']}` | {r['n']} | {r['classes']} | {_f(r['top1'])} | {_f(r['top5'])} | {_f(r['macro_f1'])} |"
        if consistent:
            line += f" {_f(r['top1_consistent'])} |"
        if unseen:
            line += f" {r['unseen']} |"
        out.append(line)
    return out + [""]


def summary_lines(rows: list[dict], split: str) -> list[str]:
    """One console line per attribute."""
    w = max((len(r["head"]) for r in rows), default=0)
    out = []
    for r in rows:
        line = f"{split} · {r['head']:<{w}}  n={r['n']:<6d} classes={r['classes']:<4d} top-1 {r['top1']:.4f}"
        line += f"  top-5 {r['top5']:.4f}" if r["top5"] is not None else " " * 14
        line += f"  macro-F1 {r['macro_f1']:.4f}"
        if r["top1_consistent"] is not None:
            line += f"  consistent top-1 {r['top1_consistent']:.4f}"
        if r["unseen"]:
            line += f"  (+{r['unseen']} images with labels unseen in training, reported apart)"
        out.append(line)
    return out
