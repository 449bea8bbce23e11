"""Segment-migration events: CloudEvents 1.0 in Kafka binary mode (see CONTRACT.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import orjson

from streams.events.models import iso
from streams.pipeline.outbox import OutboxEntry, text_record

TriggerKind = Literal["event", "time", "rule_change", "merge", "erasure", "consent", "import"]
ENTERED = "segmenter.segment.entered"
EXITED = "segmenter.segment.exited"


@dataclass(frozen=True, slots=True)
class Trigger:
    """What caused a migration."""

    kind: TriggerKind
    message_id: str | None = None
    event: str | None = None


def ce_id(customer_id: str, sequence: int, segment: str, direction: str) -> str:
    """The deterministic idempotency key of one migration."""
    digest = hashlib.sha256(f"{customer_id}\x1f{sequence}\x1f{segment}\x1f{direction}".encode())
    return digest.hexdigest()[:32]


class Migration(NamedTuple):
    """One customer entering or leaving one segment (a named tuple: one is made for every
    migration, in 0.9 us against 1.8 us for a frozen dataclass of these 13 fields)."""

    customer_id: str
    segment: str
    direction: Literal["entered", "exited"]
    family: str | None
    from_segment: str | None
    to_segment: str | None
    trigger: Trigger
    reason_rule: str
    reason_values: dict[str, Any]
    rule_version: str
    sequence: int
    time: float
    holdout: bool = False

    def data(self) -> dict[str, Any]:
        """The event value (``data``), exactly the contract's shape."""
        return {
            "customer_id": self.customer_id,
            "segment": self.segment,
            "direction": self.direction,
            "family": self.family,
            "from_segment": self.from_segment,
            "to_segment": self.to_segment,
            "trigger": {
                "kind": self.trigger.kind,
                "message_id": self.trigger.message_id,
                "event": self.trigger.event,
            },
            "reason": {"rule": self.reason_rule, "values": self.reason_values},
            "rule_version": self.rule_version,
            "holdout": self.holdout,
            "sequence": self.sequence,
        }

    def attributes(self, source: str) -> dict[str, str]:
        """The CloudEvents context attributes."""
        return {
            "specversion": "1.0",
            "id": ce_id(self.customer_id, self.sequence, self.segment, self.direction),
            "type": ENTERED if self.direction == "entered" else EXITED,
            "source": source,
            "subject": self.customer_id,
            "time": iso(self.time),
        }

    def to_outbox(self, topic: str, source: str) -> OutboxEntry:
        """The Kafka message: ``ce_*`` headers, key = customer id, JSON value."""
        return OutboxEntry.decode(self.outbox_record(topic, source))

    def outbox_record(self, topic: str, source: str) -> bytes:
        """:meth:`to_outbox` as the outbox keeps it (``OutboxEntry.encode``), built directly from
        text: every part of a migration is text."""
        headers = [(f"ce_{name}", value) for name, value in self.attributes(source).items()]
        headers.append(("content-type", "application/json"))
        value = orjson.dumps(self.data(), default=_jsonable).decode()
        return text_record(topic, self.customer_id, value, headers)


def _jsonable(value: Any) -> Any:
    """Reason values that orjson cannot encode natively (sets, tuples of odd things)."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def structured(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], value: bytes
) -> dict[str, Any]:
    """A binary-mode Kafka message as a CloudEvent in JSON structured form."""
    event: dict[str, Any] = {}
    for name, raw in headers:
        if name.startswith("ce_"):
            event[name[3:]] = raw.decode()
    event["datacontenttype"] = "application/json"
    event["data"] = orjson.loads(value)
    return event
