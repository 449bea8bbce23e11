"""A real worker on the real broker and Redis: migrations, DLQ, redelivery, restart."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from streams.pipeline.migrations import ce_id
from tests.integration.harness import (
    Deployment,
    consume_until,
    event,
    keyed,
    order,
    produce,
    values,
)

pytestmark = pytest.mark.integration


async def test_events_become_migrations_and_poison_goes_to_the_dlq(deployment: Deployment) -> None:
    await deployment.create_topics()
    worker = deployment.worker()
    try:
        docs = [
            event(
                "identify",
                "i1",
                "ada",
                "2026-01-01T09:00:00Z",
                traits={"address": {"country": "CA"}},
            ),
            order("o1", "ada", 200.0, "2026-01-01T10:00:00Z"),
            order("o2", "ada", 900.0, "2026-01-02T10:00:00Z"),
            order("o3", "bob", 50.0, "2026-01-01T10:00:00Z"),
        ]
        await produce(deployment.kafka, deployment.input, keyed(docs))
        poison = [(b"x", b"{oops"), (None, orjson.dumps({"type": "track", "userId": "ada"}))]
        await produce(deployment.kafka, deployment.input, poison, partition=3)
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len(r) >= 5,
            worker=worker,
            settle=1.0,
        )
        data = values(got)
        by_customer = {
            cid: [(d["segment"], d["direction"]) for d in data if d["customer_id"] == cid]
            for cid in ("ada", "bob")
        }
        assert by_customer["ada"] == [
            ("canadians", "entered"),
            ("buyer", "entered"),
            ("buyer", "exited"),
            ("big_spender", "entered"),
        ]
        assert by_customer["bob"] == [("buyer", "entered")]
        for record in got:
            headers = dict(record.headers)
            body = orjson.loads(record.value)
            assert record.key == body["customer_id"].encode()
            assert headers["ce_subject"] == record.key
            assert headers["ce_id"].decode() == ce_id(
                body["customer_id"], body["sequence"], body["segment"], body["direction"]
            )
        dlq = await consume_until(
            deployment.kafka, deployment.dlq, lambda r: len(r) >= 2, worker=worker
        )
        assert sorted(r.value for r in dlq) == sorted(v for _, v in poison)
        kinds = sorted(dict(r.headers)["segmenter.error.kind"] for r in dlq)
        assert kinds == [b"json", b"schema"]
        assert all(dict(r.headers)["segmenter.source.partition"] == b"3" for r in dlq)
    finally:
        assert worker.stop() == 0, worker.log_tail()


async def test_redelivery_and_unkeyed_events_are_handled(deployment: Deployment) -> None:
    await deployment.create_topics()
    worker = deployment.worker()
    try:
        first = order("o1", "cy", 100.0)
        await produce(
            deployment.kafka, deployment.input, [(None, orjson.dumps(first))], partition=0
        )
        await produce(
            deployment.kafka, deployment.input, [(b"cy", orjson.dumps(first))], partition=5
        )
        again = order("o2", "cy", 2000.0, "2026-01-03T00:00:00Z")
        await produce(deployment.kafka, deployment.input, [(b"wrong-key", orjson.dumps(again))])
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len(r) >= 3,
            worker=worker,
            settle=2.0,
        )
        moves = [(d["segment"], d["direction"], d["sequence"]) for d in values(got)]
        assert moves == [
            ("buyer", "entered", 1),
            ("buyer", "exited", 2),
            ("big_spender", "entered", 3),
        ]
    finally:
        worker.stop()


async def test_a_killed_worker_resumes_without_loss_or_gap(deployment: Deployment) -> None:
    await deployment.create_topics()
    customers = [f"c{n}" for n in range(60)]
    docs = []
    for step in range(5):
        for cid in customers:
            revenue = 300.0 if step < 4 else 1.0
            ts = f"2026-01-0{step + 1}T10:00:00Z"
            docs.append(order(f"{cid}-{step}", cid, revenue, ts))
    worker = deployment.worker()
    await produce(deployment.kafka, deployment.input, keyed(docs[:150]))
    await consume_until(
        deployment.kafka, deployment.migrations, lambda r: len(r) >= 40, worker=worker
    )
    worker.kill()
    await produce(deployment.kafka, deployment.input, keyed(docs[150:]))
    worker = deployment.worker()
    try:
        # each customer: buyer entered (order 1), then buyer exited + big_spender entered (order 4)
        expected = 3 * len(customers)
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len({dict(x.headers)["ce_id"] for x in r}) >= expected,
            worker=worker,
            timeout=90,
            settle=2.0,
        )
    finally:
        worker.stop()
    unique = {dict(r.headers)["ce_id"]: orjson.loads(r.value) for r in got}
    assert len(unique) == expected
    per_customer = Counter(d["customer_id"] for d in unique.values())
    assert set(per_customer.values()) == {3}
    for cid in customers:
        sequences = sorted(d["sequence"] for d in unique.values() if d["customer_id"] == cid)
        assert sequences == [1, 2, 3], cid
