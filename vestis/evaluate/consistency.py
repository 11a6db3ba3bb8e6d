"""The hierarchy section of an evaluation: how many predictions break the label hierarchy the training data
implies (articleType -> subCategory -> masterCategory), and the metrics with consistent decoding beside the
plain ones, so one can see whether it helps."""

from __future__ import annotations

import numpy as np

from vestis.data.hierarchy import consistency, consistent_decode, learn_hierarchy

from .metrics import compute_metrics


def hierarchy_table(card: dict, heads: list[str], load_train=None) -> tuple[dict | None, str]:
    """(table, where it came from): the one stored in the model card (``train_config.hierarchy``, written by
    the trainers; None there means "learned, nothing implied"), else learned from the run's training split
    (``load_train()`` -> samples; older runs). Raises what ``load_train`` raises when it cannot."""
    tc = card.get("train_config") or {}
    if "hierarchy" in tc:
        return tc["hierarchy"], "model card"
    if load_train is None:
        raise ValueError("the model card stores no hierarchy and there is no training data to learn it from")
    return learn_hierarchy(load_train(), heads), "learned from the run's training split"


def _summary(m: dict) -> dict:
    return {"top1": m["top1"], "top5": m["top_k"].get("5"), "macro_f1": m["macro_f1"]}


def hierarchy_report(
    table: dict | None,
    source: str,
    probs: dict[str, np.ndarray],
    classes: dict[str, list[str]],
    truth: dict[str, list],
) -> dict:
    """``probs``: head -> (N, C) for every image that was read; ``truth``: head -> the N true labels (None when
    missing; a label the model has no class for is left out of that head's metrics, as in the main ones).

    Returns ``{"source", "chain", "combos", "pairs" (training exceptions), "plain" / "consistent" (consistency
    of the predictions, plain and decoded: n, inconsistent, rate, pairs), "labels" (of the true labels),
    "heads": {head: {"n", "plain": {top1, top5, macro_f1}, "consistent": {...}, "changed", "fixed",
    "broken"}}}``; without a table that applies, just source, chain [] and a note."""
    chain = [h for h in (table or {}).get("chain", []) if h in probs]
    if len(chain) < 2:
        note = (
            "no head implies another in the training data"
            if table is None
            else f"the table's chain {table.get('chain')} has fewer than two of this model's heads"
        )
        return {"source": source, "chain": chain, "note": note}
    names = {h: [classes[h][k] for k in np.asarray(probs[h]).argmax(axis=1)] for h in chain}
    decoded = consistent_decode({h: probs[h] for h in chain}, classes, table)
    dnames = {h: [classes[h][k] for k in decoded[h].argmax(axis=1)] for h in chain}
    out = {
        "source": source,
        "chain": chain,
        "combos": len(table["combos"]),
        "pairs": table.get("pairs", []),
        "plain": consistency(names, table),
        "consistent": consistency(dnames, table),
        "labels": consistency({h: truth[h] for h in chain}, table),
        "heads": {},
    }
    for h in chain:
        index = {c: k for k, c in enumerate(classes[h])}
        keep = np.array([t in index for t in truth[h]], dtype=bool)
        if not keep.any():
            continue
        y = np.array([index[t] for t in np.asarray(truth[h], dtype=object)[keep]])
        p, q = np.asarray(probs[h])[keep], decoded[h][keep]
        a, b = p.argmax(axis=1), q.argmax(axis=1)
        out["heads"][h] = {
            "n": int(keep.sum()),
            "plain": _summary(compute_metrics(y, p, classes[h])),
            "consistent": _summary(compute_metrics(y, q, classes[h])),
            "changed": int((a != b).sum()),
            "fixed": int(((a != y) & (b == y)).sum()),
            "broken": int(((a == y) & (b != y)).sum()),
        }
    return out


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def hierarchy_markdown(h: dict) -> list[str]:
    """The report's "Hierarchy" section."""
    out = ["## Hierarchy", ""]
    if len(h.get("chain", [])) < 2:
        return out + [f"No hierarchy checked ({h.get('source')}): {h.get('note')}.", ""]
    p, c, lab = h["plain"], h["consistent"], h["labels"]
    training = "".join(
        f"; {e['fine']} → {e['coarse']}: {e['exceptions']} exceptions in {e['rows']} training rows"
        for e in h["pairs"]
    )
    out += [
        f"Chain {' → '.join(f'`{x}`' for x in h['chain'])} ({h['source']}; {h['combos']} valid "
        f"combinations{training}).",
        "",
        f"- inconsistent predictions: **{p['inconsistent']} of {p['n']}** ({(p['rate'] or 0):.2%})"
        + "".join(f"; {k}: {v}" for k, v in p["pairs"].items()),
        f"- with consistent decoding: {c['inconsistent']} of {c['n']}",
        f"- true labels that break the table themselves: {lab['inconsistent']} of {lab['n']}",
        "",
        "| head | n | top-1 | top-1 consistent | top-5 | top-5 consistent | macro-F1 | macro-F1 consistent "
        "| changed | fixed | broken |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for head, r in h["heads"].items():
        a, b = r["plain"], r["consistent"]
        out.append(
            f"| {head} | {r['n']} | {_f(a['top1'])} | {_f(b['top1'])} | {_f(a['top5'])} | {_f(b['top5'])} | "
            f"{_f(a['macro_f1'])} | {_f(b['macro_f1'])} | {r['changed']} | {r['fixed']} | {r['broken']} |"
        )
    return out + [
        "",
        "Consistent decoding scores every combination seen in training by the sum of its heads' "
        "log-probabilities and takes the best (`vestis predict --consistent`); fixed / broken: predictions "
        "it turned right / wrong.",
        "",
    ]


def hierarchy_line(h: dict) -> str | None:
    """One console line, or None without a chain."""
    if len(h.get("chain", [])) < 2:
        return None
    p = h["plain"]
    gains = ", ".join(
        f"{head} {r['plain']['top1']:.4f} -> {r['consistent']['top1']:.4f}" for head, r in h["heads"].items()
    )
    return (
        f"hierarchy {' > '.join(h['chain'])}: {p['inconsistent']} of {p['n']} predictions inconsistent "
        f"({(p['rate'] or 0):.2%}); consistent decoding top-1: {gains}"
    )
