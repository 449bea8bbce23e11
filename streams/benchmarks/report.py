"""The bench's results: one flat dict, shown as a table or printed as one JSON object."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.benchmarks.cluster import ClusterRun
from streams.benchmarks.collect import CollectFigures
from streams.benchmarks.common import BenchConfig, Throughput, percentile
from streams.benchmarks.delivery import DeliveryFigures
from streams.benchmarks.live import LiveReport
from streams.benchmarks.memory import MemoryReport
from streams.benchmarks.visitors import VisitorReport

MB = 1024 * 1024
LIVE_ROLES = ("workers", "broker", "redis", "api", "bench")
"""The processes whose CPU share during the live phase is reported (``live_cpu_<role>_pct``)."""


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return top / bottom if top is not None and bottom else None


def results(
    cfg: BenchConfig,
    ceiling: Throughput,
    segmenter: Throughput,
    memory: MemoryReport,
    live: LiveReport,
) -> dict[str, Any]:
    """Every figure of the run, by its JSON key."""
    cpu = {f"live_cpu_{role}_pct": _round(live.cpu_pct.get(role), 1) for role in LIVE_ROLES}
    return {
        "events": cfg.events,
        "customers": cfg.customers,
        "workers": cfg.workers,
        "ceiling_events_per_s": _round(ceiling.events_per_s, 1),
        "events_per_s": _round(segmenter.events_per_s, 1),
        "throughput_ratio": _round(_ratio(segmenter.events_per_s, ceiling.events_per_s), 4),
        "ceiling_cpu_us_per_event": _round(ceiling.cpu_us_per_event, 1),
        "worker_cpu_us_per_event": _round(segmenter.cpu_us_per_event, 1),
        "cpu_ratio": _round(_ratio(ceiling.cpu_us_per_event, segmenter.cpu_us_per_event), 4),
        "latency_rate": _round(live.events_rate, 1),
        "latency_sent": live.sent,
        "latency_samples": len(live.latencies),
        "p50_ms": _round(percentile(live.latencies, 50)),
        "p99_ms": _round(percentile(live.latencies, 99)),
        "latency_max_ms": _round(max(live.latencies, default=None)),
        "customers_stored": memory.customers,
        "bytes_per_customer": _round(memory.per_customer, 1),
        "state_bytes_per_customer": _round(memory.state, 1),
        "membership_bytes_per_customer": _round(memory.membership, 1),
        "timer_bytes_per_customer": _round(memory.timers, 1),
        "api_rate": _round(live.api_rate, 1),
        "api_requests": len(live.api) + live.api_errors,
        "api_errors": live.api_errors,
        "api_p50_ms": _round(percentile(live.api, 50)),
        "api_p99_ms": _round(percentile(live.api, 99)),
        "timer_samples": len(live.timer_lateness),
        "timers_sent": live.timers_sent,
        "timers_on_arrival": live.timers_on_arrival,
        "timer_lateness_p50_ms": _round(percentile(live.timer_lateness, 50)),
        "timer_lateness_p99_ms": _round(percentile(live.timer_lateness, 99)),
        "timer_lateness_max_ms": _round(max(live.timer_lateness, default=None)),
        **cpu,
    }


def peer_results(worker: Throughput, peer: Throughput) -> dict[str, Any]:
    """(g): the worker (peer pack) and the Quix Streams peer on the same events, and the ratios
    (``peer_cpu_ratio`` >= 1: the worker uses less CPU per event than the peer)."""
    return {
        "peer_worker_events_per_s": _round(worker.events_per_s, 1),
        "peer_worker_cpu_us_per_event": _round(worker.cpu_us_per_event, 1),
        "peer_events_per_s": _round(peer.events_per_s, 1),
        "peer_cpu_us_per_event": _round(peer.cpu_us_per_event, 1),
        "peer_cpu_ratio": _round(_ratio(peer.cpu_us_per_event, worker.cpu_us_per_event), 4),
        "peer_throughput_ratio": _round(_ratio(worker.events_per_s, peer.events_per_s), 4),
    }


PEER_ROWS = (
    ("(g) worker, peer pack", "peer_worker_events_per_s", "events/s"),
    ("    CPU per event", "peer_worker_cpu_us_per_event", "us"),
    ("(g) Quix Streams peer", "peer_events_per_s", "events/s"),
    ("    CPU per event", "peer_cpu_us_per_event", "us"),
    ("    CPU ratio peer/worker", "peer_cpu_ratio", ""),
    ("    throughput ratio worker/peer", "peer_throughput_ratio", ""),
)
"""The table's rows of (g), shown when the run had ``--peer``."""


