"""faust's adapter (streams.pipeline.faust_consumer): the queue between faust's consumer and
the batch loop, greedy batches cleared by rebalances."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust

from streams.pipeline.faust_consumer import DirectInput, FaustConsumer, to_record


def _app() -> Any:
    """An app whose flow is on, as it is once the worker holds partitions."""
    app = faust.App("direct-input-test", broker="memory://", web_enabled=False)
    app.flow_control.resume()
    return app


def _message(offset: int, partition: int = 0) -> Any:
    return SimpleNamespace(
        topic="in",
        partition=partition,
        offset=offset,
        key=b"k",
        value=b"{}",
        headers=[("h", b"1")],
    )


async def _take_after(direct: DirectInput, delays: list[float], **kwargs: Any) -> list[int]:
    async def feed() -> None:
        for offset, delay in enumerate(delays):
            await asyncio.sleep(delay)
            await direct.put(_message(offset))

    feeder = asyncio.create_task(feed())
    batch = await direct.take(**kwargs)
    await feeder
    return [m.offset for m in batch]


def test_a_batch_is_what_is_queued_up_to_the_maximum() -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        direct = DirectInput(_app(), "in", maxsize=100)
        for offset in range(7):
            direct.put_nowait(_message(offset))
        first = [m.offset for m in await direct.take(5)]
        second = [m.offset for m in await direct.take(5)]
        return first, second, direct.queue.qsize()

    first, second, left = asyncio.run(scenario())
    assert first == [0, 1, 2, 3, 4]
    assert second == [5, 6]
    assert left == 0


def test_take_waits_for_the_first_record_and_not_for_more_by_default() -> None:
    direct = DirectInput(_app(), "in", maxsize=100)
    got = asyncio.run(_take_after(direct, [0.05, 0.2], max_records=10))
    assert got == [0]


def test_within_waits_for_a_fuller_batch_but_no_longer() -> None:
    direct = DirectInput(_app(), "in", maxsize=100)
    got = asyncio.run(_take_after(direct, [0.0, 0.02, 0.02, 0.5], max_records=10, within=0.2))
    assert got == [0, 1, 2]


def test_a_rebalance_clears_what_is_queued() -> None:
    async def scenario() -> int:
        app = _app()
        direct = DirectInput(app, "in", maxsize=100)
        for offset in range(3):
            direct.put_nowait(_message(offset))
        app.flow_control.suspend()
        app.flow_control.clear()
        return int(direct.queue.qsize())

    assert asyncio.run(scenario()) == 0


def test_full_reports_a_queue_without_room() -> None:
    direct = DirectInput(_app(), "in", maxsize=2)
    direct.put_nowait(_message(0))
    assert not direct.full()
    direct.put_nowait(_message(1))
    assert direct.full()


def test_a_message_becomes_the_processors_record() -> None:
    record = to_record(_message(41, partition=3))
    assert (record.topic, record.partition, record.offset) == ("in", 3, 41)
    assert (record.key, record.value, record.headers) == (b"k", b"{}", (("h", b"1"),))


class _FaustConsumer:
    """faust's consumer as the adapter uses it: tracking, acks and the assignment."""

    def __init__(self) -> None:
        self.tracked: list[int] = []
        self.acked: list[tuple[int, int]] = []

    def track_message(self, message: Any) -> None:
        self.tracked.append(message.offset)

    def ack(self, message: Any) -> None:
        self.acked.append((message.partition, message.offset))

    def assignment(self) -> list[Any]:
        return [
            SimpleNamespace(topic="in", partition=0),
            SimpleNamespace(topic="in", partition=2),
            SimpleNamespace(topic="other", partition=1),
        ]


def test_the_adapter_tracks_a_batch_and_acks_only_the_records_it_is_given() -> None:
    async def scenario() -> tuple[list[int], list[tuple[int, int]], frozenset[int]]:
        app = _app()
        direct = DirectInput(app, "in", maxsize=100)
        for offset, partition in [(0, 0), (1, 2), (2, 0)]:
            direct.put_nowait(_message(offset, partition))
        faust_side = _FaustConsumer()
        consumer = FaustConsumer(SimpleNamespace(consumer=faust_side), direct)  # type: ignore[arg-type]
        records = await consumer.take(10, 0.0)
        consumer.ack([r for r in records if r.partition == 0])
        consumer.ack(records)  # a batch is acked once: nothing is left in flight
        return faust_side.tracked, faust_side.acked, consumer.assignment()

    tracked, acked, held = asyncio.run(scenario())
    assert tracked == [0, 1, 2]
    assert acked == [(0, 0), (0, 2)]
    assert held == frozenset({0, 2})
