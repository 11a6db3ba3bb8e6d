"""Several trained models answering as one: their class probabilities averaged, head by head."""

from __future__ import annotations

import torch
from torch import nn

from vestis.models.preprocess import Preprocess


def check_same_classes(first: dict, other: dict, first_name: str, other_name: str) -> None:
    """Models can be ensembled only when their heads and classes (in order) are the same."""
    if other != first:
        raise ValueError(f"cannot ensemble {first_name} and {other_name}: their heads or classes differ")


class Ensemble(nn.Module):
    """Members must share heads and classes. Each member keeps its own preprocessing: ``forward`` takes one
    batch per member, in member order (what :func:`~vestis.models.preprocess.resolve_transform` makes of
    ``preprocess``), and returns, per head, the log of the members' averaged probabilities, so a softmax of
    the output is that average, as for a single model's logits."""

    def __init__(self, members: list[nn.Module], names: list[str] | None = None):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        names = names or [f"model {k + 1}" for k in range(len(members))]
        for m, name in zip(members[1:], names[1:], strict=True):
            check_same_classes(members[0].classes, m.classes, names[0], name)
        self.members = nn.ModuleList(members)
        self.classes = members[0].classes

    @property
    def preprocess(self) -> tuple[Preprocess, ...]:
        return tuple(m.preprocess for m in self.members)

    def forward(self, xs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        if not isinstance(xs, (tuple, list)) or len(xs) != len(self.members):
            raise ValueError(f"an ensemble of {len(self.members)} takes one input batch per member")
        probs: dict[str, torch.Tensor] = {}
        for member, x in zip(self.members, xs, strict=True):
            for head, z in member(x).items():
                probs[head] = probs.get(head, 0) + z.float().softmax(-1) / len(self.members)
        return {head: p.clamp_min(1e-12).log() for head, p in probs.items()}


def load_models(runs: list[str | None], device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """One run directory (``None``: the bundled model) -> ``load_checkpoint``'s (model, config); several -> an
    :class:`Ensemble` of them with the first run's config."""
    from vestis.models.checkpoint import load_checkpoint

    runs = runs or [None]
    loaded = [load_checkpoint(r, device=device) for r in runs]
    if len(loaded) == 1:
        return loaded[0]
    names = [str(r or "the bundled model") for r in runs]
    return Ensemble([m for m, _ in loaded], names).eval(), loaded[0][1]
