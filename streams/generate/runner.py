"""``segmenter generate``: synthetic customers' events onto the input topic, paced to a rate.

The broker is ``SEGMENTER_KAFKA_BOOTSTRAP``; when that is unset and a ``segmenter up`` is running
from the same working directory, the ``kafka_bootstrap`` recorded in its
``.segmenter/stack.json`` (``SEGMENTER_STATE_DIR``) is used instead.

The events are deterministic for a ``--seed``, ``messageId`` included. The worker ignores
events whose ``messageId`` it has seen, so a second run against the same Redis needs another seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.generate.personas import Generator, customer_key
from streams.settings import Settings
from streams.stack.kafka_security import client_kwargs

PROGRESS_EVERY_S = 5.0
_TICK_S = 0.02


def resolve_bootstrap(settings: Settings) -> str | None:
    """The broker to produce to: the configured one, else the running ``up``'s stack.json."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    stack_file = Path(settings.state_dir) / "stack.json"
    try:
        data: Any = orjson.loads(stack_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    bootstrap = data.get("kafka_bootstrap") if isinstance(data, dict) else None
    return bootstrap if isinstance(bootstrap, str) and bootstrap else None


def _error(message: str) -> int:
    print(f"segmenter generate: {message}", file=sys.stderr, flush=True)
    return 1


async def _produce_at_rate(
    producer: Any,
    generator: Generator,
    topic: str,
    rate: float,
    duration: float | None,
    stop: asyncio.Event,
    failures: list[BaseException],
    delivered: Any,
) -> int:
    """Send ``rate`` events a second (stamped now) until ``stop``, a failure, or ``duration``;
    print the rate every few seconds; return how many were sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    start = loop.time()
    last_report, last_sent = start, 0
    while not stop.is_set() and not failures:
        now = loop.time()
        elapsed = now - start
        finished = duration is not None and elapsed >= duration
        if duration is not None:
            elapsed = min(elapsed, duration)
        due = int(rate * elapsed) - sent
        if due > 0:
            stamp = datetime.now(UTC)
            for _ in range(due):
                event = generator.next_event(stamp)
                future = await producer.send(
                    topic, value=orjson.dumps(event), key=customer_key(event).encode()
                )
                future.add_done_callback(delivered)
            sent += due
        if finished:
            break
        if now - last_report >= PROGRESS_EVERY_S:
            current = (sent - last_sent) / (now - last_report)
            print(f"generate: {sent} events sent ({current:.0f} events/s)", flush=True)
            last_report, last_sent = now, sent
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=_TICK_S)
    return sent


async def run_generate(
    settings: Settings,
    rate: float,
    customers: int,
    duration: float | None,
    seed: int,
) -> int:
    """Produce ``rate`` events/s from ``customers`` synthetic customers until stopped.

    Key = customer id, value = the event as JSON. Stops after ``duration`` seconds when given,
    or on SIGINT/SIGTERM; either way it flushes what it produced and returns 0. A missing or
    unreachable broker, or a failed delivery, gives one line on stderr and returns 1.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    if rate <= 0:
        return _error("--rate must be positive")
    if customers < 1:
        return _error("--customers must be at least 1")
    bootstrap = resolve_bootstrap(settings)
    if bootstrap is None:
        return _error(
            "no broker: set SEGMENTER_KAFKA_BOOTSTRAP, or start `segmenter up` in this directory"
        )

    generator = Generator(seed=seed, customers=customers)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=256 * 1024,
        acks=1,
        request_timeout_ms=15_000,
        **client_kwargs(settings),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        with contextlib.suppress(Exception):
            await producer.stop()
        return _error(f"cannot reach the broker at {bootstrap}: {exc}")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    failures: list[BaseException] = []

    def delivered(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None and not failures:
            failures.append(future.exception())  # type: ignore[arg-type]

    print(
        f"generate: {rate:g} events/s from {customers} customers onto {settings.input_topic} "
        f"at {bootstrap}",
        flush=True,
    )
    sent = 0
    try:
        sent = await _produce_at_rate(
            producer, generator, settings.input_topic, rate, duration, stop, failures, delivered
        )
        await producer.flush()
    except KafkaError as exc:
        failures.append(exc)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    if failures:
        return _error(f"delivery to {bootstrap} failed: {failures[0]}")
    print(f"generate: done, {sent} events sent", flush=True)
    return 0


def run_generate_history(
    customers: int, months: float, seed: int, end: str | None, out: str | None
) -> int:
    """``segmenter generate --history``: a shop's history to a JSON-lines file."""
    from streams.generate.history import HistorySpec, write_history

    if not out:
        return _error("--history needs --out FILE")
    if end is None:
        moment = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    else:
        try:
            moment = datetime.fromisoformat(end)
        except ValueError:
            return _error(f"--end: expected an ISO 8601 date or time, got {end!r}")
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        spec = HistorySpec(customers=customers, months=months, end=moment, seed=seed)
    except ValueError as exc:
        return _error(str(exc))
    count = write_history(spec, Path(out))
    print(
        f"{count:,} events of {customers:,} customers, {spec.start.isoformat()} to"
        f" {moment.isoformat()}, written to {out}",
        file=sys.stderr,
    )
    return 0
