"""Infrastructure failures: Redis unreachable, the broker unreachable (each a dedicated server).

What happens (checked below):

* Redis down for a few seconds: the worker retries with backoff, logging one line per retry
  (``infrastructure error (attempt n/8): ...``; the event batch and the timer tick retry, and
  count, separately), ``/healthz`` answers 503 while Redis is down,
  and once Redis is back every event produced during the outage is applied.
* Redis down longer than the retry budget (about 21 s; these tests shorten it to about 6 s with
  ``SEGMENTER_RETRY_MAX_DELAY_S=1``): the worker logs ``giving up`` and exits
  with code 75 (EX_TEMPFAIL) without acknowledging; a restarted worker applies everything.
  A worker started while Redis is down retries its start the same way, then exits 75.
* The broker down (memory-only Tansu: topics and data are gone when it returns): the worker
  stays up (aiokafka keeps reconnecting, logging errors several times a second), rejoins the
  group when the broker is back, and processes new input once the topics exist again.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from streams.pipeline.routing import partition_for
from streams.settings import Settings
from streams.stack.children import Child
from streams.stack.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from tests.integration.harness import (
    Deployment,
    consume_until,
    keyed,
    order,
    produce,
    write_rules,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

RETRY_LINE = re.compile(r"infrastructure error \(attempt (\d+)/(\d+)\): \S")


SHORT_BUDGET = {"retry_max_delay_s": 1.0}
"""The same 8 tries, waiting at most 1 s between them (5 s by default): for the tests that wait
for the budget to run out (about 6 s instead of 21 s)."""


def start_worker(
    deployment: Deployment, port: int, tmpdir: Path | None = None, **extra: object
) -> Child:
    env = deployment.env(**extra)
    env["SEGMENTER_HTTP_PORT"] = str(port)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return Child(["worker"], env).start()


async def health(port: int) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status
    except (TimeoutError, aiohttp.ClientError):
        return None


async def wait_health(port: int, status: int, worker: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await health(port)
        if seen == status:
            return
        assert worker.alive(), worker.log_tail()
        await asyncio.sleep(0.2)
    raise AssertionError(f"/healthz stayed {seen}, expected {status}\n{worker.log_tail()}")


def customers_in(records: list) -> set[str]:  # type: ignore[type-arg]
    return {orjson.loads(r.value)["customer_id"] for r in records}


def retry_lines(worker: Child) -> list[tuple[int, int]]:
    text = worker.log_path.read_text(errors="replace")
    return [(int(m.group(1)), int(m.group(2))) for m in RETRY_LINE.finditer(text)]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = EmbeddedRedis(appendonly=True, workdir=workdir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_deployment(
    kafka_bootstrap: str, own_redis: EmbeddedRedis, topic_prefix: str, tmp_path: Path
) -> Deployment:
    rules = write_rules(tmp_path / "rules")
    return Deployment(kafka_bootstrap, own_redis.url, topic_prefix, rules, partitions=2)


async def test_redis_outage_is_retried_reported_and_recovered(
    redis_deployment: Deployment, own_redis: EmbeddedRedis
) -> None:
    d = redis_deployment
    await d.create_topics()
    port = free_port()
    worker = start_worker(d, port)
    try:
        await produce(
            d.kafka, d.input, keyed([order(f"b{i}", f"before{i}", 10.0) for i in range(5)])
        )
        await consume_until(d.kafka, d.migrations, lambda r: len(r) >= 5, worker=worker)
        await wait_health(port, 200, worker)

        own_redis.stop()  # the same port and directory come back below
        during = [order(f"d{i}", f"during{i}", 10.0) for i in range(5)]
        await produce(d.kafka, d.input, keyed(during))
        await wait_health(port, 503, worker, timeout=15)
        deadline = time.monotonic() + 15
        while len(retry_lines(worker)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        lines = retry_lines(worker)
        assert len(lines) >= 3, worker.log_tail()
        assert worker.alive()

        own_redis.start()
        got = await consume_until(
            d.kafka,
            d.migrations,
            lambda r: {f"during{i}" for i in range(5)} <= customers_in(r),
            worker=worker,
            timeout=60,
        )
        assert {f"before{i}" for i in range(5)} | {f"during{i}" for i in range(5)} <= customers_in(
            got
        )
        await wait_health(port, 200, worker, timeout=30)
        # one line per retry; each caller (event batch, timer tick) counts its own attempts
        assert all(total == lines[0][1] for _, total in lines)
        assert lines[0][0] == 1 and max(n for n, _ in lines) >= 2
        text = worker.log_path.read_text(errors="replace")
        assert "Traceback" not in text, worker.log_tail(60)
    finally:
        worker.stop()


async def test_a_long_redis_outage_exits_75_and_a_restart_loses_nothing(
    redis_deployment: Deployment, own_redis: EmbeddedRedis
) -> None:
    d = redis_deployment
    await d.create_topics()
    scratch = Path(tempfile.mkdtemp(prefix="segmenter-test-tmp-"))
    worker = start_worker(d, free_port(), scratch, **SHORT_BUDGET)
    try:
        await produce(d.kafka, d.input, keyed([order("b0", "early", 10.0)]))
        await consume_until(d.kafka, d.migrations, lambda r: len(r) >= 1, worker=worker)
        own_redis.stop()
        await produce(d.kafka, d.input, keyed([order(f"l{i}", f"late{i}", 10.0) for i in range(4)]))
        assert worker.proc is not None
        code = await asyncio.to_thread(worker.proc.wait, 60)
        assert code == 75, worker.log_tail()
        assert "giving up after 8 attempts" in worker.log_tail(40)
        left = list(scratch.glob("segmenter-faust-*"))
        assert not left, f"the exit left the worker's temp directory behind: {left}"
        own_redis.start()
        worker = start_worker(d, free_port())
        got = await consume_until(
            d.kafka,
            d.migrations,
            lambda r: {f"late{i}" for i in range(4)} <= customers_in(r),
            worker=worker,
            timeout=60,
        )
        assert "early" in customers_in(got)
    finally:
        worker.stop()


async def test_a_worker_started_while_redis_is_down_retries_or_exits_75(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    d = Deployment(kafka_bootstrap, dead, topic_prefix, write_rules(tmp_path / "rules"), 2)
    await d.create_topics()
    worker = start_worker(d, free_port(), **SHORT_BUDGET)
    try:
        assert worker.proc is not None
        code = await asyncio.to_thread(worker.proc.wait, 60)
        assert code == 75, worker.log_tail()
        text = worker.log_path.read_text(errors="replace")
        attempts = re.findall(r"\(attempt (\d+)/(\d+)\)", text)
        budget = Settings().retry_attempts  # the default, as the worker has it
        assert attempts == [(str(n), str(budget)) for n in range(1, budget + 1)], worker.log_tail()
    finally:
        worker.kill()


# -- the broker ------------------------------------------------------------------------------------


class BrokerOutage:
    """One run: events, broker stopped, restarted empty, topics recreated, new events."""

    def __init__(self, redis_url: str, prefix: str, rules: Path) -> None:
        self.broker = EmbeddedBroker()
        self.redis_url = redis_url
        self.prefix = prefix
        self.rules = rules
        self.alive_during: bool | None = None
        self.exit_code: int | None = None
        self.restarted_worker = False
        self.new_customers: set[str] = set()
        self.skippable: set[str] = set()
        self.applied_after: set[str] = set()
        self.log = ""

    async def run(self) -> None:
        self.broker.start()
        d = Deployment(self.broker.bootstrap, self.redis_url, self.prefix, self.rules, 2)
        await d.create_topics()
        worker = d.worker()
        try:
            await produce(
                d.kafka, d.input, keyed([order(f"o{i}", f"old{i}", 10.0) for i in range(4)])
            )
            await consume_until(d.kafka, d.migrations, lambda r: len(r) >= 4, worker=worker)
            old_per_partition: dict[int, int] = {}
            for i in range(4):
                p = partition_for(f"old{i}".encode(), 2)
                old_per_partition[p] = old_per_partition.get(p, 0) + 1
            self.broker.stop()
            for _ in range(10):
                await asyncio.sleep(1)
                if not worker.alive():
                    break
            self.alive_during = worker.alive()
            self.broker.start()  # same port; memory-only, so empty
            # the worker rejoins its group before the topics exist again (as in production,
            # where they are recreated by whoever runs the broker): it must notice them later
            await asyncio.sleep(3)
            await d.create_topics()
            if not worker.alive():
                assert worker.proc is not None
                self.exit_code = worker.proc.returncode
                worker = d.worker()
                self.restarted_worker = True
            new = [order(f"n{i}", f"new{i}", 10.0) for i in range(12)]
            seen: dict[int, int] = {}
            for doc in new:
                cid = str(doc["userId"])
                p = partition_for(cid.encode(), 2)
                if seen.get(p, 0) < old_per_partition.get(p, 0):
                    self.skippable.add(cid)  # its offset was already applied before the restart
                seen[p] = seen.get(p, 0) + 1
                self.new_customers.add(cid)
            await produce(d.kafka, d.input, keyed(new))
            want = self.new_customers - self.skippable
            got = await consume_until(
                d.kafka,
                d.migrations,
                lambda r: want <= customers_in(r),
                worker=worker,
                timeout=90,
                settle=3.0,
            )
            self.applied_after = customers_in(got)
            self.log = worker.log_path.read_text(errors="replace")
        finally:
            worker.stop()
            self.broker.stop()


@pytest.fixture(scope="module")
def broker_outage(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> BrokerOutage:
    rules = write_rules(tmp_path_factory.mktemp("rules"))
    outage = BrokerOutage(redis_url, f"t{time.time_ns() % 10**10}", rules)
    asyncio.run(outage.run())
    return outage


def test_the_worker_survives_a_broker_restart_and_processes_new_input(
    broker_outage: BrokerOutage,
) -> None:
    outage = broker_outage
    # docs/reliability.md: the worker stays up while the broker is gone, and rejoins
    assert outage.alive_during and not outage.restarted_worker, outage.log[-3000:]
    assert outage.new_customers - outage.skippable <= outage.applied_after


@pytest.mark.xfail(
    strict=True,
    reason="known limitation (docs/reliability.md): when the input topic is recreated (a "
    "memory-only broker restart) its offsets start at 0 again and records up to the offsets "
    "stored in Redis are skipped as redeliveries; a recreated topic cannot be told apart "
    "reliably (Tansu under-reports end offsets), so the namespace must be reset with the topic",
)
def test_no_input_is_skipped_after_the_topic_is_recreated(broker_outage: BrokerOutage) -> None:
    outage = broker_outage
    assert outage.skippable, "the scenario must reuse offsets"
    assert outage.new_customers <= outage.applied_after
