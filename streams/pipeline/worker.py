"""The stream-processing worker: a faust app built by a factory, never at import.

One agent (concurrency 1) reads the input topic in batches (``take_events``); each batch is
applied with one Lua call and its outbox sent before faust acknowledges the batch. Only
infrastructure errors escape the per-event handling: they are retried with backoff, and when
retries run out the process exits without acknowledging, for its supervisor to restart it.
The worker's other duties (timers, rule changes, backfills) live in
:mod:`streams.pipeline.runtime`.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from typing import Any

import faust

from streams.engine import RuleLoadError, RuleSet, load_rules
from streams.pipeline.faust_transport import install as install_transport
from streams.pipeline.processor import Record
from streams.pipeline.runtime import Runtime
from streams.settings import Settings
from streams.stack.kafka_security import faust_credentials


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
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_acks=-1,
        broker_credentials=faust_credentials(settings),
    )
    install_transport(app, settings.fetch_max_wait_ms)
    topic = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")

    async def segment(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            records = [
                Record(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    headers=tuple((k, v) for k, v in (e.message.headers or ())),
                )
                for e in events
            ]
            await runtime.handle(records)

    app.agent(topic, name="segment", concurrency=1)(segment)

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
    """``segmenter worker``: run until SIGINT/SIGTERM."""
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
    worker.execute_from_commandline()
    return 0
