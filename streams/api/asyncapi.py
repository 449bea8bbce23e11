"""The AsyncAPI 3.0 document of the segmenter's Kafka topics, built from pydantic models.

``python -m streams.api.asyncapi > docs/asyncapi.yaml`` regenerates the shipped document.
Input events come from :mod:`streams.events.models`; the migration value is
:class:`MigrationData`, which mirrors ``streams.pipeline.migrations.Migration.data()``.
:func:`validate` checks a value against a schema of the document (the subset of JSON Schema
the document uses), for tests and for subscribers without a JSON Schema library.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from streams import __version__
from streams.events.models import EVENT_ADAPTER
from streams.pipeline.migrations import ENTERED, EXITED, TriggerKind

REF = "#/components/schemas/{model}"


class TriggerData(BaseModel):
    """What caused the migration."""

    model_config = ConfigDict(extra="forbid")

    kind: TriggerKind = Field(description="event, time, rule_change, merge, erasure or consent")
    message_id: str | None = Field(description="messageId of the triggering event, if any")
    event: str | None = Field(description="name of the triggering event, if any")


class ReasonData(BaseModel):
    """Why the membership changed: the deciding clause and the values it read."""

    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description="the clause that decided, in words")
    values: dict[str, Any] = Field(description="the values the clause read")


class MigrationData(BaseModel):
    """The value of a message on ``segmenter.migrations`` (CloudEvents ``data``)."""

    model_config = ConfigDict(extra="forbid", title="MigrationData")

    customer_id: str = Field(min_length=1, description="the customer (also the Kafka key)")
    segment: str = Field(min_length=1, description="the segment entered or exited")
    direction: Literal["entered", "exited"]
    family: str | None = Field(description="the family of mutually exclusive segments, if any")
    from_segment: str | None = Field(description="in a family move, the segment left")
    to_segment: str | None = Field(description="in a family move, the segment entered")
    trigger: TriggerData
    reason: ReasonData
    rule_version: str = Field(description="version of the rule pack that decided")
    holdout: bool = Field(description="true when the customer is in the segment's holdout group")
    sequence: int = Field(ge=1, description="+1 per migration of this customer: spot gaps")


class MigrationHeaders(BaseModel):
    """Kafka headers of a migration message: CloudEvents 1.0 binary mode."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, title="MigrationHeaders")

    ce_specversion: Literal["1.0"]
    ce_id: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="deterministic: the same migration, the same id"
    )
    ce_type: Literal["segmenter.segment.entered", "segmenter.segment.exited"]
    ce_source: str = Field(min_length=1, description="SEGMENTER_CE_SOURCE")
    ce_subject: str = Field(min_length=1, description="the customer id")
    ce_time: datetime = Field(description="when membership changed (event time or timer due time)")
    content_type: Literal["application/json"] = Field(alias="content-type")


class DeadLetterHeaders(BaseModel):
    """Kafka headers the segmenter adds to a dead letter (the original headers are kept too)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, title="DeadLetterHeaders")

    error_kind: str = Field(alias="segmenter.error.kind", description="class of the problem")
    error_message: str = Field(alias="segmenter.error.message", description="what was wrong")
    source_topic: str = Field(alias="segmenter.source.topic")
    source_partition: str = Field(alias="segmenter.source.partition", pattern=r"^\d+$")
    source_offset: str = Field(alias="segmenter.source.offset", pattern=r"^\d+$")


class DeliveryDeadLetterHeaders(BaseModel):
    """Headers ``segmenter deliver`` adds to a migration it gave up on (the CloudEvents headers
    of the migration are kept too)."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, title="DeliveryDeadLetterHeaders"
    )

    destination: str = Field(alias="segmenter.destination", description="the destination's id")
    error_message: str = Field(
        alias="segmenter.error.message", description="the last error and why delivery stopped"
    )
    attempts: str = Field(alias="segmenter.delivery.attempts", pattern=r"^\d+$")
    source_topic: str = Field(alias="segmenter.source.topic")
    source_partition: str = Field(alias="segmenter.source.partition", pattern=r"^\d+$")
    source_offset: str = Field(alias="segmenter.source.offset", pattern=r"^\d+$")
    dead_lettered_at: str = Field(
        alias="segmenter.dead_lettered_at", description="epoch seconds, e.g. 1764842400.123"
    )


