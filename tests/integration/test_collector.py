"""The collector's HTTP side against the real broker: auth, CORS, limits, order, acks.

The API runs in the test's event loop (aiohttp's test server) with the real producer of
``segmenter api`` (:class:`KafkaSink`) on the session's broker and a store on the session's
Redis; what reached Kafka is read back with a plain consumer.
"""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from streams.api.collector_sink import KafkaSink
from streams.api.http import HttpServer
from streams.engine import parse_rules
from streams.pipeline.metrics import Metrics
from streams.settings import Settings
from streams.stack.embedded import free_port
from streams.stack.topics import ensure_topics
from streams.store.redis_store import RedisStore
from tests.fixtures import TEST_RULES
from tests.integration.harness import consume_until, values

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(user: str, seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": user,
        "messageId": str(uuid.uuid4()),
        "timestamp": "2026-03-01T10:00:00.000Z",
        "properties": {"seq": seq},
        **extra,
    }


async def _healthy() -> dict[str, Any]:
    return {"ok": True, "redis": True}


@asynccontextmanager
async def collector(
    kafka: str, redis: str, topic: str, sink_kafka: str | None = None, **options: Any
) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """The API with its collector producing to ``topic`` (8 partitions), through ``sink_kafka``
    when given (``""``: no producer, as on a worker)."""
    settings = Settings(
        kafka_bootstrap=kafka,
        redis_url=redis,
        input_topic=topic,
        namespace=topic,
        http_port=0,
        **options,
    )
    await ensure_topics(kafka, {topic: 8})
    store = RedisStore.from_settings(settings)
    sink = None
    if sink_kafka != "":
        sink = KafkaSink(settings.model_copy(update={"kafka_bootstrap": sink_kafka or kafka}))
        await sink.start(wait_s=5.0 if sink_kafka is None else 0.2)
    server = HttpServer(settings, parse_rules(TEST_RULES), store, Metrics(), _healthy, sink=sink)
    client = TestClient(TestServer(server.application()))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        if sink is not None:
            await sink.stop()
        await store.close()


async def read(kafka: str, topic: str, done: Callable[[list[ConsumerRecord]], bool]) -> Any:
    return await consume_until(kafka, topic, done, timeout=60)


def ids_in(records: list[ConsumerRecord]) -> set[str]:
    return {str(v["messageId"]) for v in values(records)}


