"""``segmenter bench``: the performance harness (see docs/benchmarks.md).

In one run, on the same broker, Redis and synthetic events:

1. the same ``events`` Segment events (from ``customers`` synthetic customers, stamped now,
   keyed by customer) are produced to two fresh 8-partition topics;
2. (a) the ceiling: a raw aiokafka consumer with orjson and one pipelined Redis call per event
   reads the first topic;
3. (b) one ``segmenter worker`` child (or ``workers`` of them in one consumer group; default
   rule pack, processing-time clock) drains the second; ``throughput_ratio`` is b/a;
4. (d) Redis memory per stored customer, with ``MEMORY USAGE``;
5. with the worker still running: (c) latency from event produced to migration received at a
   fixed rate, (e) API lookups under that load, (f) timer lateness;
6. with ``--peer``, (g): the same events through a worker running the small peer pack and
   through a plain Quix Streams application computing the same segments
   (:mod:`streams.benchmarks.peer`), side by side;
7. with ``--deliver``, (h): migrations through ``segmenter deliver`` and a webhook to a local
   receiver (:mod:`streams.benchmarks.delivery`);
8. with ``--redis-cluster``, (i): two workers on the partitioned Redis layout over a local
   1-master and then 3-master Redis Cluster (:mod:`streams.benchmarks.cluster`);
9. with ``--visitors N``, (j): N open visitor streams on the API process, the latency from an
   event to its stream event, and the API's memory and CPU per 1,000 streams
   (:mod:`streams.benchmarks.visitors`);
10. with ``--collect``, (k): the Segment-compatible HTTP collector of one ``segmenter api``
    process, batches of 100 events (:mod:`streams.benchmarks.collect`).
11. with ``--import``, (l): ``segmenter import`` of a generated two-year shop history
    (:mod:`streams.benchmarks.history_import`);
12. with ``--history [N]``, (m): a shop-shaped history of N customers over 18 months in event
    time through the worker (peer pack) and, with ``--peer``, the Quix Streams peer
    (:mod:`streams.benchmarks.history_bench`).

The run uses its own topics, Redis namespace and consumer group; embedded servers are started
unless ``SEGMENTER_KAFKA_BOOTSTRAP`` / ``SEGMENTER_REDIS_URL`` are set, and on configured servers
everything the run created is deleted at the end. The bench reports; it never fails on a target.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from dataclasses import dataclass

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from streams.benchmarks.ceiling import run_ceiling
from streams.benchmarks.cluster import cluster_topics, run_cluster
from streams.benchmarks.collect import run_collect
from streams.benchmarks.common import BenchConfig, BenchError, Infra, cleanup, delete_run, say
from streams.benchmarks.delivery import run_delivery
from streams.benchmarks.history_bench import cleanup_history, run_history
from streams.benchmarks.history_import import import_topics, run_import
from streams.benchmarks.live import run_live
from streams.benchmarks.load import preproduce, synthetic
from streams.benchmarks.memory import measure_memory
from streams.benchmarks.peer import cleanup_peer, peer_available, run_peer
from streams.benchmarks.report import (
    cluster_results,
    collect_results,
    delivery_results,
    peer_results,
    results,
    table,
    to_json,
    visitor_results,
)
from streams.benchmarks.segmenter import run_segmenter, start_worker, wait_http
from streams.benchmarks.visitors import VisitorReport, run_visitors
from streams.settings import Settings
from streams.stack.children import Child
from streams.stack.embedded import StackError
from streams.stack.topics import ensure_topics


def _timeout(events: int) -> float:
    """How long a throughput phase may take before the bench gives up (at >= 100 events/s)."""
    return 120.0 + events / 100.0


def _roles(infra: Infra, workers: list[Child], api: Child) -> dict[str, list[int]]:
    """The run's processes by role, for the CPU figures of the live phase."""
    roles = {
        "workers": [child.proc.pid for child in workers if child.proc is not None],
        "api": [api.proc.pid] if api.proc is not None else [],
    }
    if infra.broker is not None and infra.broker.proc is not None:
        roles["broker"] = [infra.broker.proc.pid]
    if infra.redis_server is not None and infra.redis_server.proc is not None:
        roles["redis"] = [infra.redis_server.proc.pid]
    return roles


def _visitors(
    infra: Infra, cfg: BenchConfig, api: Child, port: int, secret: bytes
) -> VisitorReport | None:
    """(j) on the running API process, when asked for."""
    if cfg.visitors <= 0 or api.proc is None:
        return None
    return asyncio.run(
        run_visitors(infra, port, api.proc.pid, secret, cfg.visitors, cfg.visitor_rate, cfg.seconds)
    )


@dataclass(frozen=True)
class Phases:
    """The optional phases of a run (each off by default)."""

    peer: bool = False
    """(g), and the peer side of (m)."""
    deliver: bool = False
    """(h)."""
    cluster: bool = False
    """(i)."""
    collect: bool = False
    """(k)."""
    import_jobs: int = 0
    """(l) with this many import processes (0: off)."""
    history: int = 0
    """(m) with a history of this many customers (0: off)."""


