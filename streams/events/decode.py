"""Raw Kafka bytes to events, with failures as data (never as exceptions).

``decode`` returns either an event or a :class:`DecodeFailure` that says what was expected; the
pipeline sends failures to the DLQ unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from streams.events.models import EVENT_ADAPTER, EVENT_TYPES, BaseEvent

FailureKind = Literal["oversize", "json", "schema", "nesting", "control"]
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a message could not become an event."""

    kind: FailureKind
    message: str


def _depth_ok(raw: bytes, limit: int) -> bool:
    """True when JSON nesting never goes deeper than ``limit`` (strings are skipped)."""
    depth = 0
    in_string = False
    escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return True


def _schema_message(error: ValidationError) -> str:
    """One line naming each bad field and what was expected there."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _shape_failure(raw: bytes, max_bytes: int) -> DecodeFailure | None:
    """Why ``raw`` is refused before parsing (too large, nested too deep), or None."""
    if len(raw) > max_bytes:
        return DecodeFailure("oversize", f"expected at most {max_bytes} bytes, found {len(raw)}")
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and not _depth_ok(raw, MAX_DEPTH):
        return DecodeFailure("nesting", f"expected JSON nested at most {MAX_DEPTH} levels deep")
    return None


def _validated(data: object) -> BaseEvent | DecodeFailure:
    """A parsed JSON value as an event, or why not."""
    if not isinstance(data, dict):
        return DecodeFailure("json", f"expected a JSON object, found {type(data).__name__}")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        return DecodeFailure(
            "schema", f"type: expected one of {', '.join(EVENT_TYPES)}, found {kind!r}"
        )
    try:
        return EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        return DecodeFailure("schema", _schema_message(exc))


def decode(raw: bytes | None, max_bytes: int) -> BaseEvent | DecodeFailure:
    """Decode one message value into an event, or say why not."""
    if raw is None:
        return DecodeFailure("json", "expected a JSON object, found an empty message")
    refused = _shape_failure(raw, max_bytes)
    if refused is not None:
        return refused
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return DecodeFailure("json", f"expected valid JSON: {exc}")
    return _validated(data)


def check_encoded(data: dict[str, Any], raw: bytes, max_bytes: int) -> BaseEvent | DecodeFailure:
    """What :func:`decode` would say of ``raw``, the JSON encoding of ``data``, without parsing
    it again (producers that built ``data`` themselves check what they are about to send)."""
    refused = _shape_failure(raw, max_bytes)
    if refused is not None:
        return refused
    return _validated(data)
