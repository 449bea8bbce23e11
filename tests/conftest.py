"""Shared fixtures: a real Tansu broker and a real Redis-protocol server per test session.

``SEGMENTER_REDIS_URL`` / ``SEGMENTER_KAFKA_BOOTSTRAP`` in the environment make the tests use
those servers instead of starting their own.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: the configured one, else an embedded server for this session."""
    configured = os.environ.get("SEGMENTER_REDIS_URL")
    if configured:
        yield configured
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka-compatible broker (embedded Tansu unless configured)."""
    configured = os.environ.get("SEGMENTER_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def namespace() -> str:
    """A Redis key prefix unique to one test, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_prefix() -> str:
    """A topic-name prefix unique to one test."""
    return f"t{uuid.uuid4().hex[:8]}"


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion from synchronous test code."""
    return asyncio.run(coro)
