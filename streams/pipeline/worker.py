"""The stream-processing worker's process entry: the one place errors become exit codes.

The worker loop (:mod:`streams.pipeline.runtime`) runs in a consumer adapter
(:mod:`streams.pipeline.faust_consumer`): the consumer reads the input topic and hands its
records to one batch loop; each batch is applied with one Lua call and its outbox sent before its
records are acknowledged, and the consumer commits the offsets. Only infrastructure errors escape
the per-event handling: they are retried with backoff, and when retries run out the loop raises
:class:`~streams.pipeline.retry.WorkerExit`; :class:`ExitRequest` stops the process cleanly
with the exit code it names, without acknowledging, for its supervisor to restart it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass

from streams.engine import RuleLoadError, RuleSet, load_rules
from streams.pipeline import faust_consumer
from streams.pipeline.gc_policy import quiet_collector
from streams.pipeline.retry import WorkerExit
from streams.pipeline.runtime import Runtime
from streams.pipeline.startup import ServiceConnector
from streams.settings import Settings

log = logging.getLogger("segmenter.worker")

STOP_GRACE_S = 20.0
"""How long a fatal error's clean stop may take before the process ends anyway."""


@dataclass
class ExitRequest:
    """The exit code a fatal error asked for (0: none). The first request logs it and stops the
    worker the way SIGTERM does (the consumer commits what was acknowledged, its scratch
    directory goes); :func:`run_worker` then returns the code. If that stop hangs (a broker that
    is gone), the process ends with the code after :data:`STOP_GRACE_S`."""

    scratch: str
    """The consumer's scratch directory (faust's data directory), removed at exit."""
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
        shutil.rmtree(self.scratch, True)
        logging.shutdown()
        os._exit(self.code)


def create_runtime(settings: Settings, rules: RuleSet) -> Runtime:
    """The worker loop of a deployed worker (Redis, Kafka, HTTP); nothing connects yet."""
    if not settings.kafka_bootstrap or not settings.redis_url:
        raise SystemExit(
            "segmenter worker: set SEGMENTER_KAFKA_BOOTSTRAP and SEGMENTER_REDIS_URL "
            "(or use `segmenter up`, which starts both)"
        )
    connect = ServiceConnector(settings, settings.kafka_bootstrap)
    return Runtime(settings=settings, rules=rules, connect=connect)


def run_worker(settings: Settings) -> int:
    """``segmenter worker``: run until SIGINT/SIGTERM; the exit code a fatal error names."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        rules = load_rules(settings.rules)
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(f"{problem.file}:{problem.line}: {problem.message}")
        return 1
    runtime = create_runtime(settings, rules)
    exits = ExitRequest(faust_consumer.scratch_dir())
    logging.getLogger("segmenter").setLevel(settings.log_level.upper())
    quiet_collector(settings.gc_young_threshold)
    faust_consumer.serve(settings, runtime, exits)
    return exits.code