def delivery_results(found: DeliveryFigures) -> dict[str, Any]:
    """(h): the webhook path's migrations/s, requests and CPU per migration."""
    return {
        "deliver_migrations": found.migrations,
        "deliver_per_s": _round(found.per_s, 1),
        "deliver_requests": found.requests,
        "deliver_cpu_us_per_migration": _round(found.cpu_us_per_migration, 1),
    }


DELIVERY_ROWS = (
    ("(h) webhook delivery", "deliver_per_s", "migr./s"),
    ("    requests", "deliver_requests", ""),
    ("    CPU per migration", "deliver_cpu_us_per_migration", "us"),
)
"""The table's rows of (h), shown when the run had ``--deliver``."""


def cluster_results(runs: Sequence[ClusterRun]) -> dict[str, Any]:
    """(i): events/s and CPU per event of two workers over 1 and 3 masters, the ratio, and the
    3-master run's share of keys per master."""
    found: dict[str, Any] = {}
    for run in runs:
        found[f"cluster_{run.masters}_events_per_s"] = _round(run.throughput.events_per_s, 1)
        found[f"cluster_{run.masters}_cpu_us_per_event"] = _round(
            run.throughput.cpu_us_per_event, 1
        )
        found[f"cluster_{run.masters}_key_share"] = list(run.key_share)
    found["cluster_scaling_ratio"] = _round(
        _ratio(found.get("cluster_3_events_per_s"), found.get("cluster_1_events_per_s")), 4
    )
    return found


CLUSTER_ROWS = (
    ("(i) 2 workers, 1 master", "cluster_1_events_per_s", "events/s"),
    ("    CPU per event", "cluster_1_cpu_us_per_event", "us"),
    ("(i) 2 workers, 3 masters", "cluster_3_events_per_s", "events/s"),
    ("    CPU per event", "cluster_3_cpu_us_per_event", "us"),
    ("    ratio 3 masters / 1", "cluster_scaling_ratio", ""),
)
"""The table's rows of (i), shown when the run had ``--redis-cluster``."""

IMPORT_ROWS = (
    ("(l) import, events/s", "import_events_per_s", "events/s", ">= 20,000"),
    ("    events imported", "import_events", "", ""),
    ("    seconds", "import_seconds", "s", ""),
    ("    jobs", "import_jobs", "", ""),
)
"""The table's rows of (l), shown when the run had ``--import``."""


HISTORY_ROWS = (
    ("(m) history: events", "history_events", ""),
    ("    customers", "history_customers", ""),
    ("    worker events/s", "history_worker_events_per_s", "events/s"),
    ("    worker CPU per event", "history_worker_cpu_us_per_event", "us"),
    ("    peer events/s", "history_peer_events_per_s", "events/s"),
    ("    peer CPU per event", "history_peer_cpu_us_per_event", "us"),
)
"""The table's rows of (m), shown when the run had ``--history``."""


