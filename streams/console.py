"""``segmenter send`` and ``segmenter tail``: the input and output topics from a terminal.

They need no Kafka tool of their own (Debian 12's ``kcat`` cannot talk to the embedded broker)
and find a running ``segmenter up`` through ``.segmenter/stack.json``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.events.decode import DecodeFailure
from streams.events.intake import prepare
from streams.pipeline.migrations import structured
from streams.settings import Settings
from streams.stack.discovery import broker_lock, with_running_stack
from streams.stack.kafka_security import client_kwargs


def _err(command: str, text: str) -> None:
    print(f"segmenter {command}: {text}", file=sys.stderr, flush=True)


def _bootstrap(settings: Settings, command: str) -> Settings | None:
    settings = with_running_stack(settings)
    if not settings.kafka_bootstrap:
        _err(command, "set SEGMENTER_KAFKA_BOOTSTRAP or run it beside `segmenter up`")
        return None
    return settings


def parse_events(texts: Iterable[str], max_bytes: int) -> Iterator[tuple[bytes, bytes] | str]:
    """Each non-blank text as (key, value) ready to send, or an error message."""
    for number, text in enumerate(texts, 1):
        if not text.strip():
            continue
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield f"event {number}: not JSON: {exc}"
            continue
        if not isinstance(raw, dict):
            yield f"event {number}: expected a JSON object"
            continue
        prepared = prepare(raw, max_bytes)
        if isinstance(prepared, DecodeFailure):
            yield f"event {number}: {prepared.message}"
            continue
        yield prepared.key, prepared.value


async def _send(settings: Settings, events: list[tuple[bytes, bytes]]) -> None:
    assert settings.kafka_bootstrap is not None
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **client_kwargs(settings)
    )
    await producer.start()
    try:
        for key, value in events:
            meta = await producer.send_and_wait(settings.input_topic, value=value, key=key)
            message_id = orjson.loads(value)["messageId"]
            print(
                f"sent {message_id} ({key.decode()}) to {meta.topic}[{meta.partition}]"
                f" at offset {meta.offset}",
                flush=True,
            )
    finally:
        await producer.stop()


def run_send(settings: Settings, event: str | None, stdin: TextIO = sys.stdin) -> int:
    """``segmenter send [JSON]``: 0 when every event was sent, 1 on invalid input, 2 unset."""
    ready = _bootstrap(settings, "send")
    if ready is None:
        return 2
    texts = [event] if event not in (None, "-") else stdin.read().splitlines()
    parsed = list(parse_events([t for t in texts if t is not None], ready.max_event_bytes))
    problems = [p for p in parsed if isinstance(p, str)]
    if problems:
        for problem in problems:
            _err("send", problem)
        _err("send", "nothing sent")
        return 1
    events = [p for p in parsed if not isinstance(p, str)]
    if not events:
        _err("send", "no event given (pass JSON as an argument or on stdin)")
        return 1
    with broker_lock(settings):
        asyncio.run(_send(ready, events))
    return 0


@dataclass(frozen=True)
class TailFilter:
    """Which migrations ``tail`` prints."""

    segments: frozenset[str] = frozenset()
    customers: frozenset[str] = frozenset()

    def keeps(self, data: dict[str, Any]) -> bool:
        """True when the migration passes the filter."""
        if self.segments and data.get("segment") not in self.segments:
            return False
        return not self.customers or data.get("customer_id") in self.customers


def readable(event: dict[str, Any]) -> str:
    """One migration as a line of text."""
    data = event["data"]
    arrow = "+" if data.get("direction") == "entered" else "-"
    trigger = data.get("trigger") or {}
    cause = str(trigger.get("kind"))
    if trigger.get("event"):
        cause += f": {trigger['event']}"
    moved = ""
    if data.get("from_segment") or data.get("to_segment"):
        moved = f"  ({data.get('from_segment') or '-'} -> {data.get('to_segment') or '-'})"
    reason = data.get("reason") or {}
    values = ", ".join(f"{k}={v}" for k, v in (reason.get("values") or {}).items())
    return (
        f"{event.get('time', '?')}  {data.get('customer_id')}  {arrow}{data.get('segment')}"
        f"  #{data.get('sequence')}  [{cause}]{moved}  {reason.get('rule', '')}"
        + (f"  {{{values}}}" if values else "")
    )


async def _tail(
    settings: Settings,
    wanted: TailFilter,
    as_json: bool,
    from_beginning: bool,
    count: int | None,
    idle_exit_s: float | None,
) -> int:
    assert settings.kafka_bootstrap is not None
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **client_kwargs(settings),
    )
    await consumer.start()
    printed = 0
    try:
        partitions = consumer.partitions_for_topic(settings.migrations_topic)
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(settings.migrations_topic) or set()
        if not partitions:
            _err("tail", f"topic {settings.migrations_topic} does not exist (yet)")
            return 1
        tps = [TopicPartition(settings.migrations_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        idle_since = asyncio.get_running_loop().time()
        while count is None or printed < count:
            got = await consumer.getmany(timeout_ms=500)
            now = asyncio.get_running_loop().time()
            if not got and idle_exit_s is not None and now - idle_since > idle_exit_s:
                break
            for messages in got.values():
                idle_since = now
                for m in messages:
                    event = structured(list(m.headers or ()), m.value)
                    if not wanted.keeps(event["data"]):
                        continue
                    line = orjson.dumps(event).decode() if as_json else readable(event)
                    print(line, flush=True)
                    printed += 1
                    if count is not None and printed >= count:
                        break
                if count is not None and printed >= count:
                    break
    finally:
        await consumer.stop()
    return 0


def run_tail(
    settings: Settings,
    segments: list[str],
    customers: list[str],
    as_json: bool = False,
    from_beginning: bool = False,
    count: int | None = None,
    idle_exit_s: float | None = None,
) -> int:
    """``segmenter tail``: print migrations until Ctrl-C (or ``count``, or ``idle_exit_s``)."""
    ready = _bootstrap(settings, "tail")
    if ready is None:
        return 2
    wanted = TailFilter(frozenset(segments), frozenset(customers))
    try:
        return asyncio.run(_tail(ready, wanted, as_json, from_beginning, count, idle_exit_s))
    except KeyboardInterrupt:
        return 0
