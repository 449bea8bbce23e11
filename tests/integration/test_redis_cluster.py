"""The store against a real 3-node Redis Cluster (started here; skipped when no server can).

With ``SEGMENTER_REDIS_CLUSTER=true`` every key of a namespace carries the namespace as its hash
tag, so the batch commit (one Lua call over every key a batch touches) runs on the cluster:

* the processor's batches, the reads, SCAN of the customers and the matrix work through a
  cluster client, and every key lands in the namespace's one slot;
* a worker process and ``segmenter explain`` run against the cluster end to end.

Without it (the standalone layout, customers tagged ``{customer}``), the reads work but a
commit spans slots: the cluster refuses it (``CROSSSLOT``), which the last tests record.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException, ResponseError

from streams.engine import parse_rules
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.base import CommitBatch, StateWrite
from streams.store.redis_store import Keys, RedisStore
from tests.integration.harness import (
    TEST_RULES,
    Deployment,
    consume_until,
    event,
    identify_canadian,
    keyed,
    order,
    produce,
    values,
    write_rules,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster_store(cluster_ports: list[int], namespace: str) -> AsyncIterator[RedisStore]:
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    await client.initialize()
    store = RedisStore(client, namespace)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        await client.aclose()


def keyslot(ports: list[int], key: str) -> int:
    client = redis.Redis(port=ports[0])
    try:
        return int(client.cluster("keyslot", key))
    finally:
        client.close()


def two_customers_in_different_slots(ports: list[int], namespace: str) -> tuple[str, str]:
    keys = Keys(namespace)
    first = "ada"
    slot = keyslot(ports, keys.customer(first))
    n = 0
    while keyslot(ports, keys.customer(f"bob{n}")) == slot:
        n += 1
    return first, f"bob{n}"


async def test_every_key_naming_a_customer_is_in_the_customers_slot(
    cluster_ports: list[int], redis_url: str, namespace: str
) -> None:
    """The real processor writes to a standalone Redis; CLUSTER KEYSLOT checks each key."""
    store = RedisStore.from_url(redis_url, namespace)
    declared: list[str] = []
    script = store._commit

    async def recording(keys: list[str], args: list[bytes]) -> object:
        declared.extend(keys)
        return await script(keys=keys, args=args)

    store._commit = recording  # type: ignore[assignment]
    settings = Settings(clock="event", namespace=namespace)
    ctx = PipelineContext.create(settings, parse_rules(TEST_RULES), store, 1)
    customers = ["ada", "bob", "carl.{x}", "dee:7", "anon-9"]
    docs: list[dict[str, object]] = [
        event(
            "identify", "i1", "ada", "2026-01-01T09:00:00Z", traits={"address": {"country": "CA"}}
        ),
        order("o1", "ada", 1500.0),
        order("o2", "bob", 20.0),
        order("o3", "carl.{x}", 30.0),
        order("o4", "dee:7", 2000.0),
        {
            "type": "alias",
            "messageId": "a1",
            "userId": "bob",
            "previousId": "anon-9",
            "timestamp": "2026-01-01T11:00:00Z",
        },
    ]
    records = [
        Record(settings.input_topic, 0, n, None, orjson.dumps(doc)) for n, doc in enumerate(docs)
    ]
    try:
        await process_batch(ctx, records[:3])
        await process_batch(ctx, records[3:])
        stored = [bytes(k).decode() for k in await store.client.keys(f"{namespace}:*")]
    finally:
        await store.close()
    keys = Keys(namespace)
    seen: set[str] = set()
    for cid in customers:
        own = keys.customer(cid)
        assert own in stored, (cid, stored)
        slot = keyslot(cluster_ports, own)
        naming = [k for k in set(stored) | set(declared) if cid in k[len(namespace) :]]
        for key in naming:
            assert keyslot(cluster_ports, key) == slot, (cid, key)
        seen.update(naming)
    assert keys.customer("ada") in declared
    # every other key is shared by many customers (segments, partitions, sizes...)
    shared = {k for k in set(stored) | set(declared)} - seen
    assert not any(":c:" in k for k in shared), shared


async def test_reads_work_through_a_cluster_client(
    cluster_store: RedisStore, cluster_ports: list[int], namespace: str
) -> None:
    ada, bob = two_customers_in_different_slots(cluster_ports, namespace)
    client = cluster_store.client
    await client.set(cluster_store.keys.customer(ada), b'3:{"x":1}')
    await client.hset(cluster_store.keys.offsets, "0", "41")
    assert await cluster_store.ping()
    snapshot = await cluster_store.load([ada, bob], [0, 1], {0: 1e12})
    found = snapshot.states[ada]
    assert found is not None and found.version == 3
    assert snapshot.states[bob] is None
    assert snapshot.offsets == {0: 41}
    state = await cluster_store.get_state(ada)
    assert state is not None and state.data == b'{"x":1}'


async def test_the_server_refuses_the_commit_script_across_slots(
    cluster_ports: list[int], namespace: str
) -> None:
    """What the server itself answers when a script's keys span slots: CROSSSLOT."""
    keys = Keys(namespace)
    node = aioredis.Redis(port=cluster_ports[0])
    try:
        # redis-py maps the server's "CROSSSLOT ..." reply to ClusterCrossSlotError
        with pytest.raises(ClusterCrossSlotError, match="same slot"):
            # a single customer's commit already declares its key and the shared ones
            await node.eval("return 1", 2, keys.customer("ada"), keys.sizes)
    finally:
        await node.aclose()


