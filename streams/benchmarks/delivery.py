"""(h) ``segmenter bench --deliver``: the webhook path against a local receiver.

``count`` synthetic migrations (CloudEvents, as the worker writes them) are produced to a fresh
8-partition topic; one ``segmenter deliver`` child with one webhook destination (batches of up
to 500, signed) sends them to a receiver in the bench process that answers 200 at once and
counts distinct ids. Reported: migrations/s from the first request to the last migration
received, requests and their average size, and the deliverer's CPU time per migration over the
same span. The receiver shares the machine, so the figure is a floor for a remote endpoint's
best case, not a promise for a slow one.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from streams.benchmarks.common import PARTITIONS, BenchError, Infra, delete_run, say
from streams.benchmarks.cpu import cpu_seconds, per_event_us
from streams.benchmarks.load import producer
from streams.pipeline.migrations import Migration, Trigger
from streams.pipeline.outbox import OutboxEntry
from streams.stack.children import Child, settings_env
from streams.stack.topics import ensure_topics

SECRET = "bench-secret"
BATCH = 500


@dataclass(frozen=True)
class DeliveryFigures:
    """What (h) measured."""

    migrations: int
    per_s: float
    requests: int
    cpu_us_per_migration: float | None


def migrations(count: int, customers: int) -> list[OutboxEntry]:
    """``count`` migrations of ``customers`` customers, keyed by customer, in sequence order."""
    out: list[OutboxEntry] = []
    sequences: dict[str, int] = {}
    for n in range(count):
        customer = f"dc{n % customers:06d}"
        sequence = sequences[customer] = sequences.get(customer, 0) + 1
        migration = Migration(
            customer_id=customer,
            segment="high_value",
            direction="entered" if sequence % 2 else "exited",
            family="value_tier",
            from_segment=None,
            to_segment="high_value",
            trigger=Trigger("event", f"m{n}", "Order Completed"),
            reason_rule="lifetime revenue >= 1000",
            reason_values={"revenue": 1200.0},
            rule_version="bench",
            sequence=sequence,
            time=1_700_000_000.0 + n,
        )
        out.append(migration.to_outbox("unused", "urn:segmenter:bench"))
    return out


async def _produce(bootstrap: str, topic: str, entries: list[OutboxEntry]) -> None:
    client = producer(bootstrap)
    await client.start()
    try:
        futures = [
            await client.send(topic, value=e.value, key=e.key, headers=list(e.headers))
            for e in entries
        ]
        await asyncio.gather(*futures)
    finally:
        await client.stop()


class _Receiver:
    """Counts the distinct CloudEvent ids of every accepted batch."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.requests = 0
        self.first: float | None = None
        self.last = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.monotonic()
        self.first = self.first if self.first is not None else now
        self.requests += 1
        self.ids.update(item["id"] for item in body)
        self.last = now
        return web.Response(status=200)


async def _run(infra: Infra, topic: str, count: int, timeout: float) -> DeliveryFigures:
    receiver = _Receiver()
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    directory = Path(tempfile.mkdtemp(prefix="segmenter-bench-deliver-"))
    (directory / "hook.yaml").write_bytes(
        orjson.dumps(
            {
                "id": "bench",
                "type": "webhook",
                "url": f"http://127.0.0.1:{port}/hook",
                "secret_env": "SEGMENTER_BENCH_HOOK_SECRET",
                "start_from": "earliest",
                "batch": {"max_records": BATCH, "linger_ms": 20},
                "rate_limit_per_s": 10_000,
            }
        )
    )
    env = settings_env(
        kafka_bootstrap=infra.bootstrap,
        redis_url=infra.redis_url,
        migrations_topic=topic,
        migrations_partitions=PARTITIONS,
        namespace=f"{infra.namespace}-deliver",
        deliver_group=f"{infra.group_id}-deliver",
        destinations=directory,
        log_level="warning",
    )
    env["SEGMENTER_BENCH_HOOK_SECRET"] = SECRET
    child = Child(["deliver"], env).start()
    try:
        deadline = time.monotonic() + timeout
        while receiver.first is None:
            await _check(child, deadline)
        pid = child.proc.pid if child.proc is not None else 0
        cpu_start = cpu_seconds(pid)
        while len(receiver.ids) < count:
            await _check(child, deadline)
        cpu_end = cpu_seconds(pid)
    finally:
        child.stop()
        await runner.cleanup()
    span = max(receiver.last - (receiver.first or receiver.last), 1e-6)
    used = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    return DeliveryFigures(count, count / span, receiver.requests, per_event_us(used, count))


async def _check(child: Child, deadline: float) -> None:
    if not child.alive():
        raise BenchError(f"the deliverer stopped: {child.log_tail(5)!r}")
    if time.monotonic() > deadline:
        raise BenchError("(h) delivery did not finish in time")
    await asyncio.sleep(0.01)


def run_delivery(infra: Infra, count: int, timeout: float) -> DeliveryFigures:
    """Produce ``count`` migrations, deliver them to a local receiver, and measure."""
    topic = f"{infra.prefix}.deliver.migrations"
    asyncio.run(ensure_topics(infra.bootstrap, {topic: PARTITIONS}))
    asyncio.run(_produce(infra.bootstrap, topic, migrations(count, max(1, count // 4))))
    say(f"(h) delivery: {count} migrations through a webhook to a local receiver")
    try:
        return asyncio.run(_run(infra, topic, count, timeout))
    finally:
        if infra.external:
            dlq = "segmenter.deliver.bench.dlq"
            asyncio.run(delete_run(infra, f"{infra.namespace}-deliver", [topic, dlq]))
