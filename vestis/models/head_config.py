"""A classification head's configuration (no torch: the checkpoint reader validates it without building it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class HeadConfig:
    type: str = "linear"  # "linear" or "mlp"
    hidden: int = 512
    dropout: float = 0.0

    def __post_init__(self):
        if self.type not in ("linear", "mlp"):
            raise ValueError(f"head type must be 'linear' or 'mlp', got {self.type!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown head options {sorted(unknown)}")
        return cls(**d)