def _measure(infra: Infra, cfg: BenchConfig, phases: Phases) -> dict[str, object]:
    """Every phase, in order; the worker child is stopped whatever happens."""
    asyncio.run(ensure_topics(infra.bootstrap, infra.topics))
    say(f"generating {cfg.events} events from {cfg.customers} synthetic customers")
    messages = synthetic(cfg.events, cfg.customers, cfg.seed)
    asyncio.run(preproduce(infra.bootstrap, [infra.ceiling_topic, infra.input_topic], messages))
    del messages
    say("(a) ceiling: raw aiokafka + orjson + one pipelined Redis call per event")
    ceiling = asyncio.run(run_ceiling(infra, infra.ceiling_topic, cfg.events, _timeout(cfg.events)))
    say("(b) segmenter: starting one worker on the pre-filled topic")
    children: list[Child] = []
    try:
        workers: list[tuple[Child, int]] = []
        for _ in range(cfg.workers):
            workers.append(start_worker(infra))
            children.append(workers[-1][0])
        pool = [child for child, _port in workers]
        segmenter = asyncio.run(run_segmenter(infra, pool, cfg.events, _timeout(cfg.events)))
        memory = asyncio.run(measure_memory(infra, cfg.seed))
        for child, port in workers:
            asyncio.run(wait_http(port, child))
        secret = secrets.token_urlsafe(24)
        api, api_port = start_worker(
            infra,
            "api",
            visitor_secret=secret,
            visitor_max_connections=max(cfg.visitors + 100, 10_000),
        )
        children.append(api)
        asyncio.run(wait_http(api_port, api))
        roles = _roles(infra, pool, api)
        live = asyncio.run(run_live(infra, cfg, api_port, memory.sample_ids, roles))
        visitors = _visitors(infra, cfg, api, api_port, secret.encode())
        for child in pool:
            if not child.alive():
                raise BenchError(f"a worker stopped: {child.log_tail(5)!r}")
    finally:
        for child in reversed(children):
            child.stop()
    figures = results(cfg, ceiling, segmenter, memory, live)
    if visitors is not None:
        figures.update(visitor_results(visitors))
    figures.update(_side_phases(infra, cfg, phases))
    return figures


def _side_phases(infra: Infra, cfg: BenchConfig, phases: Phases) -> dict[str, object]:
    """The optional phases (g) to (m) that were asked for."""
    figures: dict[str, object] = {}
    if phases.peer:
        say("(g) peer: the same events again, to two fresh topics")
        again = synthetic(cfg.events, cfg.customers, cfg.seed)
        ours, theirs = asyncio.run(run_peer(infra, again, _timeout(cfg.events)))
        figures.update(peer_results(ours, theirs))
    if phases.deliver:
        count = min(cfg.events, 50_000)
        figures.update(delivery_results(run_delivery(infra, count, _timeout(count))))
    if phases.cluster:
        again = synthetic(cfg.events, cfg.customers, cfg.seed)
        figures.update(cluster_results(run_cluster(infra, again, _timeout(cfg.events))))
    if phases.collect:
        figures.update(collect_results(run_collect(infra, cfg)))
    if phases.import_jobs:
        figures.update(run_import(infra, phases.import_jobs, _timeout(100_000)))
    if phases.history:
        timeout = _timeout(6 * phases.history)
        figures.update(asyncio.run(run_history(infra, phases.history, phases.peer, timeout)))
    return figures


def _cleanup_sides(infra: Infra, phases: Phases) -> None:
    """On configured servers: delete what the optional phases made."""
    if phases.peer:
        asyncio.run(cleanup_peer(infra))
    if phases.cluster:
        asyncio.run(delete_run(infra, f"{infra.namespace}-c", cluster_topics(infra)))
    if phases.import_jobs:
        asyncio.run(delete_run(infra, f"{infra.namespace}-import", import_topics(infra)))
    if phases.history:
        asyncio.run(cleanup_history(infra))


def run_bench(
    settings: Settings,
    as_json: bool,
    events: int = 100_000,
    customers: int = 100_000,
    rate: float = 1000.0,
    seconds: float = 10.0,
    api_rate: float = 500.0,
    workers: int = 1,
    visitors: int = 0,
    phases: Phases = Phases(),
) -> int:
    """Run every phase; print the table (or one JSON object); 0 unless infrastructure failed.

    ``phases.peer`` adds (g), which needs Quix Streams (``pip install -e '.[bench]'``): 2
    without it.
    """
    sizes = (visitors, phases.import_jobs, phases.history)
    if min(events, customers, workers) < 1 or min(rate, seconds, api_rate) <= 0 or min(sizes) < 0:
        print(
            "segmenter bench: sizes, rates, durations and workers must be positive",
            file=sys.stderr,
        )
        return 2
    if phases.peer and not peer_available():
        print(
            "segmenter bench: --peer needs Quix Streams: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    cfg = BenchConfig(
        events=events,
        customers=customers,
        rate=rate,
        seconds=seconds,
        api_rate=api_rate,
        workers=workers,
        visitors=visitors,
    )
    infra = Infra(settings)
    figures: dict[str, object] | None = None
    try:
        infra.start()
        say(f"broker {infra.bootstrap}, Redis {infra.redis_url}, run {infra.run}")
        figures = _measure(infra, cfg, phases)
    except (BenchError, StackError, KafkaError, RedisError, OSError, TimeoutError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else repr(exc)
        print(f"segmenter bench: {message}", file=sys.stderr)
    finally:
        if infra.external and infra.bootstrap and infra.redis_url:
            try:
                asyncio.run(cleanup(infra))
                _cleanup_sides(infra, phases)
            except Exception as exc:
                say(f"cleanup incomplete: {exc!r}")
        infra.stop()
    if figures is None:
        return 1
    if as_json:
        print(to_json(figures))
    else:
        print(table(figures, cfg))
    return 0
