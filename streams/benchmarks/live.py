"""(c) latency, (e) API lookups and (f) timer lateness, measured together while the stream runs.

For ``seconds`` seconds, with the worker caught up:

- events of brand-new customers go to the input topic at a fixed ``rate``; the first event of a
  new customer always moves it into a segment (at least ``prospect``), so each one yields a
  migration whose ``trigger.message_id`` is the event's ``messageId``. Latency is the time from
  handing the event to the producer until the first such migration is received here;
- ``GET /v1/customers/{id}`` of customers stored by (b) is requested at ``api_rate`` (open loop:
  requests are issued on schedule, whether or not earlier ones have answered);
- just before the load starts, while the worker is idle, ``timer_customers`` new customers each
  get one ``Product Added`` back-dated by an hour, so the default pack's ``cart_abandoner``
  (last add over an hour ago) comes due ``timer_delay_s`` into the load, spread over its first
  seconds. Lateness is the time a ``cart_abandoner`` entered migration with
  ``trigger.kind == "time"`` is received minus its ``ce_time`` (the due time). A customer whose
  add was only applied after it came due enters on the event instead; those are counted as
  ``timers_on_arrival``, not as samples.

Every timestamp is taken in this one process, so no clocks need to agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.benchmarks.common import PARTITIONS, BenchConfig, BenchError, Infra, open_loop, say
from streams.benchmarks.cpu import CpuMeter
from streams.benchmarks.load import Message, producer, send_paced
from streams.events.models import iso
from streams.generate.personas import Generator

HOUR_S = 3600.0
GRACE_S = 5.0
"""After the load, wait for missing migrations until none arrived for this long..."""
MAX_WAIT_S = 60.0
"""...or at most this long."""
LEAD_S = 1.0
"""Time between arming the timers and starting the load."""
_TICK_S = 0.002


@dataclass
class LiveReport:
    """Raw samples of the live phase (milliseconds) and what was sent."""

    sent: int = 0
    send_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    api: list[float] = field(default_factory=list)
    api_errors: int = 0
    api_seconds: float = 0.0
    timers_sent: int = 0
    timer_lateness: list[float] = field(default_factory=list)
    timers_on_arrival: int = 0
    cpu_pct: dict[str, float | None] = field(default_factory=dict)
    """Share of one core each process used while the load ran (see :mod:`.cpu`)."""
    sent_at: dict[str, float] = field(default_factory=dict, repr=False)
    timer_ids: set[str] = field(default_factory=set, repr=False)

    @property
    def events_rate(self) -> float:
        """The input rate achieved."""
        return self.sent / self.send_seconds if self.send_seconds else 0.0

    @property
    def api_rate(self) -> float:
        """Successful lookups per second achieved."""
        return len(self.api) / self.api_seconds if self.api_seconds else 0.0

    @property
    def pending(self) -> bool:
        """Still waiting for a migration (of a latency event or of a timer)?"""
        return bool(self.sent_at or self.timer_ids)


def new_customer_events(count: int, seed: int, prefix: str) -> list[tuple[str, Message]]:
    """``count`` realistic events, each the first of a new customer ``<prefix><i>``."""
    generator = Generator(seed=seed, customers=1000)
    out: list[tuple[str, Message]] = []
    while len(out) < count:
        event = generator.next_event()
        if event["type"] not in ("identify", "page", "track"):
            continue
        event.pop("anonymousId", None)
        cid = f"{prefix}{len(out)}"
        event["userId"] = cid
        mid = str(uuid.uuid4())
        event["messageId"] = mid
        out.append((mid, (cid.encode(), orjson.dumps(event))))
    return out


def timer_event(cid: str, due: float) -> Message:
    """A ``Product Added`` whose ``cart_abandoner`` timer is due at ``due`` (epoch seconds)."""
    event = {
        "type": "track",
        "event": "Product Added",
        "messageId": str(uuid.uuid4()),
        "userId": cid,
        "timestamp": iso(due - HOUR_S),
        "properties": {"product_id": "p1", "price": 19.99, "category": "books", "quantity": 1},
        "context": {"library": {"name": "segmenter-bench", "version": "0.1.0"}},
    }
    return cid.encode(), orjson.dumps(event)


def _ce_time(headers: Any) -> float | None:
    for name, value in headers or ():
        if name == "ce_time":
            text = bytes(value).decode().replace("Z", "+00:00")
            return datetime.fromisoformat(text).astimezone(UTC).timestamp()
    return None


async def _consume(consumer: AIOKafkaConsumer, live: LiveReport) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=100)
        received, wall = time.monotonic(), time.time()
        for records in batch.values():
            for record in records:
                data = orjson.loads(record.value or b"{}")
                trigger = data.get("trigger") or {}
                if trigger.get("kind") == "event":
                    sent = live.sent_at.pop(str(trigger.get("message_id")), None)
                    if sent is not None:
                        live.latencies.append((received - sent) * 1000.0)
                if (
                    data.get("segment") == "cart_abandoner"
                    and data.get("direction") == "entered"
                    and data.get("customer_id") in live.timer_ids
                ):
                    due = _ce_time(record.headers)
                    live.timer_ids.discard(data["customer_id"])
                    if trigger.get("kind") != "time":
                        live.timers_on_arrival += 1
                    elif due is not None:
                        live.timer_lateness.append((wall - due) * 1000.0)


async def _lookup(session: aiohttp.ClientSession, url: str, live: LiveReport) -> None:
    started = time.monotonic()
    try:
        async with session.get(url) as resp:
            await resp.read()
            ok = resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    if ok:
        live.api.append((time.monotonic() - started) * 1000.0)
    else:
        live.api_errors += 1


async def _api_load(port: int, ids: list[str], cfg: BenchConfig, live: LiveReport) -> None:
    base = f"http://127.0.0.1:{port}/v1/customers/"
    urls = [base + quote(cid, safe="") for cid in ids]
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def lookup(n: int) -> None:
            await _lookup(session, urls[n % len(urls)], live)

        live.api_seconds = await open_loop(cfg.api_rate, cfg.seconds, lookup, 15)


async def _arm_timers(
    client: AIOKafkaProducer, infra: Infra, cfg: BenchConfig, live: LiveReport, start: float
) -> float:
    """Send the timer customers' adds; return the last due time (epoch seconds)."""
    count = cfg.timer_customers
    spread = min(3.0, cfg.seconds / 2)
    futures: list[asyncio.Future[Any]] = []
    last_due = start
    for i in range(count):
        cid = f"tmr{infra.run}-{i}"
        last_due = start + cfg.timer_delay_s + spread * i / max(count, 1)
        key, value = timer_event(cid, last_due)
        live.timer_ids.add(cid)
        futures.append(await client.send(infra.input_topic, value=value, key=key))
    await asyncio.gather(*futures)
    live.timers_sent = count
    return last_due


