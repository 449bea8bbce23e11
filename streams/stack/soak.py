"""``segmenter soak --minutes N``: the embedded stack under steady synthetic traffic, sampled.

Starts what ``segmenter up`` starts (the embedded broker, a scratch Redis, the topics, one worker,
the API and the generator at ``--rate`` events/s), then every ``--sample-s`` seconds reads from
``/proc`` the CPU (percent of one core over the interval) and resident memory of the broker,
the worker and the API, and how many records the broker holds. It prints one line a sample and,
at the end, the comparison that matters for a stack left running: the broker's CPU in the last
sample against its mean over the first five minutes (or the first fifth of the run when it is
shorter), and its memory at the start and at the end (``--json``: one object).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.benchmarks.cpu import cpu_seconds
from streams.settings import Settings
from streams.stack.embedded import StackError, free_port
from streams.stack.supervise import Child, StopFlag, Stopped, Supervisor
from streams.stack.topics import topic_layout
from streams.stack.up import (
    API_COMMAND,
    WORKER_COMMAND,
    Infrastructure,
    child_env,
    create_topics,
    generator_command,
    http_base_url,
    wait_for_health,
    with_visitor_secret,
)


@dataclass(frozen=True)
class Sample:
    """One interval of the soak."""

    minute: float
    broker_cpu_pct: float
    broker_rss_mb: float
    worker_cpu_pct: float
    api_cpu_pct: float
    records_held: int


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def records_held(bootstrap: str, topics: list[str]) -> int:
    """How many records the broker holds in ``topics`` (the sum of their end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            await consumer.force_metadata_update()
            tps = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        ends = await consumer.end_offsets(tps) if tps else {}
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


class Meter:
    """CPU percent of one process between two readings."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid) or 0.0
        self.at = time.monotonic()

    def percent(self) -> float:
        """CPU used since the last call, as a percent of one core."""
        cpu, at = cpu_seconds(self.pid) or self.cpu, time.monotonic()
        used = 100.0 * (cpu - self.cpu) / max(at - self.at, 1e-9)
        self.cpu, self.at = cpu, at
        return round(used, 2)


def summary(samples: list[Sample]) -> dict[str, Any]:
    """The soak's verdict: the broker's CPU at the end against its first five minutes."""
    if not samples:
        return {"samples": []}
    first = [s for s in samples if s.minute <= 5.0] or samples[:1]
    if len(first) == len(samples) and len(samples) > 1:
        first = samples[: max(1, len(samples) // 5)]
    early = sum(s.broker_cpu_pct for s in first) / len(first)
    last = samples[-1]
    return {
        "samples": [asdict(s) for s in samples],
        "broker_cpu_first_pct": round(early, 2),
        "broker_cpu_last_pct": last.broker_cpu_pct,
        "broker_cpu_ratio": round(last.broker_cpu_pct / early, 3) if early > 0 else None,
        "broker_rss_mb_first": round(samples[0].broker_rss_mb, 1),
        "broker_rss_mb_last": round(last.broker_rss_mb, 1),
        "records_held_last": last.records_held,
    }


def _start(settings: Settings, infra: Infrastructure, supervisor: Supervisor, rate: float) -> None:
    stop = StopFlag()
    create_topics(settings, infra.kafka_bootstrap)
    worker_port = free_port(settings.http_host)
    env = child_env(settings, infra, worker_port)
    supervisor.add(Child("worker", list(WORKER_COMMAND), env))
    wait_for_health(f"{http_base_url(settings, worker_port)}/healthz", supervisor, stop)
    api_port = free_port(settings.http_host)
    supervisor.add(Child("api", list(API_COMMAND), child_env(settings, infra, api_port)))
    wait_for_health(f"{http_base_url(settings, api_port)}/healthz", supervisor, stop, what="API")
    argv = generator_command(rate, 1000)
    supervisor.add(Child("generator", argv, env, restart_on_success=False))


def _measure(
    settings: Settings, infra: Infrastructure, supervisor: Supervisor, minutes: float, every: float
) -> list[Sample]:
    assert infra.broker is not None and infra.broker.proc is not None
    broker = infra.broker.proc.pid
    pid = {c.name: c.proc.pid for c in supervisor.children if c.proc is not None}
    meters = {name: Meter(p) for name, p in [("broker", broker), *pid.items()]}
    topics = list(topic_layout(settings))
    started, samples = time.monotonic(), []
    stop = StopFlag()
    stop.install()
    try:
        while time.monotonic() - started < minutes * 60:
            stop.sleep(min(every, minutes * 60 - (time.monotonic() - started)))
            supervisor.poll()
            sample = Sample(
                minute=round((time.monotonic() - started) / 60, 2),
                broker_cpu_pct=meters["broker"].percent(),
                broker_rss_mb=round(rss_mb(broker), 1),
                worker_cpu_pct=meters["worker"].percent(),
                api_cpu_pct=meters["api"].percent(),
                records_held=asyncio.run(records_held(infra.kafka_bootstrap, topics)),
            )
            samples.append(sample)
            print(f"soak: {orjson.dumps(asdict(sample)).decode()}", file=sys.stderr, flush=True)
    except Stopped:
        print("soak: stopped early", file=sys.stderr, flush=True)
    finally:
        stop.restore()
    return samples


def run_soak(settings: Settings, minutes: float, rate: float, every: float, as_json: bool) -> int:
    """Run the soak; 0 when it ran, 1 when the stack would not start."""
    if settings.kafka_bootstrap:
        print(
            "segmenter soak: it measures the embedded broker; unset SEGMENTER_KAFKA_BOOTSTRAP",
            file=sys.stderr,
        )
        return 2
    settings = with_visitor_secret(settings)
    infra, supervisor = Infrastructure(), Supervisor()
    try:
        infra.start(settings)
        _start(settings, infra, supervisor, rate)
        result = summary(_measure(settings, infra, supervisor, minutes, every))
    except (StackError, OSError) as exc:
        print(f"segmenter soak: {exc}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop_all()
        infra.stop()
    if as_json:
        print(orjson.dumps(result).decode())
    else:
        for key, value in result.items():
            if key != "samples":
                print(f"{key:>22}  {value}")
    return 0
