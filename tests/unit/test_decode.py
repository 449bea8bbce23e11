"""Decoding raw input: events, or failures that say what was expected (never exceptions)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events.decode import MAX_DEPTH, DecodeFailure, decode
from streams.events.models import (
    ConsentEvent,
    GroupEvent,
    IdentifyEvent,
    PageEvent,
    TrackEvent,
    event_name,
)

LIMIT = 32 * 1024


def doc(**fields: object) -> bytes:
    base: dict[str, object] = {
        "type": "track",
        "messageId": "m1",
        "timestamp": "2026-02-03T04:05:06.789+02:00",
        "userId": "u1",
        "event": "Order Completed",
        "properties": {"revenue": 12.5},
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_a_track_event_decodes_with_its_time_and_customer() -> None:
    event = decode(doc(), LIMIT)
    assert isinstance(event, TrackEvent)
    assert event.customer_id == "u1"
    assert event.ts == 1770084306.789
    assert event_name(event) == "Order Completed"


def test_anonymous_events_use_the_anonymous_id() -> None:
    event = decode(doc(userId=None, anonymousId="anon-7"), LIMIT)
    assert not isinstance(event, DecodeFailure)
    assert event.customer_id == "anon-7"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (doc(type="identify", traits={"age": 30}), IdentifyEvent),
        (doc(type="page", name="Home"), PageEvent),
        (doc(type="group", groupId="acme", traits={"employee_count": 5}), GroupEvent),
        (doc(type="consent", categoryPreferences={"marketing": False}), ConsentEvent),
    ],
)
def test_every_type_of_the_contract_decodes(raw: bytes, expected: type) -> None:
    assert isinstance(decode(raw, LIMIT), expected)


def test_segment_extras_are_ignored() -> None:
    raw = doc(context={"ip": "1.2.3.4"}, integrations={"All": True}, sentAt="2026-01-01T00:00:00Z")
    assert isinstance(decode(raw, LIMIT), TrackEvent)


@pytest.mark.parametrize(
    ("raw", "kind", "says"),
    [
        (b"", "json", "valid JSON"),
        (None, "json", "empty message"),
        (b"[]", "json", "JSON object"),
        (doc(type="bogus"), "schema", "type: expected one of"),
        (doc(messageId=None), "schema", "messageId"),
        (doc(userId=None), "schema", "expected 'userId' or 'anonymousId'"),
        (doc(timestamp="2026-02-03T04:05:06"), "schema", "timestamp"),
        (doc(timestamp="soon"), "schema", "timestamp"),
        (doc(event=None), "schema", "event"),
        (doc(properties=[1, 2]), "schema", "properties"),
        (doc(type="alias"), "schema", "previousId"),
    ],
)
def test_bad_input_is_a_failure_that_says_what_was_expected(
    raw: bytes | None, kind: str, says: str
) -> None:
    failure = decode(raw, LIMIT)
    assert isinstance(failure, DecodeFailure)
    assert failure.kind == kind
    assert says in failure.message


def test_oversize_input_is_refused_before_parsing() -> None:
    failure = decode(doc(properties={"blob": "x" * LIMIT}), LIMIT)
    assert isinstance(failure, DecodeFailure) and failure.kind == "oversize"
    assert str(LIMIT) in failure.message


def test_deep_nesting_is_refused() -> None:
    nested: object = 1
    for _ in range(MAX_DEPTH + 5):
        nested = {"a": nested}
    failure = decode(doc(properties={"deep": nested, "pad": "y" * 2000}), LIMIT)
    assert isinstance(failure, DecodeFailure) and failure.kind == "nesting"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_become_an_event_or_a_failure(raw: bytes) -> None:
    result = decode(raw, LIMIT)
    assert isinstance(result, DecodeFailure) or hasattr(result, "messageId")