async def test_write_keys_api_key_and_browser_origins(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    options = {
        "write_keys": SecretStr("old-key,new-key"),
        "api_key": SecretStr("api-key"),
        "collector_origins": SHOP,
    }
    async with collector(kafka_bootstrap, redis_url, topic, **options) as client:
        refused = []
        for headers, extra in (
            ({}, {}),
            (basic("wrong"), {}),
            ({}, {"writeKey": "wrong"}),
            ({"Authorization": "Bearer api-key"}, {}),
            ({**basic("new-key"), "Origin": "https://evil.example"}, {}),
        ):
            event = track("u1", 0, **extra)
            response = await client.post("/v1/track", json=event, headers=headers)
            expected = 403 if "Origin" in headers else 401
            assert response.status == expected, await response.text()
            body = await response.json()
            assert body["success"] is False and body["message"]
            refused.append(event["messageId"])
        assert (
            (await client.post("/v1/track", json=track("u1", 0)))
            .headers["WWW-Authenticate"]
            .startswith("Basic")
        )

        accepted = []
        for headers, extra in (
            (basic("old-key"), {}),
            (basic("new-key"), {}),
            ({}, {"writeKey": "new-key"}),
            ({**basic("old-key"), "Origin": SHOP}, {}),
        ):
            event = track("u1", 1, **extra)
            response = await client.post("/v1/track", json=event, headers=headers)
            assert response.status == 200, await response.text()
            assert await response.json() == {"success": True}
            if "Origin" in headers:
                assert response.headers["Access-Control-Allow-Origin"] == SHOP
            accepted.append(event["messageId"])
        # the API key still guards the rest of /v1/, and only that
        assert (await client.get("/v1/segments", headers=basic("old-key"))).status == 401

        preflight = {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
        allowed = await client.options("/v1/batch", headers=preflight)
        assert allowed.status == 204
        assert allowed.headers["Access-Control-Allow-Origin"] == SHOP
        assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
        evil = {**preflight, "Origin": "https://evil.example"}
        assert (await client.options("/v1/batch", headers=evil)).status == 403

        records = await read(kafka_bootstrap, topic, lambda r: set(accepted) <= ids_in(r))
        assert ids_in(records) == set(accepted)
        for value in values(records):
            assert "writeKey" not in value


async def test_a_batch_in_order_per_customer_with_its_bad_events_named(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    customers = [f"c{n}" for n in range(20)]
    first = [track(customers[n % 20], n) for n in range(300)]
    bad = {7: {"type": "track", "userId": "c1"}, 150: "nope", 299: {"type": "page"}}
    body = [bad.get(n, event) for n, event in enumerate(first)]
    sent_at = "2026-03-01T10:00:01.250Z"  # the client sent 1.25 s after stamping
    second = [track(customers[n % 20], 300 + n) for n in range(100)]
    async with collector(kafka_bootstrap, redis_url, topic, write_keys=SecretStr("k")) as client:
        zipped = gzip.compress(orjson.dumps({"batch": body, "sentAt": sent_at}))
        headers = {**basic("k"), "Content-Encoding": "gzip", "Content-Type": "application/json"}
        response = await client.post("/v1/batch", data=zipped, headers=headers)
        assert response.status == 400
        answer = await response.json()
        assert answer["code"] == "invalid_events" and answer["accepted"] == 297
        assert [e["index"] for e in answer["errors"]] == sorted(bad)
        assert [e["kind"] for e in answer["errors"]] == ["schema", "json", "schema"]
        response = await client.post("/v1/batch", json={"batch": second}, headers=basic("k"))
        assert response.status == 200, await response.text()

    good = [e for n, e in enumerate(first) if n not in bad] + second
    records = await read(kafka_bootstrap, topic, lambda r: len(r) >= len(good))
    assert ids_in(records) == {str(e["messageId"]) for e in good}
    # keyed by customer, and each customer's events in the order they were sent
    produced: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        value = orjson.loads(record.value)
        assert record.key == str(value["userId"]).encode()
        produced.setdefault(str(value["userId"]), []).append(int(value["properties"]["seq"]))
    expected: dict[str, list[int]] = {}
    for event in good:
        expected.setdefault(str(event["userId"]), []).append(int(event["properties"]["seq"]))
    assert produced == expected
    # skew: timestamp = receivedAt - (sentAt - timestamp); whole milliseconds, so exact
    for value in values(records):
        if int(value["properties"]["seq"]) < 300:
            shift = pd.Timestamp(sent_at) - pd.Timestamp(str(value["originalTimestamp"]))
            moment = pd.Timestamp(str(value["receivedAt"])) - shift
            assert pd.Timestamp(str(value["timestamp"])) == moment
        else:
            assert value["timestamp"] == "2026-03-01T10:00:00.000Z"


async def test_limits_refuse_the_request_and_produce_nothing(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    async with collector(kafka_bootstrap, redis_url, topic, write_keys=SecretStr("k")) as client:
        cases = [
            ({"batch": [track("u", n, properties={"pad": "x" * 1000}) for n in range(600)]}, 400),
            ({"batch": [track("u", n) for n in range(2501)]}, 400),
        ]
        for doc, status in cases:
            response = await client.post("/v1/batch", json=doc, headers=basic("k"))
            assert response.status == status
            assert (await response.json())["code"] == "payload_too_large"
        response = await client.post("/v1/batch", data=b"{not json", headers=basic("k"))
        assert (await response.json())["code"] == "invalid_json"
        oversize = track("u", 0, properties={"pad": "x" * 40_000})
        response = await client.post("/v1/track", json=oversize, headers=basic("k"))
        answer = await response.json()
        assert response.status == 400 and answer["accepted"] == 0
        assert answer["errors"][0]["kind"] == "oversize"
        last = track("u", 1)
        assert (await client.post("/v1/t", json=last, headers=basic("k"))).status == 200
        text = await (await client.get("/metrics")).text()
        assert 'segmenter_collector_requests_total{status="400"} 4' in text
        assert 'segmenter_collector_events_total{outcome="accepted"} 1' in text

    records = await read(kafka_bootstrap, topic, lambda r: last["messageId"] in ids_in(r))
    assert ids_in(records) == {last["messageId"]}


async def test_unreachable_broker_no_keys_and_workers(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.events"
    event = track("u", 0)
    keys = {"write_keys": SecretStr("k")}
    dead = f"127.0.0.1:{free_port()}"
    async with collector(kafka_bootstrap, redis_url, topic, sink_kafka=dead, **keys) as client:
        response = await client.post("/v1/track", json=event, headers=basic("k"))
        assert response.status == 503 and int(response.headers["Retry-After"]) > 0
    async with collector(kafka_bootstrap, redis_url, topic) as client:
        response = await client.post("/v1/track", json=event, headers=basic("k"))
        assert response.status == 401
        assert (await response.json())["code"] == "no_write_keys"
    async with collector(kafka_bootstrap, redis_url, topic, sink_kafka="", **keys) as client:
        response = await client.post("/v1/track", json=event, headers=basic("k"))
        assert response.status == 404  # a worker's API: no producer, no collecting
