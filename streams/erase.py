"""``segmenter erase CUSTOMER_ID``: ask the pipeline to forget a customer (GDPR, PIPEDA, Law 25).

An ``erase`` event goes onto the input topic, keyed by the customer; the worker that owns the
customer deletes the profile and every alias, emits the exits (``trigger.kind = erasure``), a
tombstone on the membership topic, and records the erasure so that replaying older events does
not re-create the profile.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.stack.kafka_security import client_kwargs


def erase_event(customer_id: str, now: datetime | None = None) -> dict[str, str]:
    """The ``erase`` event for one customer."""
    moment = now or datetime.now(UTC)
    return {
        "type": "erase",
        "messageId": f"erase-{uuid.uuid4()}",
        "userId": customer_id,
        "timestamp": moment.isoformat(timespec="milliseconds"),
    }


async def _send(settings: Settings, bootstrap: str, topic: str, customer_id: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_kwargs(settings))
    await producer.start()
    try:
        value = orjson.dumps(erase_event(customer_id))
        await producer.send_and_wait(topic, value=value, key=customer_id.encode())
    finally:
        await producer.stop()


def run_erase(settings: Settings, customer_id: str) -> int:
    """Send the erase event; exit 2 when no broker is known."""
    settings = with_running_stack(settings)
    if not settings.kafka_bootstrap:
        print(
            "segmenter erase: set SEGMENTER_KAFKA_BOOTSTRAP or run it beside `segmenter up`",
            file=sys.stderr,
        )
        return 2
    asyncio.run(_send(settings, settings.kafka_bootstrap, settings.input_topic, customer_id))
    print(f"erase requested for {customer_id!r} on {settings.input_topic}")
    return 0