def visitor_results(found: VisitorReport) -> dict[str, Any]:
    """(j): streams opened, latency from event to stream event, the API's memory and CPU."""
    per_stream = found.bytes_per_stream
    return {
        "visitors": found.visitors,
        "visitor_streams": found.opened,
        "visitor_open_s": _round(found.open_seconds, 1),
        "visitor_sent": found.sent,
        "visitor_rate": _round(found.sent / found.send_seconds if found.send_seconds else None, 1),
        "visitor_samples": len(found.latencies),
        "visitor_p50_ms": _round(percentile(found.latencies, 50)),
        "visitor_p99_ms": _round(percentile(found.latencies, 99)),
        "visitor_max_ms": _round(max(found.latencies, default=None)),
        "visitor_api_kb_per_stream": _round(None if per_stream is None else per_stream / 1024),
        "visitor_api_mb_per_1000": _round(None if per_stream is None else per_stream * 1000 / MB),
        "visitor_api_rss_mb": _round(None if found.rss_open is None else found.rss_open / MB, 1),
        "visitor_api_idle_cpu_pct": _round(found.idle_cpu_pct, 1),
        "visitor_api_cpu_pct": _round(found.load_cpu_pct, 1),
        "visitor_api_cpu_pct_per_1000": _round(found.per_thousand(found.load_cpu_pct), 3),
    }


def _visitor_rows() -> list[Row]:
    return [
        Row("(j) visitor streams open", "visitor_streams", ""),
        Row("    event to stream p50", "visitor_p50_ms", "ms"),
        Row("    event to stream p99", "visitor_p99_ms", "ms", "<= 250 ms", lambda v: v <= 250),
        Row("    API memory per 1,000", "visitor_api_mb_per_1000", "MB"),
        Row("    API CPU, streams idle", "visitor_api_idle_cpu_pct", "% core"),
        Row("    API CPU under load", "visitor_api_cpu_pct", "% core"),
        Row("    ... per 1,000 streams", "visitor_api_cpu_pct_per_1000", "% core"),
    ]


def collect_results(found: CollectFigures) -> dict[str, Any]:
    """(k): the collector's accepted events/s and CPU per event, and its request latency at half
    that rate."""
    return {
        "collect_events": found.events,
        "collect_events_per_s": _round(found.events_per_s, 1),
        "collect_cpu_us_per_event": _round(found.cpu_us_per_event, 1),
        "collect_errors": found.errors,
        "collect_latency_rate": _round(found.latency_rate, 1),
        "collect_latency_samples": len(found.latencies),
        "collect_p50_ms": _round(found.p50_ms),
        "collect_p99_ms": _round(found.p99_ms),
        **{
            f"collect_cpu_{role}_pct": _round(found.cpu_pct.get(role), 1)
            for role in ("api", "broker", "bench")
        },
    }


def _collect_rows() -> list[Row]:
    """The table's rows of (k), shown when the run had ``--collect``."""
    return [
        Row(
            "(k) collector, batches of 100",
            "collect_events_per_s",
            "events/s",
            ">= 20000",
            lambda v: v >= 20_000,
        ),
        Row("    CPU per event", "collect_cpu_us_per_event", "us"),
        Row("    latency rate (half)", "collect_latency_rate", "events/s"),
        Row("    request p50", "collect_p50_ms", "ms"),
        Row("    request p99", "collect_p99_ms", "ms", "<= 20 ms", lambda v: v <= 20),
    ]


