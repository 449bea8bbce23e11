"""(j) Visitor streams: many open SSE connections to ``segmenter api``, and the latency of a
segment change from the event to the browser.

With the worker and the API process of the run still up:

1. ``visitors`` tokens are signed here (the run gave the API its visitor secret) for new
   customers ``vis<run>-<i>``, and as many ``GET /v1/visitor/stream`` connections are opened,
   at most :data:`OPENING` at a time, each counted open once its ``snapshot`` arrived. The client
   is raw asyncio (one :class:`asyncio.Protocol` per connection, no task), so that this process
   is not what limits the count;
2. the API's resident memory is read before and after (``/proc``): the growth per stream, and
   per 1,000 streams; its CPU share is measured over :data:`IDLE_S` (at most ``seconds``)
   with every stream idle;
3. one first event (a page view) of each of ``min(visitors, rate * seconds)`` visitors (new
   customers: each enters a segment) goes to the input topic at ``rate`` (200/s); latency is
   the time from handing the event to the producer to the first ``entered`` event read on
   that visitor's stream. The API's CPU share over the same span is reported too, and per
   1,000 open streams.

Every timestamp is taken in this one process, so no clocks need to agree.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from streams.api.server import raise_file_limit
from streams.api.visitor_tokens import issue
from streams.benchmarks.common import BenchError, Infra, Progress, say
from streams.benchmarks.cpu import CpuMeter
from streams.benchmarks.live import GRACE_S
from streams.benchmarks.load import producer, send_paced

OPENING = 200
"""Connections being opened at once."""
OPEN_TIMEOUT_S = 30.0
IDLE_S = 5.0
SNAPSHOT = b"event: snapshot"
ENTERED = b"event: entered"


@dataclass
class VisitorReport:
    """What (j) measured (latencies in milliseconds, memory in bytes)."""

    visitors: int = 0
    opened: int = 0
    open_seconds: float = 0.0
    sent: int = 0
    send_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss_before: int | None = None
    rss_half: int | None = None
    """The API's resident memory with the first half of the streams open."""
    rss_open: int | None = None
    idle_cpu_pct: float | None = None
    load_cpu_pct: float | None = None

    second_half: int = 0
    """Streams opened after ``rss_half`` was read."""

    @property
    def bytes_per_stream(self) -> float | None:
        """Growth of the API's resident memory per stream of the second half (the first half
        reuses memory the earlier phases freed, which would understate it)."""
        if self.rss_half is None or self.rss_open is None or not self.second_half:
            return None
        return (self.rss_open - self.rss_half) / self.second_half

    def per_thousand(self, value: float | None) -> float | None:
        """``value`` per 1,000 open streams."""
        return None if value is None or not self.opened else value * 1000.0 / self.opened


class StreamClient(asyncio.Protocol):
    """One visitor stream: marks when its snapshot came and when its first ``entered`` did."""

    __slots__ = ("customer", "opened", "report", "sent_at", "tail", "transport")

    def __init__(self, customer: str, sent_at: dict[str, float], report: VisitorReport) -> None:
        self.customer = customer
        self.sent_at = sent_at
        self.report = report
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tail = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        seen = self.tail + data
        self.tail = seen[-len(SNAPSHOT) :]
        if not self.opened.done():
            if SNAPSHOT in seen:
                self.opened.set_result(None)
            elif b" 200 " not in seen and seen.startswith(b"HTTP/"):
                self.opened.set_exception(BenchError(seen[:200].decode(errors="replace")))
        if ENTERED in seen:
            sent = self.sent_at.pop(self.customer, None)
            if sent is not None:
                self.report.latencies.append((time.monotonic() - sent) * 1000.0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"stream closed before its snapshot: {exc!r}"))


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (Linux ``/proc``), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_file_limit(needed: int) -> None:
    """Lift this process's open-file limit to the hard one; fail early when still too low."""
    files = raise_file_limit()
    if files != resource.RLIM_INFINITY and files < needed:
        raise BenchError(f"--visitors needs {needed} open files; the limit is {files} (ulimit -n)")


