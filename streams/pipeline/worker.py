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
import tempfile
from typing import Any

import faust

from streams.engine import RuleLoadError, RuleSet, load_rules
from streams.pipeline.direct_input import DirectInput, to_record
from streams.pipeline.faust_transport import install as install_transport
from streams.pipeline.runtime import Runtime
from streams.settings import Settings
from streams.stack.kafka_security import faust_credentials

log = logging.getLogger("segmenter.worker")

QUEUE_BATCHES = 8
"""Records the batch loop's queue holds, in batches (``SEGMENTER_BATCH_SIZE``)."""
EXIT_SOFTWARE = 70
METADATA_MAX_AGE_MS = 5000
"""Exit code when the batch loop fails other than on infrastructure (a bug): restart me."""


def _faust_broker(bootstrap: str) -> str:
    return "kafka://" + ";".join(part.strip() for part in bootstrap.split(",") if part.strip())


def create_app(settings: Settings, rules: RuleSet) -> tuple[faust.App, Runtime]:
    """Build the faust app and its runtime. Nothing connects until the app runs."""
    if not settings.kafka_bootstrap or not settings.redis_url:
        raise SystemExit(
            "segmenter worker: set SEGMENTER_KAFKA_BOOTSTRAP and SEGMENTER_REDIS_URL "
            "(or use `segmenter up`, which starts both)"
        )
    runtime = Runtime(settings=settings, rules=rules, bootstrap=settings.kafka_bootstrap)
    datadir = tempfile.mkdtemp(prefix="segmenter-faust-")
    atexit.register(shutil.rmtree, datadir, True)
    app = faust.App(
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
            except Exception:
                log.critical("the batch loop failed; exiting for the supervisor", exc_info=True)
                logging.shutdown()
                os._exit(EXIT_SOFTWARE)
            for message in messages:
                consumer.ack(message)

    app.task(segment)

    async def start_runtime() -> None:
        await runtime.ensure_started()

    app.task(start_runtime)

    async def tick() -> None:
        """Timers, leftover outbox messages, rule and RFM changes of the assigned partitions."""
        assigned = frozenset(
            tp.partition for tp in app.consumer.assignment() if tp.topic == settings.input_topic
        )
        await runtime.tick(assigned)

    app.timer(settings.timer_interval_s)(tick)
    return app, runtime


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
    app, _runtime = create_app(settings, rules)
    level = settings.log_level.upper()
    logging.getLogger("segmenter").setLevel(level)
    quiet_faust = "WARNING" if level == "INFO" else level
    worker = faust.Worker(app, loglevel=quiet_faust, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0
