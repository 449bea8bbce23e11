"""faust-streaming as the worker's :class:`~streams.pipeline.consumer.Consumer`: the one module
that knows faust (and every use of its private API; pyproject keeps faust below 0.16).

faust supplies the consumer group, rebalances, offset commits (from acknowledgements), flow
control and the worker's timer; a dummy agent only subscribes the input topic. Replacing faust
means replacing this file: :func:`serve` runs a :class:`~streams.pipeline.runtime.Runtime`
(start, the batch loop over a :class:`FaustConsumer`, a tick every
``SEGMENTER_TIMER_INTERVAL_S``) until the process is stopped.

**The input topic straight to the batch loop** (:class:`DirectInput`). faust delivers a record
to an agent through the conductor, a channel queue, the stream's iterator, an ``Event`` and the
``take`` buffer. Measured on a pre-filled topic with an agent that does nothing, that costs about
89 µs of CPU per record; putting the record from the consumer's drain loop into one queue that
the batch loop empties costs about 14. faust's guarantees are kept the way faust keeps them for
agents:

* The queue is one of faust's flow-control queues: a rebalance suspends puts and clears it, as
  it clears agents' buffers. A cleared record was never acked, so whoever owns its partition
  next reads it again from the committed offset.
* The records of a batch are tracked (``Consumer.track_message``) when they are taken from the
  queue and acked once applied and sent, so a rebalance waits for the batch in flight
  (``Consumer.wait_empty``) before it commits offsets and hands the partitions over.

Batches are greedy: a batch is what is queued when the loop is free (up to ``max_records``), so
an idle worker applies an event as soon as it arrives and a busy one takes bigger batches.
``within`` > 0 also waits that long for a fuller batch.

**The transport** (:class:`Transport`): three changes to faust's aiokafka driver.

* **Fetch wait.** faust hard-codes ``fetch_max_wait_ms=1500``. Some brokers (the embedded Tansu
  among them) hold a fetch for most of that wait even when records are there, which puts a
  floor of hundreds of milliseconds under every event's latency. The consumer takes the wait
  from ``SEGMENTER_FETCH_MAX_WAIT_MS`` instead.
* **The input topic to the queue.** The drain loop puts the input topic's records in the
  :class:`DirectInput` queue instead of handing them to the conductor and the agent's stream.
* **Delivery without a task per message.** For every other topic: faust's
  ``Consumer._drain_messages`` hands every record to the streams through
  ``wait_first(callback(message), suspend_flow.wait())``, which creates four tasks and an
  ``asyncio.wait`` per record: measured here, it caps delivery near 6,000 records/s into an
  agent that does nothing. The wait only matters when the callback can block: while flow is
  suspended (a rebalance), while the conductor re-indexes its topics, or when a stream's buffer
  is full. :func:`drain_messages` awaits the callback directly when none of those holds (it then
  completes without suspending) and keeps faust's ``wait_first`` otherwise, so rebalances behave
  exactly as before. Measured: about 2.3 times the records/s.

:func:`drain_messages` mirrors faust-streaming 0.11 to 0.15.

faust's terminal spinner is turned off: to spin on every log record it sets the root logger to
DEBUG, so every debug call of aiokafka, faust and redis built a record on the hot path, and it
wrote terminal escape codes into the log.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver

from streams.pipeline.processor import Record
from streams.pipeline.retry import WorkerExit
from streams.settings import Settings
from streams.stack.kafka_security import ssl_context

if TYPE_CHECKING:
    from streams.pipeline.runtime import Runtime
    from streams.pipeline.worker import ExitRequest

log = logging.getLogger("segmenter.worker")

QUEUE_BATCHES = 8
"""Records the batch loop's queue holds, in batches (``SEGMENTER_BATCH_SIZE``)."""
METADATA_MAX_AGE_MS = 5000
SCRATCH_PREFIX = "segmenter-faust-"
"""faust's data directory: a temporary one, removed at exit."""


class DirectInput:
    """The queue between faust's consumer and the batch loop, for one input topic."""

    def __init__(self, app: Any, topic: str, maxsize: int) -> None:
        self.topic = topic
        self.queue: Any = app.FlowControlQueue(maxsize=maxsize, clear_on_resume=True)

    def full(self) -> bool:
        """True when a put would have to wait."""
        return bool(self.queue.full())

    def put_nowait(self, message: Any) -> None:
        """Queue a record (the caller checked :meth:`full`)."""
        self.queue.put_nowait(message)

    async def put(self, message: Any) -> None:
        """Queue a record, waiting for room (and for flow control to allow it)."""
        await self.queue.put(message)

    async def take(self, max_records: int, within: float = 0.0) -> list[Any]:
        """The next batch: wait for one record, then take what is queued, up to ``max_records``.

        With ``within`` > 0, wait up to that long after the first record for more.
        """
        queue = self.queue
        batch = [await queue.get()]
        deadline: float | None = None
        while len(batch) < max_records:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            if within <= 0:
                break
            now = asyncio.get_running_loop().time()
            deadline = now + within if deadline is None else deadline
            if now >= deadline:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), deadline - now))
            except TimeoutError:
                break
        return batch


