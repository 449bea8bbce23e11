"""``segmenter redis-layout migrate``: a namespace moved between the layouts on a real Redis.

The processor applies the first half of a history in the single layout; the command moves the
namespace to the partitioned layout; the processor applies the second half there; the command
moves it back. At each step every read (states, members, sizes, offsets, timers, outboxes, the
matrix, the size history, named values) equals an in-memory run of the same events, which never
changed layout. A worker of the wrong layout refuses to start with the command to run.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.api.queries import sample_members
from streams.engine import parse_rules
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.stack.children import settings_env
from streams.store.base import Store
from streams.store.memory import MemoryStore
from streams.store.redis_store import LayoutError, RedisStore
from tests.fixtures import TEST_RULES

pytestmark = pytest.mark.integration

PARTITIONS = 8
RECENT = """
id: recent
name: Recent
description: ordered within a day
kind: behavioral
condition: {type: recency, event: Order Completed, within: 1d}
"""


def _history() -> list[Record]:
    """Orders, identifies and merges of 60 customers over three days (timers pending)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    docs: list[dict[str, object]] = []
    for n in range(60):
        ts = (start + timedelta(hours=n)).isoformat()
        user = f"m{n}"
        docs.append(
            {
                "type": "track",
                "event": "Order Completed",
                "messageId": f"o{n}",
                "userId": user,
                "timestamp": ts,
                "properties": {"revenue": 200.0 + 20 * n},
            }
        )
        if n % 3 == 0:
            docs.append(
                {
                    "type": "identify",
                    "messageId": f"i{n}",
                    "userId": user,
                    "timestamp": ts,
                    "traits": {"address": {"country": "CA"}},
                }
            )
        if n % 5 == 0 and n:
            docs.append(
                {
                    "type": "alias",
                    "messageId": f"a{n}",
                    "userId": user,
                    "previousId": f"m{n - 1}",
                    "timestamp": ts,
                }
            )
    offsets: dict[int, int] = defaultdict(int)
    records = []
    for doc in docs:
        key = str(doc["userId"]).encode()
        p = partition_for(key, PARTITIONS)
        records.append(Record("in", p, offsets[p], key, orjson.dumps(doc)))
        offsets[p] += 1
    return records


async def _apply(store: Store, records: list[Record], settings: Settings) -> None:
    rules = parse_rules({**TEST_RULES, "recent.yaml": RECENT})
    ctx = PipelineContext.create(settings, rules, store, PARTITIONS)
    for start in range(0, len(records), 40):
        await process_batch(ctx, records[start : start + 40])


async def _reads(store: Store, customers: list[str]) -> dict[str, object]:
    """Everything a reader sees (versions aside: a state's data and its membership)."""
    snapshot = await store.load(
        customers, list(range(PARTITIONS)), dict.fromkeys(range(PARTITIONS), 2e9)
    )
    members = {
        segment: set(await sample_members(store, segment, 10**9))
        for segment in ("big_spender", "buyer", "canadians", "recent")
    }
    history = await store.history()
    return {
        "states": {c: s.data if s else None for c, s in snapshot.states.items()},
        "offsets": snapshot.offsets,
        "clocks": snapshot.clocks,
        "due": sorted(snapshot.due),
        "members": members,
        "sizes": await store.segment_sizes(),
        "outbox": {p: len(await store.outbox(p, 10_000)) for p in range(PARTITIONS)},
        "matrix": await store.matrix("2026-01-02"),
        "history": (history.base, history.hours),
        "rules": await store.meta_get("probe"),
    }


async def _single_layout_keys(store: RedisStore) -> list[str]:
    """Keys of the single layout's customers, members, sizes, progress, outboxes, timers."""
    keys = store.keys
    patterns = [
        keys.customer_pattern,
        keys.members("*"),
        keys.sizes,
        keys.offsets,
        keys.clocks,
        keys.outbox(0).removesuffix("0") + "*",
        keys.due(0).removesuffix("0") + "*",
        keys.history_prefix() + "*",
    ]
    return [k.decode() for p in patterns async for k in store.client.scan_iter(match=p)]


def _migrate(redis_url: str, namespace: str, to: str, cluster: bool) -> str:
    env = settings_env(
        redis_url=redis_url,
        namespace=namespace,
        input_partitions=PARTITIONS,
        redis_cluster=cluster,
    )
    done = subprocess.run(
        [sys.executable, "-m", "streams", "redis-layout", "migrate", "--to", to],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode()


@pytest.mark.parametrize("cluster", [False, True], ids=["server", "cluster"])
async def test_a_namespace_moves_between_layouts_and_keeps_every_read(
    cluster: bool, request: pytest.FixtureRequest, redis_url: str, namespace: str
) -> None:
    if cluster:
        ports = request.getfixturevalue("cluster_ports")
        redis_url = f"redis://127.0.0.1:{ports[0]}/0"
    records = _history()
    half = len(records) // 2
    settings = Settings(clock="event", input_topic="in", idle_settle_s=0)
    customers = sorted({r.key.decode() for r in records if r.key})

    memory = MemoryStore()
    await _apply(memory, records[:half], settings)
    single = RedisStore.from_url(redis_url, namespace, cluster)
    partitioned = RedisStore.from_url(redis_url, namespace, cluster, partitions=PARTITIONS)
    try:
        await single.check_layout()
        await _apply(single, records[:half], settings)
        await single.meta_set("probe", b"kept")
        await memory.meta_set("probe", b"kept")
        expected = await _reads(memory, customers)
        assert await _reads(single, customers) == expected
        assert expected["due"] and expected["members"]["recent"]

        with pytest.raises(LayoutError, match="redis-layout migrate --to partitioned"):
            await partitioned.check_layout()
        shown = _migrate(redis_url, namespace, "partitioned", cluster)
        assert "single -> partitioned:8" in shown, shown
        await partitioned.check_layout()
        with pytest.raises(LayoutError, match="--to single"):
            await single.check_layout()
        assert await _reads(partitioned, customers) == expected
        assert await _single_layout_keys(single) == []

        await _apply(partitioned, records[half:], settings)
        await _apply(memory, records[half:], settings)
        expected = await _reads(memory, customers)
        assert await _reads(partitioned, customers) == expected

        shown = _migrate(redis_url, namespace, "single", cluster)
        assert "partitioned:8 -> single" in shown, shown
        await single.check_layout()
        assert await _reads(single, customers) == expected
        assert not [k async for k in single.client.scan_iter(match=f"{{{namespace}:p*")]
        assert "already in the single layout" in _migrate(redis_url, namespace, "single", cluster)
    finally:
        await single.close()
        await partitioned.close()
