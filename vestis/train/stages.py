"""Which classes each head learns, and when: classes with enough training images, and staged classes
(``--stages top:20,rest``: the 20 most frequent classes first, then the head grows to every class, keeping the
learned rows). Each stage's classes are a group in the report, scored after that stage and at the end."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from vestis.data.rare import OTHER
from vestis.train.config import TrainConfig, parse_stages
from vestis.train.history import group_metrics


@dataclass
class Stage:
    name: str  # "all" (no stages), "top:20", "rest" or "all"
    classes: dict[str, list[str]]  # each head's classes during this stage (earlier stages' first)
    group: list[str]  # the classes this stage adds (a group in the report); first head
    train: dict[str, set[str]]  # classes whose images are trained on


def plan_stages(ds, cfg: TrainConfig, notes: list[str]) -> list[Stage]:
    """Classes per head (those with >= min_per_class training images) and the stages over them."""
    classes, counts = {}, {}
    for h in ds.heads:
        counts[h] = Counter(s.labels.get(h) for s in ds.split("train") if s.labels.get(h) is not None)
        folded = OTHER if cfg.rare == "fold" else None  # the class the rare ones were folded into stays
        keep = sorted(c for c, k in counts[h].items() if k >= cfg.min_per_class or c == folded)
        if len(keep) < len(counts[h]):
            dropped = sorted(set(counts[h]) - set(keep))
            notes.append(
                f"{h}: {len(dropped)} classes with < {cfg.min_per_class} training images dropped: {dropped[:10]}"
            )
        unseen = [s for s in ds.samples if s.labels.get(h) is not None and s.labels[h] not in keep]
        absent = sorted({s.labels[h] for s in unseen if s.split != "train"} - set(keep))
        if absent:
            n = sum(1 for s in unseen if s.split != "train")
            notes.append(
                f"{h}: {len(absent)} classes have no training images, so the model cannot predict them; "
                f"their {n} validation/test images are reported, not scored: {absent[:10]}"
            )
        if len(keep) < 2:
            raise ValueError(f"head {h!r}: need at least 2 classes with training images, found {keep}")
        classes[h] = keep
    spec = parse_stages(cfg.stages)
    if not spec:
        return [Stage("all", classes, classes[ds.heads[0]], {h: set(c) for h, c in classes.items()})]
    h = ds.heads[0]
    by_freq = sorted(classes[h], key=lambda c: (-counts[h][c], c))
    stages, seen = [], []
    for name, n in spec:
        group = sorted(by_freq[:n]) if name == "top" else sorted(set(classes[h]) - set(seen))
        if not group or (name == "top" and n >= len(classes[h])):
            raise ValueError(
                f"stages {cfg.stages!r}: {len(classes[h])} classes leave nothing for stage {name!r}"
            )
        seen += [c for c in group if c not in seen]
        trained = set(seen) if name == "all" else set(group)
        stages.append(Stage(f"top:{n}" if name == "top" else name, {h: list(seen)}, group, {h: trained}))
    return stages


def targets(ds, classes: dict[str, list[str]], idx: list[int]) -> dict[str, np.ndarray]:
    """Class index per sample and head (-1: missing, or a class the head does not have)."""
    out = {}
    for h, cl in classes.items():
        pos = {c: k for k, c in enumerate(cl)}
        out[h] = np.array([pos.get(ds.samples[i].labels.get(h), -1) for i in idx], dtype=np.int64)
    return out


def stage_split(ds, split: str, classes: dict[str, list[str]]) -> list[int]:
    """The samples of ``split`` labelled with one of ``classes`` in some head."""
    return [
        i
        for i, s in enumerate(ds.samples)
        if s.split == split and any(s.labels.get(h) in classes[h] for h in ds.heads)
    ]


def stage_groups(stages: list[Stage], y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Validation metrics of each stage's class group (first head): {stage name: metrics or None}."""
    return {s.name: group_metrics(y, probs, classes, s.group) for s in stages}


def group_effects(final: dict, stage_results: list[dict]) -> dict:
    """How the later stages changed each group's top-1: the group after its stage vs at the end."""
    effect = {}
    for res in stage_results:
        for g, m in res["groups"].items():
            if m and final.get(g):
                before, after = m["top1"], final[g]["top1"]
                effect[g] = {
                    "after_stage": res["stage"],
                    "top1_before": before,
                    "top1_after": after,
                    "change": after - before,
                }
    return effect


def staged_groups(
    stages: list[Stage], y: np.ndarray, probs: np.ndarray, classes: list[str], stage_results: list
) -> dict:
    """The report of a staged run at its end: each group's validation metrics (``final``), what each stage
    scored after it (``stages``) and how the later stages changed each group (``effect``)."""
    final = stage_groups(stages, y, probs, classes)
    return {"final": final, "stages": stage_results, "effect": group_effects(final, stage_results)}
