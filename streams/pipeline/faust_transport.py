"""A faust transport tuned for throughput and latency; nothing else about the driver changes.

Three changes to faust's aiokafka driver:

* **Fetch wait.** faust hard-codes ``fetch_max_wait_ms=1500``. Some brokers (the embedded Tansu
  among them) hold a fetch for most of that wait even when records are there, which puts a
  floor of hundreds of milliseconds under every event's latency. The consumer takes the wait
  from ``SEGMENTER_FETCH_MAX_WAIT_MS`` instead.
* **The input topic straight to the batch loop.** With a :class:`DirectInput` installed, the
  drain loop puts the input topic's records in its queue instead of handing them to the
  conductor and the agent's stream (see :mod:`streams.pipeline.direct_input`).
* **Delivery without a task per message.** For every other topic: faust's
  ``Consumer._drain_messages`` hands every record to the streams through
  ``wait_first(callback(message), suspend_flow.wait())``, which creates four tasks and an
  ``asyncio.wait`` per record: measured here, it caps delivery near 6,000 records/s into an
  agent that does nothing. The wait only matters when the callback can block: while flow is
  suspended (a rebalance), while the conductor re-indexes its topics, or when a stream's buffer
  is full. :func:`drain_messages` awaits the callback directly when none of those holds (it then
  completes without suspending) and keeps faust's ``wait_first`` otherwise, so rebalances behave
  exactly as before. Measured: about 2.3 times the records/s.

:func:`drain_messages` mirrors faust-streaming 0.11 to 0.15 (pyproject keeps it below 0.16).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver

from streams.pipeline.direct_input import DirectInput

YIELD_EVERY = 100
"""Records delivered between two yields to the event loop (as in faust)."""


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 20

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def _flow_stopped(consumer: Any) -> bool:
    """True while a rebalance holds delivery back."""
    return bool(consumer.suspend_flow.is_set() or not consumer.app.flow_control.is_active())


def _can_block(consumer: Any, tp: Any) -> bool:
    """True when handing a record of ``tp`` to the streams might wait (see the module doc)."""
    conductor = consumer.app.topics
    if _flow_stopped(consumer):
        return True
    if conductor._tp_to_callback_lock.locked():
        return True
    return any(channel.queue.full() for channel in conductor._tp_index.get(tp, ()))


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """faust's ``Consumer._drain_messages`` with a direct call when delivery cannot block."""
    callback = consumer.callback
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offsets = consumer._read_offset
    diag = consumer.diag
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    direct: DirectInput | None = getattr(consumer.transport, "direct", None)
    direct_topic = direct.topic if direct is not None else None
    since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            diag.set_flag(CONSUMER_FETCHING)
            records = getmany(timeout=1.0)
            await consumer.sleep(0)
            if not consumer.should_stop:
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    read = read_offsets[tp]
                    if read is not None and offset < read:
                        continue
                    if offset - (read or 0) > 1 and read and acks_enabled_for(message.topic):
                        await consumer._add_gap(tp, read + 1, offset)
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    if direct is not None and message.topic == direct_topic:
                        if direct.full() or _flow_stopped(consumer):
                            await consumer.wait_first(
                                direct.put(message), consumer.suspend_flow.wait()
                            )
                        else:
                            direct.put_nowait(message)
                    elif _can_block(consumer, tp):
                        await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    else:
                        await callback(message)
                    read_offsets[tp] = offset
                diag.unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            return
        raise
    finally:
        diag.unset_flag(CONSUMER_FETCHING)


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await drain_messages(self, fetcher)


class Transport(driver.Transport):
    """The aiokafka transport with a configurable fetch wait and direct input delivery."""

    Consumer = _Consumer
    direct: DirectInput | None = None


def install(app: Any, fetch_max_wait_ms: int, direct: DirectInput | None = None) -> None:
    """Give ``app`` the tuned transport (call before the app starts).

    ``direct``: the queue the input topic's records go to instead of the agent's stream.
    """
    _ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    transport = Transport(app.conf.broker_consumer, app, loop=app.loop)
    transport.direct = direct
    app.transport = transport