def _cluster_url(ports: list[int]) -> str:
    return f"redis://127.0.0.1:{ports[0]}/0"


@pytest.fixture
async def tagged_store(cluster_ports: list[int], namespace: str) -> AsyncIterator[RedisStore]:
    """The store as ``SEGMENTER_REDIS_CLUSTER=true`` builds it."""
    store = RedisStore.from_url(_cluster_url(cluster_ports), namespace, cluster=True)
    try:
        yield store
    finally:
        await store.close()


def _keys_by_node(ports: list[int], namespace: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for port in ports:
        node = redis.Redis(port=port)
        try:
            names = [bytes(k).decode() for k in node.keys(f"*{namespace}*")]
        finally:
            node.close()
        if names:
            found[port] = names
    return found


async def test_the_processor_commits_through_a_cluster_in_the_namespace_slot(
    tagged_store: RedisStore, cluster_ports: list[int], namespace: str
) -> None:
    settings = Settings(clock="event", namespace=namespace)
    ctx = PipelineContext.create(settings, parse_rules(TEST_RULES), tagged_store, 1)
    ada, bob = two_customers_in_different_slots(cluster_ports, namespace)
    docs: list[dict[str, object]] = [
        identify_canadian("i1", ada),
        order("o1", ada, 1500.0),
        order("o2", bob, 20.0),
        {
            "type": "alias",
            "messageId": "a1",
            "userId": bob,
            "previousId": "anon-9",
            "timestamp": "2026-01-01T11:00:00Z",
        },
    ]
    records = [
        Record(settings.input_topic, 0, n, None, orjson.dumps(doc)) for n, doc in enumerate(docs)
    ]
    first = await process_batch(ctx, records[:2])
    second = await process_batch(ctx, records[2:])

    assert first.outbox_lengths and second.outbox_lengths
    by_node = _keys_by_node(cluster_ports, namespace)
    assert len(by_node) == 1, by_node
    written = next(iter(by_node.values()))
    slots = {keyslot(cluster_ports, key) for key in written}
    assert slots == {keyslot(cluster_ports, tagged_store.keys.sizes)}
    assert tagged_store.keys.customer(ada) in written
    snapshot = await tagged_store.load([ada, bob, "nobody"], [0])
    assert snapshot.states[ada] is not None and snapshot.states[bob] is not None
    assert snapshot.states["nobody"] is None
    assert snapshot.offsets == {0: 3}
    sizes = await tagged_store.segment_sizes()
    assert sizes == {"big_spender": 1, "buyer": 1, "canadians": 1}
    cursor, customers = 0, set()
    while True:
        cursor, page = await tagged_store.scan_customers(cursor, 100)
        customers.update(page)
        if cursor == 0:
            break
    assert {ada, bob} <= customers
    assert (await tagged_store.matrix("2026-01-01")).get("-|canadians") == 1
    await tagged_store.meta_set("probe", b"1")
    assert await tagged_store.meta_get("probe") == b"1"
    assert await tagged_store.progress_add("probe", 2) == 2


async def test_a_worker_and_explain_run_against_the_cluster(
    cluster_ports: list[int], kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    deployment = Deployment(
        kafka_bootstrap, _cluster_url(cluster_ports), topic_prefix, write_rules(tmp_path / "r")
    )
    await deployment.create_topics()
    worker = deployment.worker(redis_cluster=True)
    try:
        docs = [
            identify_canadian("i1", "ada"),
            order("o1", "ada", 1500.0, "2026-01-01T10:00:00Z"),
            order("o2", "bob", 50.0, "2026-01-01T10:00:00Z"),
        ]
        await produce(deployment.kafka, deployment.input, keyed(docs))
        got = await consume_until(
            deployment.kafka,
            deployment.migrations,
            lambda r: len(r) >= 3,
            worker=worker,
            settle=1.0,
        )
    finally:
        assert worker.stop() == 0, worker.log_tail()
    moves = sorted((d["customer_id"], d["segment"], d["direction"]) for d in values(got))
    assert moves == [
        ("ada", "big_spender", "entered"),
        ("ada", "canadians", "entered"),
        ("bob", "buyer", "entered"),
    ]
    env = deployment.env(redis_cluster=True)
    shown = subprocess.run(
        [sys.executable, "-m", "streams", "explain", "ada"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr.decode()[-2000:]
    text = shown.stdout.decode()
    assert "customer ada" in text and "big_spender" in text, text


async def test_the_standalone_layout_cannot_commit_on_a_cluster(
    cluster_store: RedisStore,
) -> None:
    """Why the setting exists: even one customer's commit spans slots (its key, shared keys)."""
    with pytest.raises((RedisClusterException, ResponseError)):
        await cluster_store.commit(CommitBatch(states=[StateWrite("ada", 0, b"{}")]))