def _schemas() -> dict[str, Any]:
    """Every component schema, with AsyncAPI-style (string) discriminators."""
    found: dict[str, Any] = {}
    event = EVENT_ADAPTER.json_schema(ref_template=REF, by_alias=True)
    found.update(event.pop("$defs", {}))
    event["discriminator"] = event.get("discriminator", {}).get("propertyName", "type")
    event["title"] = "SegmentEvent"
    event["description"] = "A Segment Spec event, or the segmenter's erase or consent event."
    found["SegmentEvent"] = event
    for model in (MigrationData, MigrationHeaders, DeadLetterHeaders, DeliveryDeadLetterHeaders):
        schema = model.model_json_schema(ref_template=REF, by_alias=True)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return dict(sorted(found.items()))


def _kafka_key(description: str) -> dict[str, Any]:
    """The Kafka binding of a message whose key is ``description``."""
    return {"kafka": {"key": {"type": "string", "description": description}}}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document (topic names are the defaults)."""
    return {
        "asyncapi": "3.0.0",
        "info": _info(),
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": _channels(),
        "operations": _operations(),
        "components": {"messages": _messages(), "schemas": _schemas()},
    }


def _info() -> dict[str, Any]:
    """The document's title, version and description."""
    return {
        "title": "Segmenter topics",
        "version": __version__,
        "description": (
            "Input events, segment migrations and dead letters of the real-time customer "
            "segmenter. Topic names are the defaults (SEGMENTER_INPUT_TOPIC, "
            "SEGMENTER_MIGRATIONS_TOPIC, SEGMENTER_DLQ_TOPIC)."
        ),
    }


def _servers() -> dict[str, Any]:
    """The Kafka server (the default bootstrap address)."""
    return {
        "kafka": {
            "host": "localhost:9092",
            "protocol": "kafka",
            "description": "SEGMENTER_KAFKA_BOOTSTRAP",
        }
    }


def _channels() -> dict[str, Any]:
    """The topics: input events, migrations, dead letters, delivery dead letters."""
    ref = "#/components/messages/"
    return {
        "events": {
            "address": "segmenter.events",
            "description": "Segment Spec JSON events, keyed by customer id.",
            "messages": {"segmentEvent": {"$ref": ref + "SegmentEvent"}},
        },
        "migrations": {
            "address": "segmenter.migrations",
            "description": "CloudEvents 1.0 (Kafka binary mode), keyed by customer id.",
            "messages": {
                "segmentEntered": {"$ref": ref + "SegmentEntered"},
                "segmentExited": {"$ref": ref + "SegmentExited"},
            },
        },
        "deadLetters": {
            "address": "segmenter.events.dlq",
            "description": "Input that could not be used, unchanged, with error headers.",
            "messages": {"deadLetter": {"$ref": ref + "DeadLetter"}},
        },
        "deliveryDeadLetters": {
            "address": "segmenter.deliver.{destination}.dlq",
            "description": (
                "Migrations `segmenter deliver` could not deliver to a destination before its"
                " give-up time (or that it refused for good): the migration unchanged, with"
                " the error. One topic per destination (its `dead_letter_topic`)."
            ),
            "parameters": {"destination": {"description": "the destination file's id"}},
            "messages": {"deliveryDeadLetter": {"$ref": ref + "DeliveryDeadLetter"}},
        },
    }


