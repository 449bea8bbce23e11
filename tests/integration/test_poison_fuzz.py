"""Hostile and careless input against a real worker and its HTTP API (issue: poison input).

One worker (processing clock) on the real broker and Redis for the module. Hypothesis draws
mixes of normal orders, orders with odd revenues, and inputs that must be refused (each input
the issue found stopping a partition, plus random bytes, JSON and mutated events); the property:

* the worker never exits;
* every refused input is on the DLQ exactly once, with the kind plain Python expects;
* every other event is applied: each customer's orders and revenue, read through the API, equal
  a plain-Python fold of the events (a revenue that is not a finite number within 1e15 counts as
  absent, as docs/events.md says);
* no query string or rule draft makes the API answer 5xx.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import yarl
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.pipeline.control import control_record
from streams.stack.children import Child
from streams.stack.embedded import free_port
from tests import events
from tests.integration.harness import Deployment, consume_until, produce, write_rules

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
"""Each example is a round trip through the real worker (about a second): 10 of each test."""
MAX_AMOUNT = 1e15


class Stack:
    """The module's worker, its API address and what was sent so far."""

    def __init__(self, deployment: Deployment, worker: Child, url: str) -> None:
        self.deployment = deployment
        self.worker = worker
        self.url = url
        self.refused: dict[bytes, str] = {}
        """Value of every input that must reach the DLQ -> its expected error kind."""
        self.orders: dict[str, list[object]] = {}
        """Customer -> the revenue values of its applied orders."""


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    rules = write_rules(tmp_path_factory.mktemp("rules"))
    deployment = Deployment(kafka_bootstrap, redis_url, prefix, rules, partitions=2)
    asyncio.run(deployment.create_topics())
    port = free_port()
    worker = deployment.worker(clock="processing", http_port=port, control_secret="the-real-one")
    url = f"http://127.0.0.1:{port}"
    asyncio.run(serving(worker, url))
    yield Stack(deployment, worker, url)
    assert worker.alive(), worker.log_tail()
    assert worker.stop() == 0, worker.log_tail()


