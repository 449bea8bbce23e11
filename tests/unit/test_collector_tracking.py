"""Segment's tracking API without the network: bodies to records (streams/api/tracking.py)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.api.collector import basic_user
from streams.api.tracking import (
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    BodyError,
    collect,
    parse_body,
)
from streams.settings import Settings

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)
LIMIT = 32 * 1024
ZONES = (330, -480, 840)
"""UTC offsets (minutes) of the clients in the property test."""


def reference_corrected(received: datetime, sent: str, original: str) -> str:
    """Segment's rule, computed with pandas: receivedAt - (sentAt - timestamp), to the ms."""
    moment = pd.Timestamp(received) - (pd.Timestamp(sent) - pd.Timestamp(original))
    return moment.tz_convert("UTC").floor("ms").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def values(doc: dict[str, object], route: str = "batch") -> list[dict[str, object]]:
    found = collect(doc, route, RECEIVED, LIMIT)
    assert not found.rejected, found.rejected
    return [orjson.loads(p.value) for p in found.accepted]


def test_timestamp_is_corrected_by_the_clients_skew() -> None:
    # the client's clock is 2 h 30 min 0.250 s ahead: it stamped and sent by that clock
    doc = {
        "batch": [
            {
                "type": "track",
                "event": "Product Viewed",
                "userId": "u1",
                "messageId": "m1",
                "timestamp": "2026-03-01T16:29:58.000+02:00",
            },
            {
                "type": "page",
                "userId": "u1",
                "messageId": "m2",
                "timestamp": "2026-03-01T14:29:59.5Z",
                "sentAt": "2026-03-01T14:30:01.000001Z",  # its own sentAt wins over the batch's
            },
        ],
        "sentAt": "2026-03-01T14:30:00.250+00:00",
    }
    first, second = values(doc)
    assert first["receivedAt"] == "2026-03-01T12:00:00.654Z"
    assert first["originalTimestamp"] == "2026-03-01T16:29:58.000+02:00"
    assert first["sentAt"] == "2026-03-01T14:30:00.250+00:00"
    assert first["timestamp"] == reference_corrected(
        RECEIVED, "2026-03-01T14:30:00.250+00:00", "2026-03-01T16:29:58.000+02:00"
    )
    assert first["timestamp"] == "2026-03-01T11:59:58.404Z"
    assert second["timestamp"] == reference_corrected(
        RECEIVED, "2026-03-01T14:30:01.000001Z", "2026-03-01T14:29:59.5Z"
    )


@settings(max_examples=200, deadline=None)
@given(
    original=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2040, 1, 1),
        timezones=st.sampled_from([UTC, *(timezone(timedelta(minutes=m)) for m in ZONES)]),
    ),
    lag_us=st.integers(min_value=0, max_value=10**12),
    skew_us=st.integers(min_value=-(10**11), max_value=10**11),
    received_us=st.integers(min_value=0, max_value=10**6),
)
def test_skew_correction_matches_segments_rule(
    original: datetime, lag_us: int, skew_us: int, received_us: int
) -> None:
    sent = original + timedelta(microseconds=lag_us)
    received = RECEIVED + timedelta(microseconds=received_us + skew_us)
    doc = {"userId": "u", "messageId": "m", "timestamp": original.isoformat(), "event": "X"}
    doc["sentAt"] = sent.isoformat()
    [prepared] = collect(doc, "track", received, LIMIT).accepted
    value = orjson.loads(prepared.value)
    expected = reference_corrected(received, sent.isoformat(), original.isoformat())
    assert value["timestamp"] == expected


def test_without_sent_at_the_timestamp_stays_and_a_missing_one_is_the_arrival() -> None:
    doc = {
        "batch": [
            {"type": "track", "event": "A", "userId": "u", "timestamp": "2025-01-01T00:00:00Z"},
            {"type": "track", "event": "B", "userId": "u"},
            {
                "type": "track",
                "event": "C",
                "userId": "u",
                "timestamp": "2025-01-01T00:00:00Z",
                "sentAt": "yesterday",
            },
        ]
    }
    a, b, c = values(doc)
    assert a["timestamp"] == "2025-01-01T00:00:00Z" and "originalTimestamp" not in a
    assert b["timestamp"] == b["receivedAt"] == "2026-03-01T12:00:00.654Z"
    assert c["timestamp"] == "2025-01-01T00:00:00Z" and "originalTimestamp" not in c
    for value in (a, b, c):
        assert uuid.UUID(str(value["messageId"])).version == 4  # filled in, as SDKs do


