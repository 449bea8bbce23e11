"""Fuzzed input through the decoder and the worker's input path (``process_batch``).

Every byte string (random bytes, random JSON, event-shaped JSON, mutated valid events, deep
nesting, payloads around and beyond ``max_event_bytes``) must end up either applied as an event
or as exactly one DLQ record naming the decoder's failure kind; never an exception, never a DLQ
record for a good event, and never more than a bounded time per message (a robustness guard
against pathological input, not a benchmark).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.engine import load_rules
from streams.events.decode import MAX_DEPTH, DecodeFailure, decode
from streams.events.models import EVENT_TYPES, BaseEvent
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.kit import memory_store

RULES = load_rules(Path(__file__).resolve().parents[2] / "rules")
MAX_BYTES = Settings().max_event_bytes
PER_RECORD_BOUND_S = 0.5
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID: list[dict[str, Any]] = [
    {
        "type": "track",
        "messageId": "m-track",
        "userId": "u1",
        "timestamp": "2026-01-05T10:00:00Z",
        "event": "Order Completed",
        "properties": {"revenue": 120.5, "order_id": "o1"},
    },
    {
        "type": "identify",
        "messageId": "m-identify",
        "userId": "u1",
        "timestamp": "2026-01-05T10:00:01+02:00",
        "traits": {"email": "a@example.com", "address": {"country": "CA"}, "age": 31},
    },
    {"type": "page", "messageId": "m-page", "anonymousId": "a1", "timestamp": "2026-01-05T10:00Z"},
    {
        "type": "group",
        "messageId": "m-group",
        "userId": "u1",
        "timestamp": "2026-01-05T10:00:02Z",
        "groupId": "g1",
        "traits": {"employee_count": 40, "industry": "retail"},
    },
    {
        "type": "consent",
        "messageId": "m-consent",
        "userId": "u1",
        "timestamp": "2026-01-05T10:00:03Z",
        "categoryPreferences": {"marketing": False},
    },
    {"type": "erase", "messageId": "m-erase", "userId": "u2", "timestamp": "2026-01-05T10:00:04Z"},
]
VALID_BYTES = [orjson.dumps(doc) for doc in VALID]


def make_ctx() -> PipelineContext:
    return PipelineContext.create(Settings(clock="event", idle_settle_s=0), RULES, MemoryStore(), 1)


def dlq_for(ctx: PipelineContext, offset: int) -> list[OutboxEntry]:
    store = memory_store(ctx)
    entries = [OutboxEntry.decode(raw) for raw in store.outboxes.get(0, [])]
    return [
        entry
        for entry in entries
        if entry.topic == ctx.settings.dlq_topic
        and dict(entry.headers)["segmenter.source.offset"] == str(offset).encode()
    ]


async def feed(values: list[bytes | None]) -> float:
    """Each value as its own batch through ``process_batch``; check its fate; return max time."""
    ctx = make_ctx()
    await process_batch(ctx, [])  # warm up
    slowest = 0.0
    for offset, value in enumerate(values):
        expected = decode(value, ctx.settings.max_event_bytes)
        events_before = ctx.metrics.events
        record = Record(ctx.settings.input_topic, 0, offset, b"k", value)
        started = time.perf_counter()
        await process_batch(ctx, [record])
        slowest = max(slowest, time.perf_counter() - started)
        dlq = dlq_for(ctx, offset)
        if isinstance(expected, DecodeFailure):
            assert len(dlq) == 1, (value, expected)
            headers = dict(dlq[0].headers)
            assert headers["segmenter.error.kind"] == expected.kind.encode()
            assert dlq[0].value == value
        else:
            assert dlq == [], (value, [dict(e.headers) for e in dlq])
            assert ctx.metrics.events == events_before + 1
    return slowest


# -- strategies ---------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
timestamps = st.sampled_from(
    [
        "2026-01-05T10:00:00Z",
        "2026-01-05T10:00:00.123+05:30",
        "2026-01-05T10:00:00",
        "soon",
        "",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2026-02-30T10:00:00Z",
    ]
) | st.text(max_size=25)
ids = st.text(min_size=0, max_size=20) | st.integers(-(2**53), 2**53) | st.none()
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*EVENT_TYPES, "bogus"]), "messageId": ids, "timestamp": timestamps},
    optional={
        "userId": ids,
        "anonymousId": ids,
        "event": st.sampled_from(["Order Completed", "Product Viewed", ""]) | st.text(max_size=8),
        "properties": json_values,
        "traits": json_values,
        "groupId": ids,
        "previousId": ids,
        "categoryPreferences": st.dictionaries(st.text(max_size=10), st.booleans()) | json_values,
        "context": json_values,
    },
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(VALID_BYTES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del raw[at:]
        else:
            raw[at:at] = raw[at : at + draw(st.integers(1, 16))]
    return bytes(raw)


def nested_event(depth: int, pad: int, container: str = "{") -> bytes:
    """A valid track event whose ``properties.deep`` nests ``depth`` levels (2 more in all)."""
    opener, closer = (b'{"a":', b"}") if container == "{" else (b"[", b"]")
    inner = opener * depth + b"1" + closer * depth
    doc = dict(VALID[0], properties={"pad": "p" * pad})
    raw = orjson.dumps(doc)
    return raw[:-2] + b',"deep":' + inner + b"}}"


any_input = st.one_of(
    st.binary(max_size=600),
    json_values.map(orjson.dumps),
    event_like.map(orjson.dumps),
    mutated(),
    st.sampled_from(VALID_BYTES),
    st.none(),
)


# -- properties ---------------------------------------------------------------------------------


@FUZZ
@given(st.lists(any_input, min_size=1, max_size=6))
async def test_any_input_is_applied_or_dead_lettered_once_quickly(
    values: list[bytes | None],
) -> None:
    slowest = await feed(values)
    assert slowest < PER_RECORD_BOUND_S, f"{slowest * 1000:.1f} ms for one record"


@FUZZ
@given(st.integers(MAX_DEPTH + 1, 1000), st.sampled_from(["{", "["]), st.integers(1100, 3000))
async def test_deep_nesting_is_refused_as_nesting(depth: int, container: str, pad: int) -> None:
    raw = nested_event(depth, pad, container)
    assert len(raw) <= MAX_BYTES
    failure = decode(raw, MAX_BYTES)
    assert isinstance(failure, DecodeFailure) and failure.kind == "nesting"
    assert await feed([raw]) < PER_RECORD_BOUND_S


@FUZZ
@given(st.integers(1, MAX_DEPTH - 2), st.sampled_from(["{", "["]))
async def test_nesting_within_the_limit_is_accepted(depth: int, container: str) -> None:
    raw = nested_event(depth, 2000, container)
    assert isinstance(decode(raw, MAX_BYTES), BaseEvent)
    await feed([raw])


@FUZZ
@given(st.integers(-200, 20_000), st.sampled_from(["string", "list", "keys"]))
async def test_payloads_around_and_beyond_the_size_limit(excess: int, shape: str) -> None:
    size = MAX_BYTES + excess
    base = orjson.dumps(dict(VALID[0], properties={}))
    room = max(0, size - len(base) - 20)
    if shape == "string":
        props: Any = {"blob": "x" * room}
    elif shape == "list":
        props = {"items": [1] * max(0, room // 2)}
    else:
        props = {f"k{i}": i for i in range(max(0, room // 12))}
    raw = orjson.dumps(dict(VALID[0], properties=props))
    result = decode(raw, MAX_BYTES)
    if len(raw) > MAX_BYTES:
        assert isinstance(result, DecodeFailure) and result.kind == "oversize"
    else:
        assert isinstance(result, BaseEvent)
    assert await feed([raw]) < PER_RECORD_BOUND_S


async def test_far_oversized_and_pathological_payloads_are_refused_quickly() -> None:
    values: list[bytes | None] = [
        b"x" * (MAX_BYTES * 30),
        b"[" * MAX_BYTES,
        b"{" * (MAX_BYTES - 1),
        b'"' + b"\\" * (MAX_BYTES - 10),
        b"1" * (MAX_BYTES - 1),
        orjson.dumps(dict(VALID[0], properties={"blob": "é" * MAX_BYTES})),
    ]
    assert await feed(values) < PER_RECORD_BOUND_S


def test_short_deeply_nested_event_is_refused_as_nesting() -> None:
    raw = nested_event(MAX_DEPTH + 8, 0)
    assert len(raw) < 1024
    failure = decode(raw, MAX_BYTES)
    assert isinstance(failure, DecodeFailure) and failure.kind == "nesting"


def test_very_deep_nesting_is_refused_as_nesting_not_json() -> None:
    raw = nested_event(2000, 0, "[")
    assert len(raw) < MAX_BYTES
    failure = decode(raw, MAX_BYTES)
    assert isinstance(failure, DecodeFailure) and failure.kind == "nesting"