async def serving(worker: Child, url: str, timeout: float = 90.0) -> None:
    """Wait until the worker's HTTP API answers."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert worker.alive(), worker.log_tail()
            try:
                async with session.get(f"{url}/healthz"):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"the worker's API did not come up\n{worker.log_tail()}")


# -- inputs -------------------------------------------------------------------------------------

NOW = datetime.now(UTC)


def order(cid: str, revenue: object, when: datetime | str | None = None) -> dict[str, Any]:
    return events.order(uuid.uuid4().hex, cid, revenue, when or NOW - timedelta(minutes=5))


def counts(revenue: object) -> float | None:
    """Plain Python: the revenue an order adds (None: absent), as docs/events.md documents."""
    if isinstance(revenue, bool) or not isinstance(revenue, int | float | str):
        return None
    try:
        number = float(revenue)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_AMOUNT else None


def issue_inputs(cid: str) -> list[tuple[bytes, str | None, tuple[tuple[str, bytes], ...]]]:
    """What the issue found stopping a partition: (value, DLQ kind or None if applied, headers)."""
    far = NOW + timedelta(days=2)
    unsigned = (("segmenter.control", b"watermark"),)
    forged = control_record(NOW.timestamp(), "not-the-secret")
    items: list[tuple[bytes, str | None, tuple[tuple[str, bytes], ...]]] = [
        (orjson.dumps(order(cid, 1, "9999-12-31T23:59:59-14:00")), "schema", ()),
        (orjson.dumps(order(cid, 1, "0001-01-01T00:00:00+14:00")), "schema", ()),
        (orjson.dumps(order(cid, 1, far)), "schema", ()),
        (b'{"until": "inf"}', "control", unsigned),
        (b'{"until": 1e15}', "control", unsigned),
        (forged[0], "control", forged[1]),
        (b'{"type": "track", "userId": "x", "big": ' + b"9" * 5000 + b"}", "json", ()),
        (b"[" * 40 + b"]" * 40, "nesting", ()),
    ]
    for revenue in ("NaN", "Infinity", "1e400", 1e308, 1e308, -1e308, "12", 3.5):
        items.append((orjson.dumps(order(cid, revenue)), None, ()))
    return items


revenues = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.sampled_from(["NaN", "-Infinity", "1e400", "7.25", " 42 ", "x", ""]),
    st.booleans(),
    st.none(),
)
garbage = st.one_of(
    st.binary(min_size=1, max_size=60).filter(lambda b: not b.lstrip().startswith(b"{")),
    st.builds(lambda n: b'{"type": "track"' + b', "a": 1' * n + b"}", st.integers(0, 3)),
    st.builds(
        lambda t: orjson.dumps({"type": t, "messageId": "m", "userId": "u"}), st.text(max_size=8)
    ),
)


async def features(session: aiohttp.ClientSession, url: str, cid: str) -> dict[str, Any] | None:
    async with session.get(f"{url}/v1/customers/{cid}") as response:
        assert response.status in (200, 404), (cid, response.status, await response.text())
        return (await response.json())["features"] if response.status == 200 else None


async def settled(stack: Stack, timeout: float = 90.0) -> None:
    """Wait until every refused input is on the DLQ and every customer's orders and revenue
    equal the plain-Python fold; fail with what differs."""
    deadline = time.monotonic() + timeout
    want = {
        cid: (len(values), sum(v for v in map(counts, values) if v is not None))
        for cid, values in stack.orders.items()
    }
    got: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert stack.worker.alive(), stack.worker.log_tail()
            got = {}
            for cid in want:
                found = await features(session, stack.url, cid)
                got[cid] = None if found is None else (found["orders"], found["revenue"])
            if all(
                got[c] is not None
                and got[c][0] == n
                and math.isclose(got[c][1], r, rel_tol=1e-9, abs_tol=1e-4)
                for c, (n, r) in want.items()
            ):
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"not applied: want {want}, got {got}\n{stack.worker.log_tail()}")


async def send_mix(stack: Stack, mix: list[tuple[str, object]], junk: list[bytes]) -> None:
    cid = f"c{uuid.uuid4().hex[:6]}"
    records: list[tuple[bytes, tuple[tuple[str, bytes], ...]]] = []
    for value, kind, headers in issue_inputs(cid):
        records.append((value, headers))
        if kind is None:
            stack.orders.setdefault(cid, []).append(orjson.loads(value)["properties"]["revenue"])
        else:
            stack.refused[value] = kind
    for who, revenue in mix:
        doc = order(f"{cid}-{who}", revenue)
        records.append((orjson.dumps(doc), ()))
        stack.orders.setdefault(f"{cid}-{who}", []).append(revenue)
    for value in junk:
        records.append((value, ()))
        stack.refused.setdefault(value, "any")
    producer_items = [(None, value) for value, headers in records if not headers]
    await produce(stack.deployment.kafka, stack.deployment.input, producer_items, partition=0)
    producer = AIOKafkaProducer(bootstrap_servers=stack.deployment.kafka, acks="all")
    await producer.start()
    try:
        for value, headers in records:
            if headers:
                await producer.send_and_wait(
                    stack.deployment.input, value=value, partition=1, headers=list(headers)
                )
    finally:
        await producer.stop()


@FUZZ
@given(
    mix=st.lists(st.tuples(st.sampled_from("abc"), revenues), min_size=3, max_size=25),
    junk=st.lists(garbage, max_size=10),
)
def test_bad_input_never_stops_the_worker_and_good_input_is_applied(
    stack: Stack, mix: list[tuple[str, object]], junk: list[bytes]
) -> None:
    asyncio.run(send_mix(stack, mix, junk))
    asyncio.run(settled(stack))
    dlq = asyncio.run(
        consume_until(
            stack.deployment.kafka,
            stack.deployment.dlq,
            lambda r: {x.value for x in r} >= set(stack.refused),
            worker=stack.worker,
        )
    )
    seen: dict[bytes, list[str]] = {}
    for record in dlq:
        seen.setdefault(record.value, []).append(
            dict(record.headers)["segmenter.error.kind"].decode()
        )
    for value, kind in stack.refused.items():
        kinds = seen[value]
        if kind != "any":
            assert set(kinds) == {kind}, (value[:80], kinds)
    assert stack.worker.alive(), stack.worker.log_tail()


# -- the API ------------------------------------------------------------------------------------

HEAD = "id: a\nname: A\ndescription: d\n"
ROUTES = [
    "/v1/segments/buyer/members",
    "/v1/segments/buyer/performance",
    "/v1/segments/buyer/history",
    "/v1/report",
    "/v1/migrations/matrix",
    "/v1/segments/overlap",
    "/v1/rfm/grid",
]
params = st.dictionaries(
    st.sampled_from(
        ["cursor", "limit", "window", "day", "since", "until", "granularity", "segments"]
    ),
    st.one_of(
        st.text(max_size=30),
        st.integers().map(str),
        st.floats().map(str),
        st.sampled_from(["18446744073709551616", "-1", "2e305s", "9" * 400, "٣", "3600", "1d"]),
    ),
    max_size=4,
)
drafts = st.one_of(
    st.text(max_size=300),
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.floats(),
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=10),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=30,
    ).map(lambda doc: orjson.dumps(doc).decode()),
    st.sampled_from(
        [
            HEAD + "kind: demographic\ncondition: {type: all, conditions: [",
            "id: &x a\nname: *x\n",
            HEAD + "kind: behavioral\ncondition: {type: recency, event: x, within: 1.8e+305}",
        ]
    ),
)


@FUZZ
@given(
    queries=st.lists(st.tuples(st.sampled_from(ROUTES), params), min_size=5, max_size=30),
    bodies=st.lists(drafts, min_size=3, max_size=12),
    ids=st.lists(st.text(min_size=1, max_size=20), max_size=8),
)
def test_no_query_or_draft_makes_the_api_fail(
    stack: Stack, queries: list[tuple[str, dict[str, str]]], bodies: list[str], ids: list[str]
) -> None:
    async def probe() -> list[tuple[str, int]]:
        failures = []
        async with aiohttp.ClientSession() as session:
            for path, query in queries:
                async with session.get(stack.url + path, params=query) as response:
                    if response.status >= 500:
                        failures.append((f"{path} {query}", response.status))
            for body in bodies:
                async with session.post(
                    stack.url + "/v1/segments/preview", data=body.encode("utf-8", "surrogatepass")
                ) as response:
                    if response.status not in (200, 422):
                        failures.append((f"preview {body[:60]!r}", response.status))
            for cid in ids:
                path = f"{stack.url}/v1/customers/{quote(cid, safe='')}"
                async with session.get(yarl.URL(path, encoded=True)) as response:
                    if response.status >= 500:
                        failures.append((f"customer {cid!r}", response.status))
        return failures

    assert asyncio.run(probe()) == []
    assert stack.worker.alive(), stack.worker.log_tail()