async def _produce(
    client: AIOKafkaProducer, infra: Infra, cfg: BenchConfig, live: LiveReport
) -> None:
    """Send events of new customers at the fixed rate for ``cfg.seconds``."""
    events = new_customer_events(int(cfg.rate * cfg.seconds), cfg.seed + 1, f"lat{infra.run}-")
    live.sent, live.send_seconds = await send_paced(
        client, infra.input_topic, events, cfg.rate, live.sent_at, cfg.seconds
    )


async def _drain(live: LiveReport, reader: asyncio.Task[None], last_due: float) -> None:
    """Wait for the migrations still missing, while they keep arriving."""
    hard = time.monotonic() + MAX_WAIT_S
    seen, idle_since = -1, time.monotonic()
    while live.pending and not reader.done():
        now = time.monotonic()
        count = len(live.latencies) + len(live.timer_lateness) + live.timers_on_arrival
        if count != seen:
            seen, idle_since = count, now
        quiet = now - idle_since > GRACE_S and time.time() > last_due + GRACE_S
        if quiet or now > hard:
            return
        await asyncio.sleep(0.05)


async def run_live(
    infra: Infra,
    cfg: BenchConfig,
    port: int,
    ids: list[str],
    roles: Mapping[str, Iterable[int]] | None = None,
) -> LiveReport:
    """Run (c), (e) and (f) together for ``cfg.seconds``; wait for late migrations after.

    ``roles`` names the run's processes whose CPU use during the load is reported.
    """
    live = LiveReport()
    meter = CpuMeter(roles or {})
    # A short fetch wait: some brokers (Tansu) hold a fetch for most of fetch_max_wait_ms even
    # when data is there, which would add up to the wait to every latency measured here.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=infra.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    client = producer(infra.bootstrap, linger_ms=0)
    await consumer.start()
    await client.start()
    reader: asyncio.Task[None] | None = None
    try:
        partitions = [TopicPartition(infra.migrations_topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)
        reader = asyncio.create_task(_consume(consumer, live))
        say(
            f"(c)(e)(f) live: {cfg.rate:g} events/s of new customers, {cfg.api_rate:g} lookups/s, "
            f"{cfg.timer_customers} timers, for {cfg.seconds:g}s"
        )
        start = time.time() + LEAD_S
        last_due = await _arm_timers(client, infra, cfg, live, start)
        await asyncio.sleep(max(0.0, start - time.time()))
        meter.start()
        api = asyncio.create_task(_api_load(port, ids, cfg, live))
        await _produce(client, infra, cfg, live)
        live.cpu_pct = meter.percent()
        await api
        await _drain(live, reader, last_due)
        if reader.done() and reader.exception() is not None:
            raise BenchError(f"reading the migrations failed: {reader.exception()!r}")
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await client.stop()
        await consumer.stop()
    if live.sent_at or live.timer_ids:
        say(
            f"no migration received for {len(live.sent_at)} of {live.sent} events and "
            f"{len(live.timer_ids)} of {live.timers_sent} timers"
        )
    return live