async def _open(
    port: int, secret: bytes, customers: list[str], sent_at: dict[str, float], report: VisitorReport
) -> list[StreamClient]:
    """Open a stream per customer, :data:`OPENING` at a time; the open ones."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPENING)
    progress = Progress("visitor streams open", len(customers))
    now = int(time.time())
    clients: list[StreamClient] = []

    async def one(customer: str) -> None:
        token = issue(secret, customer, now, 3600)
        request = (
            f"GET /v1/visitor/stream?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        async with gate:
            _, client = await loop.create_connection(
                lambda: StreamClient(customer, sent_at, report), "127.0.0.1", port
            )
            assert isinstance(client.transport, asyncio.WriteTransport)
            client.transport.write(request)
            await asyncio.wait_for(client.opened, OPEN_TIMEOUT_S)
        clients.append(client)
        progress.update(len(clients))

    results = await asyncio.gather(*(one(c) for c in customers), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        say(f"(j) {len(failures)} streams did not open: {failures[0]!r}")
    return clients


def _first_event(customer: str) -> bytes:
    """A page view of a new customer: it enters a segment (at least ``prospect``)."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(
        {
            "type": "page",
            "name": "Home",
            "messageId": str(uuid.uuid4()),
            "userId": customer,
            "timestamp": stamp,
            "properties": {"path": "/", "title": "Home"},
        }
    )


async def _produce(
    infra: Infra, sample: list[str], rate: float, sent_at: dict[str, float], report: VisitorReport
) -> None:
    """The first event of each sampled visitor, at ``rate`` per second."""
    events = [(customer, (customer.encode(), _first_event(customer))) for customer in sample]
    client = producer(infra.bootstrap, linger_ms=0)
    await client.start()
    try:
        report.sent, report.send_seconds = await send_paced(
            client, infra.input_topic, events, rate, sent_at
        )
    finally:
        await client.stop()


async def _drain(sent_at: dict[str, float], report: VisitorReport) -> None:
    """Wait for the stream events still missing, while they keep arriving."""
    seen, idle_since = -1, time.monotonic()
    while sent_at and time.monotonic() - idle_since < GRACE_S:
        if len(report.latencies) != seen:
            seen, idle_since = len(report.latencies), time.monotonic()
        await asyncio.sleep(0.05)


async def _cpu_share(pid: int, work: Awaitable[None]) -> float | None:
    """The share of one core process ``pid`` used while ``work`` ran."""
    meter = CpuMeter({"api": [pid]})
    meter.start()
    await work
    return meter.percent()["api"]


async def run_visitors(
    infra: Infra, port: int, api_pid: int, secret: bytes, count: int, rate: float, seconds: float
) -> VisitorReport:
    """(j): ``count`` open streams on the API at ``port``; first events of
    ``min(count, rate * seconds)`` of their visitors at ``rate``."""
    check_file_limit(count + 256)
    report = VisitorReport(visitors=count)
    customers = [f"vis{infra.run}-{i}" for i in range(count)]
    sent_at: dict[str, float] = {}
    report.rss_before = rss_bytes(api_pid)
    say(f"(j) visitors: opening {count} streams")
    started = time.monotonic()
    half = count // 2
    clients = await _open(port, secret, customers[:half], sent_at, report)
    try:
        report.rss_half = rss_bytes(api_pid)
        more = await _open(port, secret, customers[half:], sent_at, report)
        clients += more
        report.second_half = len(more)
        report.open_seconds = time.monotonic() - started
        report.opened = len(clients)
        if not clients:
            raise BenchError("(j) no visitor stream could be opened")
        report.rss_open = rss_bytes(api_pid)
        report.idle_cpu_pct = await _cpu_share(api_pid, asyncio.sleep(min(IDLE_S, seconds)))
        sample = [c.customer for c in clients][: max(1, int(rate * seconds))]
        say(f"(j) {report.opened} streams open; first events of {len(sample)} at {rate:g}/s")
        report.load_cpu_pct = await _cpu_share(
            api_pid, _produce(infra, sample, rate, sent_at, report)
        )
        await _drain(sent_at, report)
        if sent_at:
            say(f"(j) no stream event for {len(sent_at)} of {report.sent} events")
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    return report
