"""``segmenter replay``: events through the real pipeline in event time, migrations to a file.

The run gets its own single-partition topics and its own Redis namespace, so its output does not
depend on anything else using the broker or Redis, and the same input gives byte-identical
output. Embedded servers are started when none is configured; everything the run created is
removed at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import uuid
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.events.decode import decode
from streams.events.models import BaseEvent
from streams.models.published import FittedModels, publish, version_of
from streams.pipeline.control import control_record
from streams.pipeline.migrations import structured
from streams.settings import Settings
from streams.stack.children import Child, settings_env
from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis, StackError
from streams.stack.topics import ensure_topics
from streams.store.redis_store import Keys, RedisStore


def _say(message: str) -> None:
    print(f"replay: {message}", file=sys.stderr, flush=True)


def _key_of(line: bytes) -> bytes | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    cid = doc.get("userId") or doc.get("anonymousId")
    return str(cid).encode() if cid else None


def _last_time(lines: list[bytes]) -> float | None:
    """The latest valid event time in the input (epoch seconds)."""
    latest: float | None = None
    for line in lines:
        event = decode(line, 1 << 30)
        if isinstance(event, BaseEvent):
            latest = event.ts if latest is None else max(latest, event.ts)
    return latest


async def _produce(bootstrap: str, topic: str, lines: list[bytes], secret: str) -> int:
    """Send the events, then a control record (signed with ``secret``, which the run's worker
    is given) that fires every timer due by the last event."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=line, key=_key_of(line), partition=0) for line in lines
        ]
        until = _last_time(lines)
        if until is not None:
            control, headers = control_record(until, secret)
            futures.append(
                await producer.send(topic, value=control, partition=0, headers=list(headers))
            )
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def _wait_applied(
    redis_url: str, keys: Keys, count: int, worker: Child, timeout: float
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    last_report = 0.0
    try:
        while True:
            raw = await client.hget(keys.offsets, "0")
            applied = int(float(raw)) + 1 if raw is not None else 0
            pending = await client.llen(keys.outbox(0))
            if applied >= count and pending == 0:
                return
            if not worker.alive():
                raise StackError(f"the worker stopped during the replay:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"only {applied}/{count} events applied after {timeout:.0f}s")
            if time.monotonic() - last_report > 5:
                _say(f"{applied}/{count} events applied")
                last_report = time.monotonic()
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of the topic's partition 0. Everything was sent before this is called, so
    reading stops at the first empty poll past the reported end offset (some brokers report
    the end short of the last record)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        lines: list[bytes] = []
        while True:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            records = batch.get(tp, [])
            for message in records:
                event = structured(list(message.headers or ()), message.value)
                lines.append(orjson.dumps(event))
            if not records and len(lines) >= end:
                return lines
    finally:
        await consumer.stop()


async def _cleanup(
    bootstrap: str, redis_url: str, namespace: str, topics: list[str], keys: bool = True
) -> None:
    if keys:
        client = aioredis.Redis.from_url(redis_url)
        try:
            async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    except Exception:  # a broker that cannot delete topics keeps them; harmless
        pass
    finally:
        await admin.close()


async def _publish_models(redis_url: str, namespace: str, document: dict[str, object]) -> None:
    store = RedisStore.from_url(redis_url, namespace)
    try:
        await publish(store, document)
    finally:
        await store.close()


class _UnusableInput(Exception):
    """An input file the replay cannot use; the message says which and why."""


def _read_models(models: Path) -> dict[str, object]:
    """The fitted-models document in ``models``, checked to be usable."""
    try:
        document: dict[str, object] = orjson.loads(models.read_bytes())
        FittedModels.of({**document, "version": version_of(document)})
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _UnusableInput(f"cannot use the models in {models}: {exc!r}") from exc
    return document


def _read_events(events: Path) -> list[bytes]:
    """The non-blank lines of the JSONL file ``events``."""
    try:
        return [line for line in events.read_bytes().splitlines() if line.strip()]
    except OSError as exc:
        raise _UnusableInput(f"cannot read {events}: {exc.strerror}") from exc


def _replay_topics(run: str) -> dict[str, str]:
    """The run's own topics, by the setting that names each."""
    prefix = f"segmenter.replay.{run}"
    return {
        "input_topic": f"{prefix}.events",
        "migrations_topic": f"{prefix}.migrations",
        "dlq_topic": f"{prefix}.dlq",
    }


def _send_input(
    bootstrap: str,
    redis_url: str,
    namespace: str,
    topics: dict[str, str],
    lines: list[bytes],
    document: dict[str, object] | None,
) -> tuple[int, str]:
    """Create the topics, send the events, publish the models: (records sent, control secret)."""
    asyncio.run(ensure_topics(bootstrap, {name: 1 for name in topics.values()}))
    secret = secrets.token_hex(16)
    sent = asyncio.run(_produce(bootstrap, topics["input_topic"], lines, secret))
    if document is not None:
        asyncio.run(_publish_models(redis_url, namespace, document))
    return sent, secret


def _worker_env(
    settings: Settings,
    bootstrap: str,
    redis_url: str,
    namespace: str,
    run: str,
    secret: str,
    topics: dict[str, str],
) -> dict[str, str]:
    """The environment of the run's worker: one partition, the event-time clock."""
    return settings_env(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        rules=settings.rules.resolve(),
        namespace=namespace,
        group_id=f"segmenter-replay-{run}",
        clock="event",
        idle_settle_s=0,
        input_partitions=1,
        migrations_partitions=1,
        redis_layout="single",
        http_port=0,
        log_level="warning",
        control_secret=secret,
        **topics,
    )


def _tear_down(
    worker: Child | None,
    broker: EmbeddedBroker | None,
    redis_server: EmbeddedRedis | None,
    bootstrap: str,
    redis_url: str,
    namespace: str,
    topics: dict[str, str],
    keep: str | None,
) -> None:
    """Stop the worker, remove what the run created on servers it did not start, stop those
    it started."""
    if worker is not None:
        worker.stop()
    if (broker is None or redis_server is None) and bootstrap and redis_url:
        try:
            asyncio.run(
                _cleanup(bootstrap, redis_url, namespace, list(topics.values()), keep is None)
            )
        except Exception as exc:
            _say(f"cleanup incomplete: {exc!r}")
    if redis_server:
        redis_server.stop()
    if broker:
        broker.stop()


def run_replay(
    settings: Settings,
    events: Path,
    out: Path,
    models: Path | None = None,
    keep: str | None = None,
) -> int:
    """Replay ``events`` (JSONL) and write the migrations (CloudEvents JSON, one a line).

    ``models``: a fitted-models document (``segmenter model fit --json`` output, or
    ``GET /v1/models``) that ``predicted`` conditions use during the replay. ``keep``: leave
    the run's Redis keys under this namespace at the end (to read its customers, sizes and
    size history), instead of deleting them.
    """
    try:
        document = None if models is None else _read_models(models)
        lines = _read_events(events)
    except _UnusableInput as exc:
        print(f"segmenter replay: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    run = uuid.uuid4().hex[:10]
    topics = _replay_topics(run)
    namespace = keep or f"replay-{run}"
    broker = EmbeddedBroker() if not settings.kafka_bootstrap else None
    redis_server = EmbeddedRedis() if not settings.redis_url else None
    worker: Child | None = None
    bootstrap = redis_url = ""
    try:
        bootstrap = broker.start() if broker else str(settings.kafka_bootstrap)
        redis_url = redis_server.start() if redis_server else str(settings.redis_url)
        sent, secret = _send_input(bootstrap, redis_url, namespace, topics, lines, document)
        _say(f"{len(lines)} events sent; starting the worker (event-time clock)")
        env = _worker_env(settings, bootstrap, redis_url, namespace, run, secret, topics)
        worker = Child(["worker"], env).start()
        timeout = 120 + len(lines) / 500
        asyncio.run(_wait_applied(redis_url, Keys(namespace), sent, worker, timeout))
        migrations = asyncio.run(_read_all(bootstrap, topics["migrations_topic"]))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"".join(line + b"\n" for line in migrations))
        _say(
            f"{len(lines)} events -> {len(migrations)} migrations in "
            f"{time.monotonic() - started:.1f}s, written to {out}"
        )
        return 0
    except StackError as exc:
        print(f"segmenter replay: {exc}", file=sys.stderr)
        return 1
    finally:
        _tear_down(worker, broker, redis_server, bootstrap, redis_url, namespace, topics, keep)
