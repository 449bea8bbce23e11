"""(k) ``segmenter bench --collect``: the HTTP collector of one ``segmenter api`` process.

One ``segmenter api`` child (write key :data:`WRITE_KEY`) produces to a fresh 8-partition topic
that nothing reads, so no worker competes for the CPU. The bench process is the client, over
keep-alive connections, with the synthetic events in ``POST /v1/batch`` bodies of
:data:`BATCH` events (pre-encoded, as a library sends them, with HTTP Basic):

1. throughput: every event, :data:`CONCURRENCY` requests in flight at a time (closed loop).
   Reported: events/s accepted (200 answers) from the first request to the last answer, and
   the API process's CPU time per accepted event over the same span;
2. latency: for ``seconds`` seconds, batches on schedule at half the rate measured in 1 (open
   loop: a slow answer does not delay the next request). Reported: p50 and p99 of the time
   from sending a request to its answer, and the rate achieved.

Every answer is a 200 only once the broker acknowledged all of the batch's events (acks=all),
so both figures include the produce round trip. The broker shares the machine.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from streams.benchmarks.common import (
    PARTITIONS,
    BenchConfig,
    BenchError,
    Infra,
    delete_run,
    open_loop,
    percentile,
    say,
)
from streams.benchmarks.cpu import CpuMeter, per_event_us
from streams.benchmarks.load import Message, synthetic
from streams.benchmarks.segmenter import start_worker, wait_http
from streams.events.models import iso
from streams.stack.topics import ensure_topics

WRITE_KEY = "bench-write-key"
BATCH = 100
CONCURRENCY = 8


@dataclass
class CollectFigures:
    """What (k) measured."""

    events: int = 0
    events_per_s: float = 0.0
    cpu_us_per_event: float | None = None
    errors: int = 0
    latency_rate: float = 0.0
    latencies: list[float] = field(default_factory=list)
    """Milliseconds per request of the latency phase."""
    cpu_pct: dict[str, float | None] = field(default_factory=dict)
    """Share of one core each process used during the latency phase."""

    @property
    def p50_ms(self) -> float | None:
        """Median request latency at half the throughput."""
        return percentile(self.latencies, 50)

    @property
    def p99_ms(self) -> float | None:
        """99th percentile request latency at half the throughput."""
        return percentile(self.latencies, 99)


def batch_bodies(messages: Sequence[Message], size: int = BATCH) -> list[bytes]:
    """The events as ``/v1/batch`` bodies of ``size`` events each (the last may be shorter)."""
    sent_at = iso(time.time()).encode()
    return [
        b'{"batch":['
        + b",".join(value for _key, value in messages[start : start + size])
        + b'],"sentAt":"'
        + sent_at
        + b'"}'
        for start in range(0, len(messages), size)
    ]


def _headers() -> dict[str, str]:
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    try:
        async with session.post(url, data=body) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _throughput(
    session: aiohttp.ClientSession, url: str, bodies: list[bytes], figures: CollectFigures
) -> float:
    """Send every body, ``CONCURRENCY`` at a time; return the elapsed seconds."""
    queue = list(reversed(bodies))
    sizes = {id(body): body.count(b'"messageId"') for body in bodies}

    async def client() -> None:
        while queue:
            body = queue.pop()
            if await _post(session, url, body):
                figures.events += sizes[id(body)]
            else:
                figures.errors += 1

    start = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return time.monotonic() - start


async def _timed(session: aiohttp.ClientSession, url: str, body: bytes, out: list[float]) -> None:
    started = time.monotonic()
    if await _post(session, url, body):
        out.append((time.monotonic() - started) * 1000.0)


async def _latency(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    batches_per_s: float,
    seconds: float,
    figures: CollectFigures,
) -> None:
    """Open loop: one batch every ``1 / batches_per_s`` seconds for ``seconds``."""

    async def request(n: int) -> None:
        await _timed(session, url, bodies[n % len(bodies)], figures.latencies)

    elapsed = await open_loop(batches_per_s, seconds, request, 30)
    figures.latency_rate = len(figures.latencies) * BATCH / max(elapsed, 1e-6)


async def _measure(
    port: int, roles: dict[str, list[int]], bodies: list[bytes], cfg: BenchConfig
) -> CollectFigures:
    url = f"http://127.0.0.1:{port}/v1/batch"
    figures = CollectFigures()
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=_headers()
    ) as session:
        # warm the connections and the producer's metadata
        await asyncio.gather(*(_post(session, url, body) for body in bodies[:CONCURRENCY]))
        meter = CpuMeter({"api": roles["api"]})
        meter.start()
        elapsed = await _throughput(session, url, bodies[CONCURRENCY:], figures)
        figures.events_per_s = figures.events / max(elapsed, 1e-6)
        figures.cpu_us_per_event = per_event_us(meter.used()["api"], figures.events)
        say(
            f"(k) collector: {figures.events} events in {elapsed:.1f}s = "
            f"{figures.events_per_s:.0f} events/s ({figures.errors} failed requests)"
        )
        if figures.events_per_s <= 0:
            raise BenchError("the collector accepted no event")
        half = figures.events_per_s / 2 / BATCH
        say(f"(k) collector latency: {half * BATCH:.0f} events/s for {cfg.seconds:g}s")
        meter = CpuMeter(roles)
        meter.start()
        await _latency(session, url, bodies, half, cfg.seconds, figures)
        figures.cpu_pct = meter.percent()
    return figures


def run_collect(infra: Infra, cfg: BenchConfig) -> CollectFigures:
    """Start the collector's API process, measure (k), stop it."""
    topic = f"{infra.prefix}.collect.events"
    asyncio.run(ensure_topics(infra.bootstrap, {topic: PARTITIONS}))
    messages = synthetic(cfg.events, cfg.customers, cfg.seed + 2)
    bodies = batch_bodies(messages)
    del messages
    child, port = start_worker(infra, "api", input_topic=topic, write_keys=WRITE_KEY)
    try:
        asyncio.run(wait_http(port, child))
        roles = {"api": [child.proc.pid] if child.proc is not None else []}
        if infra.broker is not None and infra.broker.proc is not None:
            roles["broker"] = [infra.broker.proc.pid]
        figures = asyncio.run(_measure(port, roles, bodies, cfg))
        if not child.alive():
            raise BenchError(f"the collector's API process stopped: {child.log_tail(5)!r}")
        return figures
    finally:
        child.stop()
        if infra.external:
            asyncio.run(delete_run(infra, f"{infra.namespace}-collect", [topic]))
