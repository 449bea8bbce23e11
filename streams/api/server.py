"""``segmenter api``: the HTTP API and dashboard in a process of their own.

Lookups for live website content swaps must answer in milliseconds. Served by a worker they
would wait behind its batches on the same event loop; this process only reads Redis, follows
the published rule pack, and scales independently of the workers. ``/metrics`` here carries
the API's own view (segment sizes, visitor streams, the collector); the pipeline's counters are
on each worker's ``/metrics``.

With ``SEGMENTER_KAFKA_BOOTSTRAP`` set (or found beside ``segmenter up``) it is also the
Segment-compatible collector (:mod:`streams.api.collector`), with one producer to the input topic.

With ``SEGMENTER_VISITOR_SECRET`` and ``SEGMENTER_KAFKA_BOOTSTRAP`` set (or found beside
``segmenter up``) it also reads the migrations topic once (:mod:`streams.api.visitor_feed`)
and fans each migration out to the open visitor streams (:mod:`streams.api.visitor_hub`). Each
stream holds a file descriptor: the process raises its soft ``RLIMIT_NOFILE`` to the hard limit
at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import sys
from typing import Any

from streams.api.collector_sink import KafkaSink
from streams.api.http import HttpServer
from streams.api.visitor_feed import MigrationFeed
from streams.api.visitor_hub import VisitorHub
from streams.deliver.metrics import read_delivery_metrics
from streams.engine import RuleLoadError, RuleSet, load_rules
from streams.pipeline import rulepack
from streams.pipeline.metrics import Metrics
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.store.redis_store import LayoutError, RedisStore

log = logging.getLogger("segmenter.api")
FOLLOW_S = 2.0


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, adopting newly published rule packs."""
    store = RedisStore.from_settings(settings)
    try:
        await store.check_layout()
    except LayoutError as exc:
        await store.close()
        print(f"segmenter api: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(78) from None
    pack = await rulepack.published(store)
    if pack is not None:
        rules = pack.rules
    else:
        try:
            rules = load_rules(settings.rules)
        except RuleLoadError as exc:
            log.warning("no rule pack published yet and %s", exc.problems[0])
            rules = RuleSet.empty()

    async def health() -> dict[str, Any]:
        reachable = await store.ping()
        return {
            "ok": reachable,
            "redis": reachable,
            "role": "api",
            "rule_version": server.rules.version,
        }

    async def delivery() -> dict[str, dict[str, float]]:
        return await read_delivery_metrics(store.client, store.keys.ns)

    sink = await _collector_sink(settings)
    hub = VisitorHub(settings, store)
    background: list[asyncio.Task[None]] = []
    if settings.kafka_bootstrap and settings.visitor_secret is not None:
        background.append(asyncio.create_task(MigrationFeed(settings, hub).run(stop)))
        background.append(asyncio.create_task(hub.upkeep(stop)))
    elif settings.visitor_secret is not None:
        log.warning("no SEGMENTER_KAFKA_BOOTSTRAP: visitor streams are off")
    visitors = hub if background else None
    server = HttpServer(
        settings, rules, store, Metrics(), health, delivery=delivery, sink=sink, visitors=visitors
    )
    await server.start()
    # Everything loaded so far lives as long as the process: out of the collector's way. Without
    # this a full collection walks it every second or so under load, a 50-80 ms stall measured
    # as the collector's p99 (docs/benchmarks.md).
    gc.freeze()
    print(f"segmenter api: serving {server.url} (rules {rules.version})", flush=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_S)
            try:
                version = await rulepack.published_version(store)
                if version is not None and version != server.rules.version:
                    latest = await rulepack.published(store)
                    if latest is not None:
                        server.rules = latest.rules
                        log.warning("now serving rules %s", latest.rules.version)
            except Exception as exc:  # Redis down: keep serving, /healthz says so
                log.warning("cannot follow the rule pack: %r", exc)
    finally:
        hub.shutdown()
        await server.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if sink is not None:
            await sink.stop()
        await store.close()


async def _collector_sink(settings: Settings) -> KafkaSink | None:
    """The collector's producer, connecting (None without a broker: the collector is off)."""
    if not settings.kafka_bootstrap:
        log.warning("no SEGMENTER_KAFKA_BOOTSTRAP: the collector (/v1/batch...) is off")
        return None
    sink = KafkaSink(settings)
    await sink.start()
    return sink


def raise_file_limit() -> int:
    """Raise the soft limit of open files to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %r", soft, exc)
    return soft


def run_api(settings: Settings) -> int:
    """Run the API process until SIGINT/SIGTERM."""
    settings = with_running_stack(settings)
    if not settings.redis_url:
        print("segmenter api: set SEGMENTER_REDIS_URL or run beside `segmenter up`", flush=True)
        return 2

    files = raise_file_limit()
    if settings.visitor_secret is not None and files < settings.visitor_max_connections + 100:
        log.warning(
            "open-file limit %d is below SEGMENTER_VISITOR_MAX_CONNECTIONS (%d) + 100: raise"
            " `ulimit -n`",
            files,
            settings.visitor_max_connections,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0