def test_a_batch_keeps_the_good_events_and_says_which_are_bad_and_why() -> None:
    big = {"blob": "x" * LIMIT}
    events: list[object] = [
        {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "a"},
        {"type": "identify", "anonymousId": "anon-7", "messageId": "b", "traits": {"k": 1}},
        {"type": "track", "userId": "u2", "messageId": "c"},  # no event name
        5,
        {"type": "page", "userId": "u3", "messageId": "e", "properties": big},
        {"type": "alias", "userId": "u4", "previousId": "anon-7", "messageId": "f"},
        {"type": "launch", "userId": "u5", "messageId": "g"},
        {"type": "group", "userId": "u6", "groupId": "acme", "messageId": "h"},
    ]
    found = collect({"batch": events}, "batch", RECEIVED, LIMIT)

    def usable(e: object) -> bool:
        return (
            isinstance(e, dict)
            and e["type"] in {"track", "identify", "alias", "group"}
            and (e["type"] != "track" or "event" in e)
        )

    expected_keys = [
        str(e.get("userId") or e.get("anonymousId")).encode()
        for e in events
        if isinstance(e, dict) and usable(e)
    ]
    assert [p.key for p in found.accepted] == expected_keys
    assert [r.index for r in found.rejected] == [2, 3, 4, 6]
    assert [r.kind for r in found.rejected] == ["schema", "json", "oversize", "schema"]
    assert [r.message_id for r in found.rejected] == ["c", None, "e", "g"]
    assert "event" in found.rejected[0].message


def test_dropped_fields_and_batch_context() -> None:
    doc = {
        "batch": [
            {
                "type": "track",
                "event": "X",
                "userId": "u",
                "writeKey": "secret",
                "integrations": {"All": False},
                "_metadata": {"nodeVersion": "20"},
                "context": {"locale": "fr-FR", "library": {"name": "analytics-node"}},
            }
        ],
        "context": {"locale": "en-US", "ip": "203.0.113.9"},
        "integrations": {"All": True},
        "writeKey": "secret",
    }
    [value] = values(doc)
    assert not {"writeKey", "integrations", "_metadata"} & set(value)
    assert value["context"] == {
        "locale": "fr-FR",
        "ip": "203.0.113.9",
        "library": {"name": "analytics-node"},
    }


def test_single_routes_set_the_type() -> None:
    body = {"userId": "u", "event": "Signed Up", "type": "identify", "messageId": "m"}
    [value] = values(body, "track")
    assert value["type"] == "track" and value["event"] == "Signed Up"
    found = collect({"userId": "u", "messageId": "m"}, "alias", RECEIVED, LIMIT)
    assert [r.message for r in found.rejected] == ["alias.previousId: Field required"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"x": "' + b"y" * MAX_BODY_BYTES + b'"}', "payload_too_large"),
    ],
)
def test_bodies_that_are_refused_whole(body: bytes, code: str) -> None:
    with pytest.raises(BodyError) as refused:
        parse_body(body)
    assert refused.value.code == code


def test_batches_that_are_refused_whole() -> None:
    with pytest.raises(BodyError, match="'batch'"):
        collect({"batch": {"type": "track"}}, "batch", RECEIVED, LIMIT)
    many = [{"type": "track", "event": "X", "userId": "u"}] * (MAX_BATCH_EVENTS + 1)
    with pytest.raises(BodyError, match=str(MAX_BATCH_EVENTS)):
        collect({"batch": many}, "batch", RECEIVED, LIMIT)
    assert len(collect({"batch": many[1:]}, "batch", RECEIVED, LIMIT).accepted) == MAX_BATCH_EVENTS


def test_basic_user_and_settings_lists() -> None:
    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert basic_user(basic("wk_1:")) == "wk_1"
    assert basic_user(basic("wk_1")) == "wk_1"  # no colon: still the user name
    assert basic_user(basic("wk_1:ignored")) == "wk_1"
    assert basic_user("basic " + base64.b64encode(b"wk:").decode()) == "wk"
    for header in (None, "", "Bearer wk_1", "Basic !!!", basic(":password")):
        assert basic_user(header) is None
    s = Settings(write_keys=" a, b ,,", collector_origins="https://shop.example/, *")
    assert s.write_key_list() == ("a", "b")
    assert s.collector_origin_set == {"https://shop.example", "*"}
    assert Settings().write_key_list() == ()