def to_record(message: Any) -> Record:
    """A faust ``Message`` as the processor's :class:`Record`."""
    headers = message.headers
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        tuple(map(tuple, headers)) if headers else (),
    )


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


class FaustConsumer:
    """The input topic through faust's consumer, as the batch loop's
    :class:`~streams.pipeline.consumer.Consumer`."""

    def __init__(self, app: faust.App, direct: DirectInput) -> None:
        self.app = app
        self.direct = direct
        self.in_flight: list[Any] = []

    def assignment(self) -> frozenset[int]:
        """The input topic's partitions faust's consumer holds."""
        topic = self.direct.topic
        return frozenset(tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic)

    async def take(self, max_records: int, within: float) -> list[Record]:
        """The next batch from the queue, tracked so that a rebalance waits for it."""
        messages = await self.direct.take(max_records, within)
        consumer = self.app.consumer
        for message in messages:
            consumer.track_message(message)
        self.in_flight = messages
        return [to_record(m) for m in messages]

    def ack(self, records: Sequence[Record]) -> None:
        """Ack the messages of ``records`` (faust commits acked offsets every second)."""
        messages, self.in_flight = self.in_flight, []
        if len(records) != len(messages):
            wanted = {(r.partition, r.offset) for r in records}
            messages = [m for m in messages if (m.partition, m.offset) in wanted]
        consumer = self.app.consumer
        for message in messages:
            consumer.ack(message)

    async def commit(self) -> None:
        """Commit the acked offsets now."""
        await self.app.consumer.commit()


def _faust_broker(bootstrap: str) -> str:
    return "kafka://" + ";".join(part.strip() for part in bootstrap.split(",") if part.strip())


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for the faust app (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def _faust_app(settings: Settings, datadir: str) -> faust.App:
    """The faust app: the consumer group, offset commits and timers (input bypasses agents)."""
    assert settings.kafka_bootstrap is not None
    return faust.App(
        settings.group_id,
        broker=_faust_broker(settings.kafka_bootstrap),
        web_enabled=False,
        datadir=datadir,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=1.0,
        broker_session_timeout=settings.session_timeout_s,
        # A group that rejoined while its topics did not exist (a broker restarted empty) sees
        # them come back at the next metadata refresh: 5 s, not aiokafka's default 5 minutes.
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        broker_heartbeat_interval=1.0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_acks=-1,
        broker_credentials=faust_credentials(settings),
    )


def create_app(settings: Settings, runtime: Runtime, exits: ExitRequest) -> faust.App:
    """The faust app running ``runtime``: its start, its batch loop over a
    :class:`FaustConsumer` and its tick; a :class:`WorkerExit` goes to ``exits``. Nothing
    connects until the app runs."""
    app = _faust_app(settings, exits.scratch)
    direct = DirectInput(app, settings.input_topic, maxsize=QUEUE_BATCHES * settings.batch_size)
    install(app, settings.fetch_max_wait_ms, direct)
    consumer = FaustConsumer(app, direct)
    topic = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")

    async def subscribe(stream: Any) -> None:
        """Subscribes the input topic; its records go to the batch loop instead (never here)."""
        async for _event in stream:
            pass

    app.agent(topic, name="input", concurrency=1)(subscribe)

    async def batches() -> None:
        try:
            await runtime.run_batches(consumer)
        except WorkerExit as exc:
            exits(exc)

    async def start() -> None:
        try:
            await runtime.ensure_started()
        except WorkerExit as exc:
            exits(exc)

    async def tick() -> None:
        """Timers, leftover outbox messages, rule and RFM changes of the held partitions."""
        assigned = consumer.assignment()
        if exits.code:
            return
        try:
            await runtime.tick(assigned)
        except WorkerExit as exc:
            exits(exc)

    app.task(batches)
    app.task(start)
    app.timer(settings.timer_interval_s)(tick)
    return app


def scratch_dir() -> str:
    """faust's data directory for this process (removed at exit)."""
    datadir = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    atexit.register(shutil.rmtree, datadir, True)
    return datadir


def serve(settings: Settings, runtime: Runtime, exits: ExitRequest) -> None:
    """Run ``runtime`` in a faust worker until SIGINT/SIGTERM (or until ``exits`` stops it)."""
    app = create_app(settings, runtime, exits)
    level = settings.log_level.upper()
    quiet_faust = "WARNING" if level == "INFO" else level
    worker = faust.Worker(app, loglevel=quiet_faust, quiet=True)
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if not exits.code:
            raise
