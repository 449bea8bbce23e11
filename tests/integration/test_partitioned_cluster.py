"""The partitioned Redis layout on a real 3-master cluster (``SEGMENTER_REDIS_LAYOUT=partitioned``).

One scenario, with persistent masters (append-only file, fsync always):

* phase 1: customers and anonymous visitors order and identify; the visitors live in other input
  partitions than the customers they turn out to be;
* phase 2: ``alias`` merges every visitor into its customer (a hand-over between two partitions'
  slots), more events follow, some merged customers are erased (their aliases' keys are in other
  slots). Meanwhile a worker is SIGKILLed and restarted and a master is SIGKILLed and restarted.

Compared with an in-process run of the same events (the in-memory store): the migrations,
deduplicated by ``ce_id``, are the same field by field, every customer's ``sequence`` runs 1..n,
and the final members are the same. The keys are spread over all three masters, each customer's
state in its home partition's slot, and no hand-over is left unfinished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from streams.api.queries import sample_members
from streams.pipeline.routing import partition_for
from streams.stack.cluster import Cluster
from streams.stack.embedded import StackError, find_redis_server
from streams.store.redis_store import RedisStore
from tests.integration.harness import Deployment, produce, write_rules
from tests.integration.test_scale_out import (
    in_process,
    same_migrations,
    settled_assignment,
    start_worker,
)

pytestmark = pytest.mark.integration

PARTITIONS = 8
CUSTOMERS = 120
STEPS = 4
SEGMENTS = ("big_spender", "buyer", "canadians")
Item = tuple[bytes, bytes]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        binary = find_redis_server()
    except StackError as exc:
        pytest.skip(f"no Redis server binary to start a cluster with: {exc}")
    nodes = Cluster(binary, tmp_path_factory.mktemp("pcluster"), persistent=True)
    try:
        nodes.start()
    except (RuntimeError, OSError, redis.RedisError) as exc:
        pytest.skip(f"{binary} cannot run a 3-node Redis Cluster here: {exc}")
    try:
        yield nodes
    finally:
        nodes.stop()


def _at(minutes: int) -> str:
    return (datetime(2026, 1, 1, 10, tzinfo=UTC) + timedelta(minutes=minutes)).isoformat()


def _doc(kind: str, mid: str, ts: str, who: dict[str, str], **fields: object) -> Item:
    doc = {"type": kind, "messageId": mid, "timestamp": ts, **who, **fields}
    return (who.get("userId", who.get("anonymousId", "")).encode(), orjson.dumps(doc))


def _order(mid: str, ts: str, who: dict[str, str], revenue: float) -> Item:
    props = {"revenue": revenue}
    return _doc("track", mid, ts, who, event="Order Completed", properties=props)


def visitor(n: int) -> str:
    """An anonymous id of customer ``n`` that lives in another partition than the customer."""
    home = partition_for(f"p{n}".encode(), PARTITIONS)
    k = 0
    while partition_for(f"anon{n}-{k}".encode(), PARTITIONS) == home:
        k += 1
    return f"anon{n}-{k}"


def phases() -> tuple[list[Item], list[list[Item]], list[str]]:
    """Phase 1, phase 2 in chunks, and the erased customers."""
    first: list[Item] = []
    for n in range(CUSTOMERS):
        user = {"userId": f"p{n}"}
        country = "CA" if n % 3 == 0 else "US"
        first.append(
            _doc("identify", f"i{n}", _at(0), user, traits={"address": {"country": country}})
        )
        first.append(_order(f"o{n}", _at(1), user, float(100 + (n * 37) % 500)))
        if n % 2 == 0:
            anon = {"anonymousId": visitor(n)}
            first.append(_order(f"v{n}", _at(2), anon, float(300 + (n * 53) % 900)))
    chunks: list[list[Item]] = [[] for _ in range(STEPS)]
    erased = [f"p{n}" for n in range(0, CUSTOMERS, 20)]
    for n in range(0, CUSTOMERS, 2):
        alias = {"userId": f"p{n}", "previousId": visitor(n)}
        chunks[0].append(_doc("alias", f"a{n}", _at(10), alias))
    for step in range(STEPS):
        for n in range(CUSTOMERS):
            user = {"userId": f"p{n}"}
            ts = _at(20 + step)
            if (n + step) % 4 == 0:
                country = "CA" if (n + step) % 8 == 0 else "US"
                traits = {"address": {"country": country}}
                chunks[step].append(_doc("identify", f"i{n}-{step}", ts, user, traits=traits))
            else:
                chunks[step].append(_order(f"o{n}-{step}", ts, user, float(50 + (n * step) % 400)))
    for cid in erased:
        chunks[-1].append(_doc("erase", f"e-{cid}", _at(40), {"userId": cid}))
    return first, chunks, erased


async def _applied(store: RedisStore, count: int, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.2)):
        if sum(o + 1 for o in (await store.offsets()).values()) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not every event of phase 1 was applied: {await store.offsets()}")


async def _members(store: RedisStore) -> dict[str, set[str]]:
    found = {segment: set(await sample_members(store, segment, 10**9)) for segment in SEGMENTS}
    return {segment: ids for segment, ids in found.items() if ids}


async def _get(port: int, path: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, (path, await response.text())
        return await response.json()


async def _api_reads(port: int, expected: dict[str, set[str]]) -> None:
    """The worker's HTTP API reads the partitioned layout: sizes, member pages, a customer."""
    listed = await _get(port, "/v1/segments")
    sizes = {s["id"]: s["size"] for s in listed["segments"]}
    assert sizes == {segment: len(expected.get(segment, ())) for segment in SEGMENTS}
    members: set[str] = set()
    cursor = 0
    while True:
        page = await _get(port, f"/v1/segments/buyer/members?limit=7&cursor={cursor}")
        members.update(page["members"])
        cursor = page["next_cursor"] or 0
        if not cursor:
            break
    assert members == expected["buyer"]
    found = await _get(port, "/v1/customers/p2")
    assert set(found["segments"]) == {s for s, ids in expected.items() if "p2" in ids}


