"""Creating the segmenter's topics (idempotent: existing topics are left as they are)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streams.settings import Settings


def topic_layout(settings: Settings) -> dict[str, int]:
    """Topic name -> partition count for everything the segmenter reads or writes."""
    return {
        settings.input_topic: settings.input_partitions,
        settings.migrations_topic: settings.migrations_partitions,
        settings.dlq_topic: settings.input_partitions,
        settings.memberships_topic: settings.migrations_partitions,
    }


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configuration: the membership topic is compacted (latest value per customer)."""
    return {settings.memberships_topic: {"cleanup.policy": "compact"}}


async def ensure_topics(
    bootstrap: str,
    layout: dict[str, int],
    timeout: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
    security: dict[str, Any] | None = None,
) -> None:
    """Create the topics in ``layout`` that do not exist yet, retrying until the broker answers."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(security or {})
        )
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, 1, topic_configs=(configs or {}).get(name, {}))
            for name, partitions in layout.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def partition_count(
    bootstrap: str, topic: str, security: dict[str, Any] | None = None
) -> int:
    """How many partitions ``topic`` has (0 when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for item in described:
        if item.get("topic") == topic and not item.get("error_code"):
            return len(item.get("partitions", []))
    return 0


async def ensure_segmenter_topics(
    bootstrap: str, settings: Settings, security: dict[str, Any] | None = None
) -> int:
    """Create the segmenter's topics that are missing; the input topic's partition count."""
    await ensure_topics(
        bootstrap, topic_layout(settings), configs=topic_configs(settings), security=security
    )
    return await partition_count(bootstrap, settings.input_topic, security=security)
