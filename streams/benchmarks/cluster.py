"""(i) ``--redis-cluster``: two workers on the partitioned layout, over 1 and then 3 masters.

For each cluster size, a fresh local Redis Cluster (:mod:`streams.stack.cluster`, the bundled
valkey-server) and a fresh 8-partition topic holding the same events; two ``segmenter worker``
children (``SEGMENTER_REDIS_CLUSTER=true``, ``SEGMENTER_REDIS_LAYOUT=partitioned``) drain it.
Reported: events/s and the workers' CPU per event for each size, the ratio 3 masters / 1 master,
and how the 3-master run's keys are shared between the masters. On one machine the masters
share its cores with the broker and the workers: the ratio says what moving a namespace's load
off one Redis thread gives there, not what separate machines would.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from streams.benchmarks.common import PARTITIONS, BenchError, Infra, Throughput, say
from streams.benchmarks.load import Message, preproduce
from streams.benchmarks.segmenter import LATENESS_S, drain, side_worker_env
from streams.stack.children import Child
from streams.stack.cluster import Cluster
from streams.stack.embedded import StackError, find_redis_server
from streams.stack.topics import ensure_topics
from streams.store.redis_store import RedisStore

SIZES = (1, 3)
WORKERS = 2


@dataclass(frozen=True)
class ClusterRun:
    """One cluster size's drain, and each master's share of the keys."""

    masters: int
    throughput: Throughput
    key_share: tuple[float, ...]


async def _drain(
    infra: Infra, nodes: Cluster, masters: int, messages: Sequence[Message], timeout: float
) -> ClusterRun:
    prefix = f"{infra.prefix}.cluster{masters}"
    namespace = f"{infra.namespace}-c{masters}"
    topics = {
        f"{prefix}.events": PARTITIONS,
        f"{prefix}.migrations": PARTITIONS,
        f"{prefix}.memberships": PARTITIONS,
        f"{prefix}.dlq": 1,
    }
    await ensure_topics(infra.bootstrap, topics)
    await preproduce(infra.bootstrap, [f"{prefix}.events"], messages)
    env = side_worker_env(
        infra,
        prefix,
        namespace,
        redis_url=nodes.url(),
        redis_cluster=True,
        redis_layout="partitioned",
        allowed_lateness_s=LATENESS_S,
    )
    store = RedisStore.from_url(nodes.url(), namespace, cluster=True, partitions=PARTITIONS)
    children = [Child(["worker"], env).start() for _ in range(WORKERS)]

    async def applied() -> int:
        return sum(offset + 1 for offset in (await store.offsets()).values())

    try:
        found = await drain(
            f"workers on {masters} master(s)", children, len(messages), applied, timeout, "(i)"
        )
    finally:
        for child in children:
            child.stop()
        await store.close()
    counts = []
    for port in nodes.ports:
        client = redis.Redis(port=port)
        try:
            counts.append(int(client.dbsize()))
        finally:
            client.close()
    total = max(sum(counts), 1)
    return ClusterRun(masters, found, tuple(round(n / total, 3) for n in counts))


def cluster_topics(infra: Infra) -> list[str]:
    """The topics (i) creates (deleted at the end on a configured broker)."""
    return [
        f"{infra.prefix}.cluster{masters}.{name}"
        for masters in SIZES
        for name in ("events", "migrations", "memberships", "dlq")
    ]


def run_cluster(infra: Infra, messages: Sequence[Message], timeout: float) -> list[ClusterRun]:
    """(i) for 1 and 3 masters, in that order (the clusters are thrown away after)."""
    try:
        binary = find_redis_server()
    except StackError as exc:
        raise BenchError(f"--redis-cluster needs a Redis server binary: {exc}") from None
    runs = []
    for masters in SIZES:
        with tempfile.TemporaryDirectory(prefix="segmenter-cluster-") as directory:
            say(f"(i) Redis Cluster: {masters} master(s), {WORKERS} workers, partitioned layout")
            try:
                nodes = Cluster(binary, Path(directory), nodes=masters).start()
            except (RuntimeError, OSError, redis.RedisError) as exc:
                raise BenchError(f"cannot start a {masters}-master Redis Cluster: {exc}") from None
            try:
                runs.append(asyncio.run(_drain(infra, nodes, masters, messages, timeout)))
            finally:
                nodes.stop()
    return runs
