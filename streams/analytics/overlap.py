"""Overlap of segments: members in both and the Jaccard index, exact, from the member sets.

Redis computes each pair with ``SINTERCARD``, which walks the smaller set: the full matrix of
``k`` segments costs ``k (k - 1) / 2`` calls and, at worst, about ``(k - 1)`` times the members
of all segments in set lookups. Off the hot path; the API computes it on request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streams.store.base import Store


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two segments' common members."""

    a: str
    b: str
    a_size: int
    b_size: int
    both: int

    @property
    def jaccard(self) -> float:
        """``|A and B| / |A or B|`` (0 when both are empty)."""
        union = self.a_size + self.b_size - self.both
        return self.both / union if union else 0.0

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the API."""
        return {
            "a": self.a,
            "b": self.b,
            "a_size": self.a_size,
            "b_size": self.b_size,
            "both": self.both,
            "jaccard": self.jaccard,
        }


async def pair(store: Store, sizes: Mapping[str, int], a: str, b: str) -> Overlap:
    """The overlap of two segments."""
    both = await store.common_members(a, b) if sizes.get(a) and sizes.get(b) else 0
    return Overlap(a, b, sizes.get(a, 0), sizes.get(b, 0), both)


async def matrix(store: Store, sizes: Mapping[str, int], ids: Sequence[str]) -> list[Overlap]:
    """Every pair of ``ids`` (in that order), once."""
    return [await pair(store, sizes, a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]


def most_similar(pairs: Sequence[Overlap], segment: str) -> tuple[str, Overlap] | None:
    """The other segment with the largest Jaccard index (ties by id), with the pair."""
    best: tuple[str, Overlap] | None = None
    for p in pairs:
        if segment not in (p.a, p.b) or p.both == 0:
            continue
        other = p.b if p.a == segment else p.a
        if best is None or (p.jaccard, best[0]) > (best[1].jaccard, other):
            best = (other, p)
    return best
