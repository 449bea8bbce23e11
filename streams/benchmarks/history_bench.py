"""(m) ``segmenter bench --history``: a shop-shaped history in event time.

The synthetic mix of (b) and (g) repeats customers within a batch and fires few timers. A real
shop's history does neither: many customers with a few orders each over months, and the
recency and window timers of nearly every buyer come due as event time passes. This phase
draws such a history with the project's history generator (:mod:`streams.generate.history`:
introductions and orders only, BG/NBD purchases, mostly one to five orders a buyer; 20,000
customers over 18 months by default, about 100,000 events), produces it in time order keyed by
customer to two fresh topics, and drains it with

* a worker with the peer pack (``peer_rules/``), **event clock**, 300 s of allowed lateness: it
  fires the recency and window timers as event time passes (``recent_buyer`` 30 days, ``lapsed``
  and ``frequent_buyer`` 90 days);
* with ``--peer``, the Quix Streams peer on the same events (no timers).

Figures: ``history_events``, ``history_customers``, ``history_worker_events_per_s``,
``history_worker_cpu_us_per_event``, ``history_peer_events_per_s``,
``history_peer_cpu_us_per_event`` and ``history_peer_cpu_ratio`` (peer CPU / worker CPU per
event; 1 means the worker costs what the peer does).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from streams.benchmarks.common import PARTITIONS, Infra, delete_run, say
from streams.benchmarks.load import Message, preproduce
from streams.benchmarks.peer import RETENTION, peer_worker, quix_peer, side_topics
from streams.generate.history import HistorySpec, history_events
from streams.stack.topics import ensure_topics

LATENESS_S = 300.0


def spec(customers: int) -> HistorySpec:
    """The history of (m): ``customers`` over 18 months, introductions and orders only."""
    return HistorySpec(
        customers=customers,
        months=18,
        end=datetime(2026, 1, 1, tzinfo=UTC),
        seed=7,
        browsing=False,
    )


def history_messages(customers: int) -> list[Message]:
    """The history's events in time order, keyed by customer id."""
    messages: list[Message] = []
    for event in history_events(spec(customers)):
        key = event.get("userId") or event.get("anonymousId")
        messages.append((str(key).encode(), orjson.dumps(event)))
    return messages


def history_topics(infra: Infra) -> dict[str, str]:
    """The topics of (m), by role."""
    return side_topics(infra, "history", "history")


async def run_history(
    infra: Infra, customers: int, with_peer: bool, timeout: float
) -> dict[str, Any]:
    """(m): the history through the worker (event clock) and, with ``with_peer``, the peer."""
    topics = history_topics(infra)
    messages = history_messages(customers)
    say(f"(m) history: {len(messages):,} events of {customers:,} customers over 18 months")
    await ensure_topics(
        infra.bootstrap,
        {
            topics["ours"]: PARTITIONS,
            topics["theirs"]: PARTITIONS,
            topics["migrations"]: PARTITIONS,
            topics["dlq"]: 1,
            topics["quix_out"]: PARTITIONS,
        },
        configs={name: dict(RETENTION) for name in (topics["theirs"], topics["quix_out"])},
    )
    targets = [topics["ours"], topics["theirs"]] if with_peer else [topics["ours"]]
    await preproduce(infra.bootstrap, targets, messages)
    say("(m) history: the worker with the peer pack, event clock")
    worker = await peer_worker(
        infra,
        topics["ours"],
        len(messages),
        timeout,
        "(m)",
        "history",
        clock="event",
        allowed_lateness_s=LATENESS_S,
        idle_settle_s=0,
    )
    figures: dict[str, Any] = {
        "history_events": len(messages),
        "history_customers": customers,
        "history_worker_events_per_s": round(worker.events_per_s, 1),
        "history_worker_cpu_us_per_event": _round(worker.cpu_us_per_event),
        "history_peer_events_per_s": None,
        "history_peer_cpu_us_per_event": None,
        "history_peer_cpu_ratio": None,
    }
    if with_peer:
        say("(m) history: the Quix Streams application")
        peer = await quix_peer(
            infra, topics["theirs"], topics["quix_out"], len(messages), timeout, "(m)", "history"
        )
        figures["history_peer_events_per_s"] = round(peer.events_per_s, 1)
        figures["history_peer_cpu_us_per_event"] = _round(peer.cpu_us_per_event)
        mine, theirs = worker.cpu_us_per_event, peer.cpu_us_per_event
        if mine and theirs:
            figures["history_peer_cpu_ratio"] = round(theirs / mine, 3)
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def cleanup_history(infra: Infra) -> None:
    """Delete what (m) made on configured servers."""
    await delete_run(infra, f"{infra.namespace}-history", list(history_topics(infra).values()))
