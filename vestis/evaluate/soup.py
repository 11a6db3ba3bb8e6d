"""Greedy model soups (Wortsman et al., 2022, algorithm 1): rank the ingredients by validation top-1, start
from the best, and add each of the others in that order only if the average with it scores at least as well
on validation. The uniform soup of everything can lose to its best member when one ingredient sits apart;
the greedy one cannot score below its best ingredient on the split it was chosen on.

Every score is measured here, in one run and one precision (members' stored figures come from their trainers,
which may have validated in another precision), as the mean top-1 over the heads."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vestis.evaluate.runner import score_run
from vestis.models.soup import average_models, save_soup


def validation_heads(run, cache: bool = True) -> dict:
    """{head: metrics} of ``run`` on its data's validation split, scored in PyTorch as soups are (no report
    written: only the figures are compared). ``cache=False`` for a throwaway candidate: nothing of it is left in
    the feature cache."""
    return score_run(run, split="validation", runtime="torch", cache=cache)


def mean_top1(heads: dict) -> float:
    """Mean top-1 over the heads of a :func:`validation_heads` result."""
    return sum(m["top1"] for m in heads.values()) / len(heads)


def greedy_soup(runs: list, out: str | Path, dtype=None, quiet: bool = False) -> dict:
    """Write the greedy soup of ``runs`` to ``out`` and return what was tried: ``ingredients`` (run → its own
    validation top-1, best first), ``steps`` (one per candidate added: run, the soup's top-1 with it, kept),
    ``kept`` (the members, best first), ``top1`` and ``heads`` (the soup's validation metrics, as scored when it
    was chosen). A soup of one member is that member's network, written as a run."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))  # progress, even into a pipe
    average_models(runs)  # the members checked (same network, fine-tuned) before minutes of scoring
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-greedy-") as tmp:
        tmp = Path(tmp)
        heads = {}
        for i, run in enumerate(runs):
            heads[str(run)] = validation_heads(run)
            say(f"ingredient {i + 1}/{len(runs)}  validation top-1 {mean_top1(heads[str(run)]):.4f}  {run}")
        scores = {r: mean_top1(h) for r, h in heads.items()}
        order = sorted(runs, key=lambda r: -scores[str(r)])  # stable: ties keep the order given
        kept, best, best_heads, steps = [order[0]], scores[str(order[0])], heads[str(order[0])], []
        for i, run in enumerate(order[1:]):
            candidate = tmp / f"soup-{i}"
            save_soup([*kept, run], candidate, dtype=dtype)
            candidate_heads = validation_heads(candidate, cache=False)
            top1 = mean_top1(candidate_heads)
            keep = top1 >= best
            steps.append({"run": str(run), "top1": top1, "kept": keep})
            say(f"+ {run}: soup of {len(kept) + 1} scores {top1:.4f} ({'kept' if keep else 'left out'})")
            if keep:
                kept.append(run)
                best, best_heads = top1, candidate_heads
            shutil.rmtree(candidate)
        record = {
            "greedy": {
                "ingredients": {str(r): scores[str(r)] for r in order},
                "steps": steps,
                "selected_on": "validation top-1 (mean over heads)",
            }
        }
        save_soup(kept, out, dtype=dtype, record=record)
    if len(kept) == 1 and dtype is not None:  # the one member, stored in another precision: scored as stored
        best_heads = validation_heads(out)
        best = mean_top1(best_heads)
    return {
        "ingredients": record["greedy"]["ingredients"],
        "steps": steps,
        "kept": kept,
        "top1": best,
        "heads": best_heads,
    }
