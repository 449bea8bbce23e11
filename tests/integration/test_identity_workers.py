"""Identity and privacy with real workers: concurrent merges, erasure, the membership topic."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import redis.asyncio as aioredis

from streams.pipeline.routing import partition_for
from streams.state.customer import CustomerState
from streams.store.redis_store import Keys, stored_state
from tests.integration.harness import (
    Deployment,
    consume_until,
    event,
    keyed,
    order,
    produce,
)

pytestmark = pytest.mark.integration


async def states(deployment: Deployment, ids: list[str]) -> dict[str, CustomerState | None]:
    client = aioredis.Redis.from_url(deployment.redis)
    keys = Keys(deployment.prefix)
    try:
        raw = [stored_state(await client.get(keys.customer(cid))) for cid in ids]
    finally:
        await client.aclose()
    return {
        cid: CustomerState.from_json(r.data) if r else None for cid, r in zip(ids, raw, strict=True)
    }


async def wait_for(check, timeout: float = 90.0, workers=()) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        for worker in workers:
            assert worker.alive(), worker.log_tail()
        await asyncio.sleep(0.3)
    raise AssertionError("condition not reached in time")


def views(who: str, ids: str, first_minute: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "type": "track",
            "messageId": f"{who}-v{first_minute + n}",
            "timestamp": f"2026-01-01T10:{first_minute + n:02d}:00Z",
            "event": "Product Viewed",
            ids: who,
        }
        for n in range(count)
    ]


async def test_concurrent_merges_on_two_partitions_lose_nothing(deployment: Deployment) -> None:
    await deployment.create_topics()
    pairs = []
    n = 0
    while len(pairs) < 16:
        anon, user = f"anon-{n}", f"user-{n}"
        if partition_for(anon.encode(), 8) != partition_for(user.encode(), 8):
            pairs.append((anon, user))
        n += 1
    workers = [deployment.worker(), deployment.worker()]
    try:
        anon_docs: list[dict[str, object]] = []
        user_docs: list[dict[str, object]] = []
        for anon, user in pairs:
            anon_docs += views(anon, "anonymousId", 0, 6)
            user_docs += views(user, "userId", 10, 3)
            user_docs.append(
                {
                    "type": "alias",
                    "messageId": f"alias-{user}",
                    "userId": user,
                    "previousId": anon,
                    "timestamp": "2026-01-01T10:03:30Z",
                }
            )
            user_docs += views(user, "userId", 20, 3)

        def keyed_any(docs: list[dict[str, object]]) -> list[tuple[bytes | None, bytes]]:
            return [
                (str(d.get("userId") or d.get("anonymousId")).encode(), orjson.dumps(d))
                for d in docs
            ]

        await asyncio.gather(
            produce(deployment.kafka, deployment.input, keyed_any(anon_docs)),
            produce(deployment.kafka, deployment.input, keyed_any(user_docs)),
        )
        users = [user for _, user in pairs]
        anons = [anon for anon, _ in pairs]

        async def merged() -> bool:
            found = await states(deployment, users + anons)
            return all(
                (s := found[user]) is not None and s.named.get("Product Viewed", [0])[0] == 12
                for user in users
            )

        await wait_for(merged, workers=workers)
        found = await states(deployment, users + anons)
        for anon, user in pairs:
            survivor, redirect = found[user], found[anon]
            assert survivor is not None and survivor.aliases == [anon]
            assert redirect is not None and redirect.merged_into == user
    finally:
        for worker in workers:
            worker.stop()


async def test_erasure_leaves_no_key_and_a_replay_does_not_undo_it(deployment: Deployment) -> None:
    await deployment.create_topics()
    worker = deployment.worker()
    history = [
        event(
            "identify", "i1", "zoe", "2026-01-01T09:00:00Z", traits={"address": {"country": "CA"}}
        ),
        order("o1", "zoe", 1500.0, "2026-01-01T10:00:00Z"),
        {
            "type": "alias",
            "messageId": "al",
            "userId": "zoe",
            "previousId": "zoe-anon",
            "timestamp": "2026-01-01T11:00:00Z",
        },
    ]
    try:
        await produce(deployment.kafka, deployment.input, keyed(history))
        await consume_until(
            deployment.kafka, deployment.migrations, lambda r: len(r) >= 2, worker=worker
        )
        erase = event("erase", "e1", "zoe", "2026-01-02T00:00:00Z")
        await produce(deployment.kafka, deployment.input, keyed([erase]))
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len(r) >= 4,
            worker=worker,
            settle=1.0,
        )
        exits = [orjson.loads(r.value) for r in got if b'"exited"' in r.value]
        assert sorted(e["segment"] for e in exits) == ["big_spender", "canadians"]
        assert {e["trigger"]["kind"] for e in exits} == {"erasure"}
        replayed = [{**doc, "messageId": f"replayed-{doc['messageId']}"} for doc in history]
        await produce(deployment.kafka, deployment.input, keyed(replayed))
        await asyncio.sleep(3.0)
        assert worker.alive(), worker.log_tail()
        client = aioredis.Redis.from_url(deployment.redis)
        try:
            keys = [k async for k in client.scan_iter(match=f"{deployment.prefix}:*")]
            assert not [k for k in keys if b"zoe" in k], keys
            for key in keys:
                kind = await client.type(key)
                if kind == b"set":
                    assert not [m for m in await client.smembers(key) if b"zoe" in m]
                elif kind == b"string":
                    assert b"zoe" not in await client.get(key)
                elif kind == b"hash":
                    fields = await client.hgetall(key)
                    assert not [f for f in fields if b"zoe" in f]
                    assert not [v for v in fields.values() if b"zoe" in v]
                elif kind == b"zset":
                    assert not [m for m in await client.zrange(key, 0, -1) if b"zoe" in m]
        finally:
            await client.aclose()
        records = await consume_until(
            deployment.kafka,
            deployment.memberships,
            lambda r: any(x.value is None for x in r),
            worker=worker,
        )
        assert records[-1].key == b"zoe" and records[-1].value is None
    finally:
        worker.stop()


async def test_the_membership_topic_matches_redis(deployment: Deployment) -> None:
    await deployment.create_topics()
    worker = deployment.worker()
    docs = []
    for n in range(30):
        cid = f"m{n}"
        docs.append(order(f"{cid}-1", cid, 400.0, "2026-01-01T10:00:00Z"))
        if n % 3 == 0:
            docs.append(order(f"{cid}-2", cid, 700.0, "2026-01-02T10:00:00Z"))
        if n % 5 == 0:
            docs.append(
                event(
                    "identify",
                    f"{cid}-i",
                    cid,
                    "2026-01-03T00:00:00Z",
                    traits={"address": {"country": "CA"}},
                )
            )
        if n % 7 == 0:
            docs.append(event("erase", f"{cid}-e", cid, "2026-01-04T00:00:00Z"))
    try:
        await produce(deployment.kafka, deployment.input, keyed(docs))
        erased = [f"m{n}" for n in range(30) if n % 7 == 0]

        async def done() -> bool:
            found = await states(deployment, [*erased, "m29", "m27"])
            return all(found[cid] is None for cid in erased) and found["m27"] is not None

        await wait_for(done, workers=[worker])
        await asyncio.sleep(1.0)
        survivors = {f"m{n}".encode() for n in range(30) if n % 7 != 0}
        records = await consume_until(
            deployment.kafka,
            deployment.memberships,
            lambda r: survivors <= {x.key for x in r},
            worker=worker,
            settle=1.5,
        )
        latest: dict[str, list[str] | None] = {}
        for record in records:
            cid = record.key.decode()
            latest[cid] = None if record.value is None else orjson.loads(record.value)["segments"]
        found = await states(deployment, [f"m{n}" for n in range(30)])
        for cid, state in found.items():
            if state is None:
                assert latest.get(cid) is None, cid
            else:
                assert latest[cid] == sorted(state.members), cid
    finally:
        worker.stop()