FREQUENT = """
id: frequent
name: Frequent
description: three orders or more
kind: behavioral
condition: {type: lifetime, metric: orders, op: ge, value: 3}
"""


async def _rules_apply_backfills(
    deployment: Deployment,
    env: dict[str, str],
    store: RedisStore,
    first: list[Item],
    chunks: list[list[Item]],
    erased: list[str],
) -> None:
    """``segmenter rules apply`` with a new segment: the workers backfill every customer of
    every partition; its members equal plain Python's count of each person's orders."""
    orders: dict[str, int] = defaultdict(int)
    for _key, value in [*first, *(item for chunk in chunks for item in chunk)]:
        doc = orjson.loads(value)
        if doc.get("event") == "Order Completed":
            who = doc.get("userId") or doc["anonymousId"]
            orders[who] += 1
    for n in range(0, CUSTOMERS, 2):
        orders[f"p{n}"] += orders.pop(visitor(n), 0)
    expected = {cid for cid, count in orders.items() if count >= 3 and cid not in erased}
    directory = deployment.rules
    (directory / "frequent.yaml").write_text(FREQUENT)
    settings = {k.lower().removeprefix("segmenter_"): v for k, v in env.items()}
    applied = subprocess.run(
        [sys.executable, "-m", "streams", "rules", "apply", str(directory)],
        env=deployment.env(**settings),
        capture_output=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stderr.decode()[-2000:]
    assert "backfill complete" in applied.stdout.decode(), applied.stdout.decode()
    assert set(await sample_members(store, "frequent", 10**9)) == expected


async def test_partitioned_cluster_survives_crashes_and_merges_like_one_process(
    cluster: Cluster, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    deployment = Deployment(
        kafka_bootstrap,
        cluster.url(),
        topic_prefix,
        write_rules(tmp_path / "rules"),
        idle_settle_s=0,
    )
    deployment = dataclasses.replace(deployment)
    await deployment.create_topics()
    first, chunks, erased = phases()
    expected, expected_members = await in_process(deployment, first, *chunks, batch=100)
    merges = [b for b in expected.values() if b["trigger"]["kind"] == "merge"]
    assert len(merges) >= CUSTOMERS // 4  # visitors' segments left for their customers'
    env = {"SEGMENTER_REDIS_CLUSTER": "true", "SEGMENTER_REDIS_LAYOUT": "partitioned"}
    store = RedisStore.from_url(cluster.url(), deployment.prefix, cluster=True, partitions=8)
    workers = [start_worker(deployment, "w1", **env), start_worker(deployment, "w2", **env)]
    try:
        await settled_assignment(workers)
        await produce(deployment.kafka, deployment.input, first)
        await _applied(store, len(first))
        for step, chunk in enumerate(chunks):
            await produce(deployment.kafka, deployment.input, chunk)
            if step == 0:
                workers[1].child.kill()
                workers[1] = start_worker(deployment, "w2-restarted", **env)
            elif step == 1:
                await asyncio.to_thread(cluster.restart, 1)
            await asyncio.sleep(0.8)

        await same_migrations(deployment, workers, expected)
        assert await _members(store) == expected_members

        # the keys are spread over the three masters, each state in its partition's slot
        by_node: dict[int, int] = {}
        for port in cluster.ports:
            node = redis.Redis(port=port)
            try:
                names = [k.decode() for k in node.scan_iter(match=store.keys.customer_pattern)]
                by_node[port] = len(names)
                for name in names:
                    cid = store.keys.customer_id(name)
                    assert name == store.keys.customer(cid)
                    assert int(node.cluster("keyslot", name)) == int(
                        node.cluster("keyslot", store.keys.sizes_of(store.keys.home(cid)))
                    )
            finally:
                node.close()
        assert all(count > 0 for count in by_node.values()), by_node
        # merged-away ids are bare redirects; erased customers and their aliases are gone
        for n in range(0, CUSTOMERS, 2):
            stored = await store.get_state(visitor(n))
            if f"p{n}" in erased:
                assert stored is None, n
            else:
                assert stored is not None and orjson.loads(stored.data).get("mi") == f"p{n}"
                assert "ho" not in orjson.loads(stored.data)
        for cid in erased:
            assert await store.get_state(cid) is None
        unfinished = [int(await store.client.hlen(store.keys.handover(g))) for g in range(8)]
        assert unfinished == [0] * 8
        await _api_reads(workers[0].port, expected_members)
        await _rules_apply_backfills(deployment, env, store, first, chunks, erased)
        shown = subprocess.run(
            [sys.executable, "-m", "streams", "explain", "p2"],
            env=deployment.env(**{k.lower().removeprefix("segmenter_"): v for k, v in env.items()}),
            capture_output=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr.decode()[-2000:]
        assert "customer p2" in shown.stdout.decode(), shown.stdout.decode()
    finally:
        for w in workers:
            w.child.stop()
        await store.close()
