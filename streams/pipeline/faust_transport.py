"""A faust transport whose consumer does not park fetches for 1.5 s.

faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``. Some brokers (the embedded Tansu
among them) hold a fetch for most of that wait even when records are there, which puts a floor
of hundreds of milliseconds under every event's latency. This subclass sets the wait from
``SEGMENTER_FETCH_MAX_WAIT_MS`` instead; nothing else about the driver changes.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 20

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """The aiokafka transport with a configurable fetch wait."""

    Consumer = _Consumer


def install(app: Any, fetch_max_wait_ms: int) -> None:
    """Give ``app`` the tuned transport (call before the app starts)."""
    _ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms
    app.transport = Transport(app.conf.broker_consumer, app, loop=app.loop)