def to_json(figures: dict[str, Any]) -> str:
    """The one JSON object of ``--json`` (missing figures are ``null``)."""
    return orjson.dumps(figures).decode()


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, how to show it, and its target."""

    label: str
    key: str
    unit: str
    target: str = ""
    ok: Callable[[float], bool] | None = None


def _workers(count: int) -> str:
    return "one worker" if count == 1 else f"{count} workers"


def _rows(cfg: BenchConfig) -> list[Row]:
    rate = f"{cfg.rate:g}/s"
    return [
        Row("(a) ceiling: raw consumer", "ceiling_events_per_s", "events/s"),
        Row(f"(b) segmenter, {_workers(cfg.workers)}", "events_per_s", "events/s"),
        Row("    throughput ratio b/a", "throughput_ratio", "", ">= 0.5", lambda v: v >= 0.5),
        Row("    (a) CPU per event", "ceiling_cpu_us_per_event", "us"),
        Row("    (b) CPU per event", "worker_cpu_us_per_event", "us"),
        Row("    CPU ratio a/b (less noisy)", "cpu_ratio", ""),
        Row(f"(c) latency p50 at {rate}", "p50_ms", "ms"),
        Row(f"(c) latency p99 at {rate}", "p99_ms", "ms", "<= 50 ms", lambda v: v <= 50),
        Row(
            "(d) Redis memory per customer",
            "bytes_per_customer",
            "bytes",
            "<= 1024",
            lambda v: v <= 1024,
        ),
        Row("    state string", "state_bytes_per_customer", "bytes"),
        Row("    segment member sets", "membership_bytes_per_customer", "bytes"),
        Row("    timer sets", "timer_bytes_per_customer", "bytes"),
        Row("(e) API lookup p50", "api_p50_ms", "ms"),
        Row("(e) API lookup p99", "api_p99_ms", "ms", "< 5 ms", lambda v: v < 5),
        Row("    lookups achieved", "api_rate", "req/s", f">= {cfg.api_rate:g}/s (asked)"),
        Row("(f) timer lateness p50", "timer_lateness_p50_ms", "ms"),
        Row(
            "(f) timer lateness p99",
            "timer_lateness_p99_ms",
            "ms",
            "<= 1000 ms",
            lambda v: v <= 1000,
        ),
        Row("(f) timer lateness max", "timer_lateness_max_ms", "ms"),
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}"


def table(figures: dict[str, Any], cfg: BenchConfig) -> str:
    """The human-readable table: metric, value, target, ok?"""
    lines = [f"{'metric':<34} {'value':>14}  {'unit':<9} {'target':<22} ok?"]
    lines.append("-" * len(lines[0]))
    rows = _rows(cfg)
    if "peer_cpu_ratio" in figures:
        rows += [Row(label, key, unit) for label, key, unit in PEER_ROWS]
    if "deliver_per_s" in figures:
        rows += [Row(label, key, unit) for label, key, unit in DELIVERY_ROWS]
    if "cluster_scaling_ratio" in figures:
        rows += [Row(label, key, unit) for label, key, unit in CLUSTER_ROWS]
    if "visitor_streams" in figures:
        rows += _visitor_rows()
    if "collect_events_per_s" in figures:
        rows += _collect_rows()
    if "history_events" in figures:
        rows += [Row(label, key, unit) for label, key, unit in HISTORY_ROWS]
        rows.append(
            Row(
                "    peer / worker CPU",
                "history_peer_cpu_ratio",
                "",
                ">= 0.5",
                lambda v: v >= 0.5,
            )
        )
    if "import_events_per_s" in figures:
        rows += [
            Row(label, key, unit, target, (lambda v: v >= 20_000) if target else None)
            for label, key, unit, target in IMPORT_ROWS
        ]
    for row in rows:
        value = figures.get(row.key)
        verdict = "" if row.ok is None else "n/a"
        if row.ok is not None and isinstance(value, int | float):
            verdict = "yes" if row.ok(float(value)) else "NO"
        lines.append(f"{row.label:<34} {_fmt(value):>14}  {row.unit:<9} {row.target:<22} {verdict}")
    lines.append("")
    lines.append(
        f"{figures['events']:,} events from {figures['customers']:,} synthetic customers "
        f"({figures['customers_stored']:,} stored); latency: {figures['latency_samples']:,} of "
        f"{figures['latency_sent']:,} events matched at {_fmt(figures['latency_rate'])} events/s; "
        f"timers: {figures['timer_samples']} of {figures['timers_sent']} fired "
        f"({figures['timers_on_arrival']} already due on arrival); "
        f"API: {figures['api_requests']:,} requests, {figures['api_errors']} errors"
    )
    shares = [
        f"{role} {figures[f'live_cpu_{role}_pct']:.1f}"
        for role in LIVE_ROLES
        if figures.get(f"live_cpu_{role}_pct") is not None
    ]
    if shares:
        lines.append("CPU while the live load ran, % of one core: " + ", ".join(shares))
    collect = [
        f"{role} {figures[f'collect_cpu_{role}_pct']:.1f}"
        for role in ("api", "broker", "bench")
        if figures.get(f"collect_cpu_{role}_pct") is not None
    ]
    if collect:
        lines.append("CPU during (k)'s latency phase, % of one core: " + ", ".join(collect))
    return "\n".join(lines)