def _operations() -> dict[str, Any]:
    """Who receives and who sends on each channel."""
    return {
        "receiveEvents": {
            "action": "receive",
            "channel": {"$ref": "#/channels/events"},
            "summary": "The workers consume input events.",
            "messages": [{"$ref": "#/channels/events/messages/segmentEvent"}],
        },
        "sendCollectedEvents": {
            "action": "send",
            "channel": {"$ref": "#/channels/events"},
            "summary": "The HTTP collector of `segmenter api` (Segment's tracking API) produces"
            " each event it accepts, acknowledged by all in-sync replicas before it answers"
            " 200.",
            "description": (
                "It sets `receivedAt`; when the client sent `sentAt`, it keeps the client's"
                " `timestamp` as `originalTimestamp` and sets `timestamp` to `receivedAt -"
                " (sentAt - originalTimestamp)`. It drops `writeKey`, `integrations` and"
                " `_metadata` and keeps `context` (docs/events.md)."
            ),
            "messages": [{"$ref": "#/channels/events/messages/segmentEvent"}],
        },
        "sendMigrations": {
            "action": "send",
            "channel": {"$ref": "#/channels/migrations"},
            "summary": "A customer entered or exited a segment.",
            "messages": [
                {"$ref": "#/channels/migrations/messages/segmentEntered"},
                {"$ref": "#/channels/migrations/messages/segmentExited"},
            ],
        },
        "sendDeadLetters": {
            "action": "send",
            "channel": {"$ref": "#/channels/deadLetters"},
            "summary": "Invalid, unparseable or oversized input.",
            "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
        },
        "sendDeliveryDeadLetters": {
            "action": "send",
            "channel": {"$ref": "#/channels/deliveryDeadLetters"},
            "summary": "A migration a destination did not accept in time.",
            "messages": [{"$ref": "#/channels/deliveryDeadLetters/messages/deliveryDeadLetter"}],
        },
    }


def _messages() -> dict[str, Any]:
    """The message of each channel: payload, headers and Kafka key."""
    return {
        "SegmentEvent": {
            "name": "SegmentEvent",
            "title": "Segment event",
            "contentType": "application/json",
            "payload": {"$ref": "#/components/schemas/SegmentEvent"},
            "bindings": _kafka_key("the customer id (userId, else anonymousId)"),
        },
        "SegmentEntered": _migration(ENTERED, "entered"),
        "SegmentExited": _migration(EXITED, "exited"),
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Dead letter",
            "summary": "The original record's key and value, unchanged.",
            "contentType": "application/octet-stream",
            "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
            "payload": {"description": "the original bytes, unchanged"},
            "bindings": _kafka_key("the original key, unchanged"),
        },
        "DeliveryDeadLetter": {
            "name": "DeliveryDeadLetter",
            "title": "Undelivered migration",
            "summary": "The migration's key, value and CloudEvents headers, unchanged.",
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/DeliveryDeadLetterHeaders"},
            "payload": {"$ref": "#/components/schemas/MigrationData"},
            "bindings": _kafka_key("the customer id"),
        },
    }


def _migration(ce_type: str, direction: str) -> dict[str, Any]:
    """The message of a migration of one direction (entered or exited)."""
    return {
        "name": ce_type,
        "title": f"Customer {direction} a segment",
        "summary": f"ce_type {ce_type}; data.direction {direction}",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/MigrationHeaders"},
        "payload": {"$ref": "#/components/schemas/MigrationData"},
        "correlationId": {"location": "$message.header#/ce_subject"},
        "bindings": _kafka_key("the customer id"),
    }


def render() -> str:
    """The document as YAML (deterministic)."""
    return yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$") -> list[str]:
    """Problems of ``value`` against ``schema`` (``$ref`` resolved in ``root``); [] if valid.

    Covers what the document uses: ``$ref``, ``type``, ``const``, ``enum``, ``properties``,
    ``required``, ``additionalProperties``, ``anyOf``/``oneOf``/``allOf``, ``items``,
    ``minLength``/``maxLength``, ``minimum``, ``pattern`` and ``format: date-time``.
    """
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return validate(value, target, root, at)
    problems: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        wanted = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, k) for k in wanted):
            return [f"{at}: expected {'/'.join(wanted)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        problems.append(f"{at}: expected {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{at}: {value!r} not one of {schema['enum']}")
    for sub in schema.get("allOf", []):
        problems += validate(value, sub, root, at)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            matches = [not validate(value, sub, root, at) for sub in schema[key]]
            if not any(matches) or (key == "oneOf" and sum(matches) > 1):
                problems.append(f"{at}: matches {sum(matches)} of the {key} alternatives")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{at}: does not match {schema['pattern']}")
        if schema.get("format") == "date-time":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                problems.append(f"{at}: not a date-time")
    if _is(value, "number") and "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{at}: below {schema['minimum']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += validate(item, schema["items"], root, f"{at}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{at}: missing {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                problems += validate(item, props[name], root, f"{at}.{name}")
            elif extra is False:
                problems.append(f"{at}: unexpected {name!r}")
            elif isinstance(extra, dict):
                problems += validate(item, extra, root, f"{at}.{name}")
    return problems


if __name__ == "__main__":
    sys.stdout.write(render())
