"""The stream-processing worker: a faust app built by a factory, never at import.

faust's consumer reads the input topic (an agent subscribes it) and hands its records straight
to one batch loop (:mod:`streams.pipeline.direct_input`); each batch is applied with one Lua call
and its outbox sent before its records are acknowledged to faust, which commits the offsets. Only
infrastructure errors escape the per-event handling: they are retried with backoff, and when
retries run out the process exits without acknowledging, for its supervisor to restart it.
The worker's other duties (timers, rule changes, backfills) live in
:mod:`streams.pipeline.runtime`.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import faust

from streams.engine import RuleLoadError, RuleSet, load_rules
from streams.pipeline.direct_input import DirectInput, to_record
from streams.pipeline.faust_transport import install as install_transport
from streams.pipeline.retry import BatchLoopFailed, WorkerExit
from streams.pipeline.runtime import Runtime
from streams.settings import Settings
from streams.stack.kafka_security import faust_credentials

log = logging.getLogger("segmenter.worker")

QUEUE_BATCHES = 8
"""Records the batch loop's queue holds, in batches (``SEGMENTER_BATCH_SIZE``)."""
METADATA_MAX_AGE_MS = 5000
STOP_GRACE_S = 20.0
"""How long a fatal error's clean stop may take before the process ends anyway."""


@dataclass
class ExitRequest:
    """The exit code a fatal error asked for (0: none). The first request logs it and stops the
    worker the way SIGTERM does (faust commits what was acknowledged, the temp directory goes);
    :func:`run_worker` then returns the code. If that stop hangs (a broker that is gone), the
    process ends with the code after :data:`STOP_GRACE_S`."""

    datadir: str
    code: int = 0

    def __call__(self, exc: WorkerExit) -> None:
        if self.code:
            return
        self.code = exc.code
        log.critical("%s; exiting with code %d for the supervisor", exc, exc.code)
        watchdog = threading.Timer(STOP_GRACE_S, self._end_now)
        watchdog.daemon = True
        watchdog.start()
        os.kill(os.getpid(), signal.SIGTERM)

    def _end_now(self) -> None:  # pragma: no cover - only when a clean stop hangs
        shutil.rmtree(self.datadir, True)
        logging.shutdown()
        os._exit(self.code)


def _faust_broker(bootstrap: str) -> str:
    return "kafka://" + ";".join(part.strip() for part in bootstrap.split(",") if part.strip())


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


def create_app(settings: Settings, rules: RuleSet) -> tuple[faust.App, Runtime, ExitRequest]:
    """Build the faust app, its runtime and the exit request its tasks use. Nothing connects
    until the app runs."""
    if not settings.kafka_bootstrap or not settings.redis_url:
        raise SystemExit(
            "segmenter worker: set SEGMENTER_KAFKA_BOOTSTRAP and SEGMENTER_REDIS_URL "
            "(or use `segmenter up`, which starts both)"
        )
    runtime = Runtime(settings=settings, rules=rules, bootstrap=settings.kafka_bootstrap)
    datadir = tempfile.mkdtemp(prefix="segmenter-faust-")
    atexit.register(shutil.rmtree, datadir, True)
    exits = ExitRequest(datadir)
    app = _faust_app(settings, datadir)
    direct = DirectInput(app, settings.input_topic, maxsize=QUEUE_BATCHES * settings.batch_size)
    install_transport(app, settings.fetch_max_wait_ms, direct)
    topic = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")

    async def subscribe(stream: Any) -> None:
        """Subscribes the input topic; its records go to ``segment`` instead (never here)."""
        async for _event in stream:
            pass

    app.agent(topic, name="input", concurrency=1)(subscribe)

    async def segment() -> None:
        """The batch loop: apply, send, then acknowledge; only one batch is in flight."""
        consumer = app.consumer
        while True:
            messages = await direct.take(settings.batch_size, settings.batch_within_s)
            for message in messages:
                consumer.track_message(message)
            try:
                await runtime.handle([to_record(m) for m in messages])
            except WorkerExit as exc:
                exits(exc)
                return
            except Exception as exc:
                log.exception("the batch loop failed")
                exits(BatchLoopFailed(f"the batch loop failed: {exc!r}"))
                return
            for message in messages:
                consumer.ack(message)

    app.task(segment)

    async def start_runtime() -> None:
        try:
            await runtime.ensure_started()
        except WorkerExit as exc:
            exits(exc)

    app.task(start_runtime)

    async def tick() -> None:
        """Timers, leftover outbox messages, rule and RFM changes of the assigned partitions."""
        assigned = frozenset(
            tp.partition for tp in app.consumer.assignment() if tp.topic == settings.input_topic
        )
        if exits.code:
            return
        try:
            await runtime.tick(assigned)
        except WorkerExit as exc:
            exits(exc)

    app.timer(settings.timer_interval_s)(tick)
    return app, runtime, exits


def run_worker(settings: Settings) -> int:
    """``segmenter worker``: run until SIGINT/SIGTERM.

    faust's terminal spinner is turned off: to spin on every log record it sets the root logger
    to DEBUG, so every debug call of aiokafka, faust and redis built a record on the hot path,
    and it wrote terminal escape codes into the log.
    """
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        rules = load_rules(settings.rules)
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(f"{problem.file}:{problem.line}: {problem.message}")
        return 1
    app, _runtime, exits = create_app(settings, rules)
    level = settings.log_level.upper()
    logging.getLogger("segmenter").setLevel(level)
    quiet_faust = "WARNING" if level == "INFO" else level
    worker = faust.Worker(app, loglevel=quiet_faust, quiet=True)
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if not exits.code:
            raise
    return exits.code
