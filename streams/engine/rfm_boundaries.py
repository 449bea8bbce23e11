"""RFM quintile boundaries: four ascending cut points per score.

A module of its own so that :mod:`streams.engine.facts` (whose ``Facts.rfm_boundaries`` returns
them) and :mod:`streams.engine.rfm` (which scores with them) do not import each other.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Cuts = tuple[float, float, float, float]


def _check_cuts(name: str, cuts: Sequence[float]) -> Cuts:
    if len(cuts) != 4:
        raise ValueError(f"{name}: expected 4 cut points, got {len(cuts)}")
    values = tuple(float(c) for c in cuts)
    if not all(math.isfinite(c) for c in values):
        raise ValueError(f"{name}: cut points must be finite numbers")
    if any(a > b for a, b in itertools.pairwise(values)):
        raise ValueError(f"{name}: cut points must be in ascending order, got {list(values)}")
    return values[0], values[1], values[2], values[3]


@dataclass(frozen=True, slots=True)
class RfmBoundaries:
    """Four ascending cut points for each score (equal neighbours allowed, e.g. ties in live
    quintiles): ``recency_days`` in days since the last order, ``frequency`` in orders,
    ``monetary`` in revenue."""

    recency_days: Cuts
    frequency: Cuts
    monetary: Cuts

    def __post_init__(self) -> None:
        for name in ("recency_days", "frequency", "monetary"):
            object.__setattr__(self, name, _check_cuts(name, getattr(self, name)))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON form: ``{"recency_days": [...], "frequency": [...], "monetary": [...]}``."""
        return {
            "recency_days": list(self.recency_days),
            "frequency": list(self.frequency),
            "monetary": list(self.monetary),
        }

    def digest(self) -> str:
        """A short, stable fingerprint of the cut points."""
        text = ";".join(",".join(repr(float(c)) for c in cuts) for cuts in self.to_dict().values())
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RfmBoundaries:
        """The inverse of ``to_dict`` (``ValueError`` on a malformed mapping)."""
        return cls(
            recency_days=tuple(data["recency_days"]),
            frequency=tuple(data["frequency"]),
            monetary=tuple(data["monetary"]),
        )
