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

from vestis.evaluate.runner import evaluate_run
from vestis.models.soup import average_models, save_soup


def validation_heads(run, workdir: str | Path) -> dict:
    """{head: metrics} of ``run`` on its data's validation split, scored in PyTorch as soups are (the report
    goes to ``workdir``)."""
    return evaluate_run(run, split="validation", out=workdir, quiet=True, runtime="torch")["heads"]


def validation_top1(run, workdir: str | Path) -> float:
    """Mean top-1 over the heads of ``run`` on its data's validation split."""
    scores = [m["top1"] for m in validation_heads(run, workdir).values()]
    return sum(scores) / len(scores)


def greedy_soup(runs: list, out: str | Path, dtype=None, quiet: bool = False) -> dict:
    """Write the greedy soup of ``runs`` to ``out`` and return what was tried: ``ingredients`` (run → its own
    validation top-1, best first), ``steps`` (one per candidate added: run, the soup's top-1 with it, kept),
    ``kept`` (the members, best first) and ``top1`` (the soup's). A soup of one member is that member's
    network, written as a run."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))  # progress, even into a pipe
    average_models(runs)  # the members checked (same network, fine-tuned) before minutes of scoring
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-greedy-") as tmp:
        tmp = Path(tmp)
        scores = {}
        for i, run in enumerate(runs):
            scores[str(run)] = validation_top1(run, tmp / f"ingredient-{i}")
            say(f"ingredient {i + 1}/{len(runs)}  validation top-1 {scores[str(run)]:.4f}  {run}")
        order = sorted(runs, key=lambda r: -scores[str(r)])  # stable: ties keep the order given
        kept, best, steps = [order[0]], scores[str(order[0])], []
        for i, run in enumerate(order[1:]):
            candidate = tmp / f"soup-{i}"
            save_soup([*kept, run], candidate, dtype=dtype)
            top1 = validation_top1(candidate, tmp / f"soup-{i}-eval")
            keep = top1 >= best
            steps.append({"run": str(run), "top1": top1, "kept": keep})
            say(f"+ {run}: soup of {len(kept) + 1} scores {top1:.4f} ({'kept' if keep else 'left out'})")
            if keep:
                kept.append(run)
                best = top1
            shutil.rmtree(candidate)
        record = {
            "greedy": {
                "ingredients": {str(r): scores[str(r)] for r in order},
                "steps": steps,
                "selected_on": "validation top-1 (mean over heads)",
            }
        }
        save_soup(kept, out, dtype=dtype, record=record)
    return {"ingredients": record["greedy"]["ingredients"], "steps": steps, "kept": kept, "top1": best}
