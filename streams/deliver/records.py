"""Migration records as the deliverer sees them, and which of them a destination takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.deliver.config import (
    DEFAULT_TRIGGERS,
    AudienceFile,
    Destination,
    ProfileSyncFile,
    WebhookFile,
)
from streams.pipeline.migrations import structured


@dataclass(frozen=True, slots=True)
class Record:
    """One message of the migrations topic, with its place in it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(
        cls,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]],
    ) -> Record:
        """A record whose value is decoded once (an undecodable value gives empty ``data``)."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            data = {}
        return cls(
            partition, offset, key, value, tuple(headers), data if isinstance(data, dict) else {}
        )

    @property
    def customer_id(self) -> str:
        """The customer who moved."""
        return str(self.data.get("customer_id") or (self.key or b"").decode())

    @property
    def segment(self) -> str:
        """The segment entered or exited."""
        return str(self.data.get("segment", ""))

    @property
    def direction(self) -> str:
        """``entered`` or ``exited``."""
        return str(self.data.get("direction", ""))

    @property
    def trigger(self) -> str:
        """The trigger kind (``event``, ``time``, ..., ``import``)."""
        trigger = self.data.get("trigger")
        return str(trigger.get("kind", "")) if isinstance(trigger, dict) else ""

    def header(self, name: str) -> str | None:
        """A header's value as text."""
        for key, raw in self.headers:
            if key == name:
                return raw.decode(errors="replace")
        return None

    @property
    def ce_id(self) -> str:
        """The migration's idempotency key."""
        return self.header("ce_id") or f"{self.partition}-{self.offset}"

    def cloudevent(self) -> dict[str, Any]:
        """The migration as a CloudEvent in JSON structured form."""
        return structured(self.headers, self.value)


@dataclass(frozen=True)
class Selector:
    """Which migrations a destination takes: segments (ids, or kinds), directions and trigger
    kinds."""

    segments: frozenset[str] | None
    directions: frozenset[str]
    triggers: frozenset[str] = frozenset(DEFAULT_TRIGGERS)

    @classmethod
    def of(cls, destination: Destination, kinds: Mapping[str, str]) -> Selector:
        """The destination's selection; ``kinds`` maps segment id -> kind (the rule pack)."""
        spec: WebhookFile | ProfileSyncFile | AudienceFile = destination.spec
        chosen: set[str] | None = None
        if spec.segments is not None:
            chosen = set(spec.segments)
        if spec.kinds is not None:
            of_kind = {sid for sid, kind in kinds.items() if kind in spec.kinds}
            chosen = of_kind if chosen is None else chosen | of_kind
        return cls(
            frozenset(chosen) if chosen is not None else None,
            frozenset(spec.directions),
            frozenset(spec.triggers),
        )

    def takes(self, record: Record) -> bool:
        """True when the destination wants ``record``."""
        if record.direction not in self.directions:
            return False
        trigger = record.trigger
        if trigger and trigger not in self.triggers:
            return False
        return self.segments is None or record.segment in self.segments
