"""Model soups (Wortsman et al., 2022): the weights of several models fine-tuned from the same pretrained
start, averaged into one model that costs what one member costs to run.

Members must be the same network: same backbone, heads and classes, head architecture and preprocessing, and
each must store its whole network (fine-tuned runs). Floating-point tensors are averaged (uniformly, or with
``weights``); integer buffers (BatchNorm's batch counters) are taken from the first member. BatchNorm running
statistics are averaged like the weights; with the default recipe (statistics frozen at their pretrained
values) they are equal in every member anyway. Whether the average is better than its members is an empirical
question: measure it on validation (``vestis soup`` does, unless told not to)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from vestis.models.checkpoint import load_checkpoint, save_checkpoint
from vestis.models.run_config import (
    CONFIG,
    atomic_write_text,
    lineage,
    model_name,
    resolve_data_load,
    resolve_model_dir,
)

_SAME = ("backbone", "heads", "head", "head_types", "colour_stats", "preprocess")


def average_models(runs: list, weights: list[float] | None = None):
    """(model, first member's config) with the members' weights averaged; ValueError naming the first member
    that differs from the first one, or that does not store its backbone. One run is its own (greedy) soup."""
    model, configs = _average(runs, weights)
    return model, configs[0]


def _average(runs: list, weights: list[float] | None):
    """:func:`average_models`, with every member's config."""
    if not runs:
        raise ValueError("a soup needs at least one run")
    if weights is not None and (len(weights) != len(runs) or min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"weights: one value >= 0 per run ({len(runs)}), not all zero; got {weights}")
    w = [1.0] * len(runs) if weights is None else [float(x) for x in weights]
    w = [x / sum(w) for x in w]
    members = [load_checkpoint(r) for r in runs]  # None or 'default': the bundled model
    first_model, first = members[0]
    for run, (_, config) in zip(runs, members, strict=True):
        if not config.get("includes_backbone"):
            raise ValueError(
                f"{model_name(run)}: stores only its heads (fast mode); soups average fine-tuned networks"
            )
        differs = [k for k in _SAME if config.get(k) != first.get(k)]
        if differs:
            raise ValueError(
                f"{model_name(run)}: differs from {model_name(runs[0])} in {', '.join(differs)}; "
                "soups average the same network fine-tuned several times"
            )
    states = [m.state_dict() for m, _ in members]
    soup = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            soup[key] = sum(wi * s[key].double() for wi, s in zip(w, states, strict=True)).to(value.dtype)
        else:
            soup[key] = value
    first_model.load_state_dict(soup)
    return first_model, [config for _, config in members]


def save_soup(
    runs: list, out: str | Path, weights: list[float] | None = None, dtype=None, record: dict | None = None
) -> Path:
    """Average ``runs`` (:func:`average_models`) into the run directory ``out``; its config records the members
    and weights (``train_config.soup``, with ``record`` added: how they were chosen) and the first member's
    data, so ``vestis evaluate OUT`` re-splits the same way. Validation metrics are left empty for the caller
    to measure."""
    model, configs = _average(runs, weights)
    first = configs[0]
    data = copy.deepcopy(first.get("data") or {})
    if data.get("load"):  # stored relative to the first member's directory: made usable from here
        data.pop("paths_relative_to", None)
        try:
            data["load"] = resolve_data_load(resolve_model_dir(runs[0]), first)
        except FileNotFoundError:  # not here: absolute, as the member's directory locates it
            base = resolve_model_dir(runs[0])
            data["load"] = {
                k: os.path.abspath(os.path.join(base, v)) if k in ("source", "images") and v else v
                for k, v in data["load"].items()
            }
        data["source"] = data["load"]["source"]
    members = [str(resolve_model_dir(r)) for r in runs]
    train_config = copy.deepcopy(first.get("train_config") or {})
    train_config["soup"] = {
        "members": members,
        "weights": weights or [1.0] * len(runs),
        **(record or {}),
        "lineage": [lineage(r, c) for r, c in zip(runs, configs, strict=True)],
    }
    return save_checkpoint(
        out, model, include_backbone=True, data=data, train_config=train_config, dtype=dtype
    )


def set_metrics(run_dir: str | Path, metrics: dict) -> None:
    """Replace ``metrics`` in a run's config.json (atomically; nothing else changes)."""
    path = Path(run_dir) / CONFIG
    config = json.loads(path.read_text())
    config["metrics"] = metrics
    atomic_write_text(path, json.dumps(config, indent=2))
