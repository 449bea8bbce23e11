"""``segmenter deliver`` against the real broker, Redis and a real local HTTP receiver.

Faults on purpose (500s, 429 with ``Retry-After``, slow answers, connection resets) while the
deliverer is SIGKILLed and restarted: every migration arrives at least once, per customer in
order, every request's signature verifies; a receiver that stays down past the give-up time
yields dead-letter records and no loss.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from streams.api.asyncapi import asyncapi_document, validate
from streams.deliver.metrics import read_delivery_metrics
from streams.stack.children import Child
from tests.integration.harness import (
    Deployment,
    consume_until,
    event,
    keyed,
    order,
    produce,
)
from tests.receiver import Receiver

pytestmark = pytest.mark.integration
SECRET = b"s3cret-for-tests"


def webhook_file(directory: Path, url: str, **extra: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "id": "hook",
        "type": "webhook",
        "url": url,
        "secret_env": "HOOK_SECRET",
        "start_from": "earliest",
        "batch": {"max_records": 40, "linger_ms": 50},
        "timeout_s": 0.5,
        "rate_limit_per_s": 200,
        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.4, "give_up_after_s": 120},
        **extra,
    }
    (directory / "hook.yaml").write_bytes(orjson.dumps(spec))
    return directory


def deliverer(deployment: Deployment, destinations: Path) -> Child:
    env = deployment.env(destinations=destinations, deliver_group=f"{deployment.prefix}-dl")
    env["HOOK_SECRET"] = SECRET.decode()
    return Child(["deliver"], env).start()


def traffic(customers: int, per_customer: int) -> list[dict[str, object]]:
    """Orders that move customers buyer -> big_spender, and Canada in and out."""
    docs: list[dict[str, object]] = []
    for n in range(per_customer):
        for c in range(customers):
            user = f"u{c}"
            ts = f"2026-01-01T10:{n:02d}:{c % 60:02d}Z"
            if n % 3 == 2:
                country = "CA" if (n // 3) % 2 == 0 else "US"
                docs.append(
                    event(
                        "identify", f"i{c}-{n}", user, ts, traits={"address": {"country": country}}
                    )
                )
            else:
                docs.append(order(f"o{c}-{n}", user, 400.0, ts))
    return docs


async def all_migrations(deployment: Deployment, at_least: int) -> list[dict[str, object]]:
    records = await consume_until(
        deployment.kafka, deployment.migrations, lambda r: len(r) >= at_least, settle=2.0
    )
    return [{**orjson.loads(r.value), "id": dict(r.headers)["ce_id"].decode()} for r in records]


def settled_migrations(deployment: Deployment, quiet_s: float = 1.5) -> list[dict[str, object]]:
    """Every migration the worker emits for the input sent so far (once none come for a while)."""
    seen = asyncio.run(all_migrations(deployment, at_least=1))
    while True:
        time.sleep(quiet_s)
        now = asyncio.run(all_migrations(deployment, at_least=len(seen)))
        if len(now) == len(seen):
            return now
        seen = now


async def delivery_figures(deployment: Deployment) -> dict[str, dict[str, float]]:
    client = aioredis.Redis.from_url(deployment.redis)
    try:
        return await read_delivery_metrics(client, deployment.prefix)
    finally:
        await client.aclose()


def first_arrivals(items: list[dict[str, object]]) -> list[dict[str, object]]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item["id"] not in seen:
            seen.add(str(item["id"]))
            out.append(item)
    return out


def wait_for(check, timeout: float, what: str, child: Child | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = child.log_tail(40) if child is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def test_every_migration_arrives_in_order_through_faults_and_kills_with_two_deliverers(
    deployment: Deployment, tmp_path: Path
) -> None:
    asyncio.run(deployment.create_topics())
    receiver = Receiver(
        SECRET, faults=["ok", "500", "ok", "429", "ok", "slow", "reset"], slow_s=0.8
    ).start()
    worker = deployment.worker()
    deliver = deliverer(deployment, webhook_file(tmp_path / "destinations", receiver.url))
    second = deliverer(deployment, tmp_path / "destinations")  # the group splits the partitions
    try:
        docs = traffic(customers=30, per_customer=6)
        half = len(docs) // 2
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(docs[:half])))
        wait_for(lambda: len(receiver.items()) > 20, 60, "first deliveries", deliver)
        deliver.kill()
        deliver = deliverer(deployment, tmp_path / "destinations")
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(docs[half:])))
        wait_for(lambda: len(receiver.items()) > 60, 60, "deliveries after a restart", deliver)
        expected = settled_migrations(deployment)
        wait_for(
            lambda: {i["id"] for i in receiver.items()} >= {e["id"] for e in expected},
            120,
            "every migration at the receiver",
            deliver,
        )
        # The lag metric (end offset minus committed, per partition, from the live owners).
        wait_for(
            lambda: asyncio.run(delivery_figures(deployment)).get("hook", {}).get("lag") == 0,
            30,
            "the reported lag to reach 0",
            deliver,
        )
        lag_reported = asyncio.run(delivery_figures(deployment))["hook"]["lag"]
    finally:
        deliver.stop()
        second.stop()
        worker.stop()
        receiver.stop()
    assert "Traceback" not in second.log_tail(200)
    items = receiver.items()
    got = [{**i["data"], "id": i["id"]} for i in items]
    assert {g["id"] for g in got} == {e["id"] for e in expected}
    assert receiver.bad_signatures == 0
    assert receiver.answered.get("500") and receiver.answered.get("429")
    assert receiver.answered.get("slow") and receiver.answered.get("reset")
    by_customer: dict[str, list[int]] = {}
    for item in first_arrivals(got):
        by_customer.setdefault(str(item["customer_id"]), []).append(int(item["sequence"]))  # type: ignore[call-overload]
    for customer, sequences in by_customer.items():
        assert sequences == sorted(sequences), customer
        assert sequences == list(range(1, len(sequences) + 1)), customer
    for headers, body in receiver.accepted:
        ids = [i["id"] for i in body]
        digest = "batch-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        assert headers["Idempotency-Key"] == (ids[0] if len(ids) == 1 else digest)
        assert headers["Content-Type"] == "application/cloudevents-batch+json"
    store = redis.Redis.from_url(deployment.redis)
    counts = {
        k.decode(): v.decode()
        for k, v in store.hgetall(f"{deployment.prefix}:deliver:hook").items()
    }
    assert int(counts["retried"]) > 0
    assert int(counts["delivered"]) > 0  # a SIGKILLed process loses its unreported counts
    assert lag_reported == 0  # everything committed after delivery, as the metric says


def test_a_receiver_down_past_give_up_dead_letters_without_loss(
    deployment: Deployment, tmp_path: Path
) -> None:
    asyncio.run(deployment.create_topics())
    receiver = Receiver(SECRET, faults=["503"]).start()
    retry = {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "give_up_after_s": 1.0}
    destinations = webhook_file(tmp_path / "destinations", receiver.url, retry=retry)
    worker = deployment.worker()
    deliver = deliverer(deployment, destinations)
    try:
        docs = [order(f"o{c}", f"u{c}", 1500.0) for c in range(12)]
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(docs)))
        expected = asyncio.run(all_migrations(deployment, at_least=12))
        dead = asyncio.run(
            consume_until(
                deployment.kafka,
                "segmenter.deliver.hook.dlq",
                lambda r: (
                    {dict(x.headers)["ce_id"] for x in r}
                    >= {str(e["id"]).encode() for e in expected}
                ),
                timeout=90,
                worker=deliver,
            )
        )
    finally:
        deliver.stop()
        worker.stop()
        receiver.stop()
    assert receiver.accepted == []
    doc = asyncapi_document()
    schemas = doc["components"]["schemas"]
    assert {dict(x.headers)["ce_id"].decode() for x in dead} == {e["id"] for e in expected}
    for record in dead:
        headers = dict(record.headers)
        assert headers["segmenter.destination"] == b"hook"
        assert b"HTTP 503" in headers["segmenter.error.message"]
        assert int(headers["segmenter.delivery.attempts"]) >= 2
        assert headers["segmenter.source.topic"] == deployment.migrations.encode()
        assert int(headers["segmenter.source.offset"]) >= 0
        text = {k: v.decode() for k, v in headers.items()}
        assert validate(text, schemas["DeliveryDeadLetterHeaders"], doc) == []
        assert validate(orjson.loads(record.value), schemas["MigrationData"], doc) == []
        assert orjson.loads(record.value)["customer_id"] == record.key.decode()
