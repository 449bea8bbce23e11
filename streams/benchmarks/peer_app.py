"""The peer of ``segmenter bench --peer``: a plain Quix Streams application.

It computes the same five segments as the bench's peer pack (``peer_rules/``) the way a user
would write them by hand: one stateful function per message, the customer's aggregates in Quix's
own State (RocksDB, changelog topics, at-least-once), and a record on the output topic when a
customer's segments change. It has no timers (a customer lapses when their next event arrives),
no dead-letter topic, no deduplication and no explanations: it does less than the worker, on
purpose, to show what the bare job costs.

Run by the bench as ``python -m streams.benchmarks.peer_app``, configured by environment
variables ``PEER_BOOTSTRAP``, ``PEER_INPUT``, ``PEER_OUTPUT``, ``PEER_GROUP``, ``PEER_STATE_DIR``,
``PEER_COUNT`` (stop after that many messages) and ``PEER_PROGRESS``: a JSON file the app
rewrites about every 0.2 s with ``seen`` (messages so far), and ``first``/``last``: the wall
clock and the process's CPU time (every thread, librdkafka's included) at the first message and
at the latest report, so that start-up is left out of the figures. After the ``PEER_COUNT``-th
message the app stops, which makes Quix commit its checkpoint at once (changelog records
produced and flushed, the output flushed, offsets committed, RocksDB written); the last report,
with ``done: true``, is taken right after that commit, so the figures include it (and leave out
the consumer's shutdown). Quix Streams is the optional ``bench`` extra.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

DAY_MS = 86_400_000
ORDER = "Order Completed"


def step(state: dict[str, Any], event: dict[str, Any]) -> tuple[list[str] | None, bool]:
    """Fold one event into ``state``: the customer's segments when they changed (else None),
    and whether ``state`` changed (to be written back).

    ``state`` holds ``orders``, ``revenue``, ``last`` (last order, epoch ms), ``recent`` (order
    times within 90 days) and ``members``. Segments are judged at the event's own time (at the
    customer's last order if that is later: an event that arrived out of order).
    """
    stamp = event.get("timestamp")
    if not isinstance(stamp, str):
        return None, False
    now = int(datetime.fromisoformat(stamp).timestamp() * 1000)
    recent: list[int] = state.get("recent", [])
    dirty = False
    if event.get("type") == "track" and event.get("event") == ORDER:
        dirty = True
        state["orders"] = state.get("orders", 0) + 1
        state["revenue"] = state.get("revenue", 0.0) + _revenue(event.get("properties") or {})
        state["last"] = max(state.get("last", now), now)
        recent.append(now)
    last = state.get("last")
    if last is not None and last > now:
        # an event that arrived out of order: the customer is judged at their latest order,
        # never before it (so nothing recorded is in the future)
        now = last
    kept = [t for t in recent if now - t < 90 * DAY_MS]
    if len(kept) != len(recent):
        dirty = True
    state["recent"] = kept
    in_90 = len(kept)
    orders = state.get("orders", 0)
    members = []
    if orders >= 2:
        members.append("repeat_buyer")
    if state.get("revenue", 0.0) >= 200:
        members.append("big_spender")
    if last is not None and 0 <= now - last < 30 * DAY_MS:
        members.append("recent_buyer")
    if orders >= 1 and not in_90:
        members.append("lapsed")
    if in_90 >= 3:
        members.append("frequent_buyer")
    if members == state.get("members", []):
        return None, dirty
    state["members"] = members
    return members, True


def _revenue(props: dict[str, Any]) -> float:
    """An order's revenue as the worker reads it: ``revenue``, else ``total``, else 0."""
    for name in ("revenue", "total"):
        amount = props.get(name)
        if isinstance(amount, int | float) and not isinstance(amount, bool):
            return float(amount)
    return 0.0


class _Committed(logging.Handler):
    """Takes the clocks when Quix has committed a checkpoint after the stop was asked.

    Quix logs ``Committed a checkpoint`` (DEBUG, ``quixstreams.processing.context``) once a
    checkpoint's changelogs, output and offsets are committed and its state is flushed.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stopping = False
        self.clocks: tuple[float, float] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if (
            self.stopping
            and self.clocks is None
            and "Committed a checkpoint" in record.getMessage()
        ):
            self.clocks = _clocks()


def main() -> None:
    """Run the Quix Streams application until ``PEER_COUNT`` messages are processed."""
    from quixstreams import Application

    count = int(os.environ["PEER_COUNT"])
    progress = Path(os.environ["PEER_PROGRESS"])
    seen = [0]
    first: list[float] = []
    committed = _Committed()
    app = Application(
        broker_address=os.environ["PEER_BOOTSTRAP"],
        consumer_group=os.environ["PEER_GROUP"],
        auto_offset_reset="earliest",
        state_dir=os.environ["PEER_STATE_DIR"],
        processing_guarantee="at-least-once",
        commit_interval=1.0,
        # the worker's group timeouts; with librdkafka's default 45 s session, the embedded
        # broker holds the first JoinGroup for about 23 s (start-up only: not measured)
        consumer_extra_config={"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000},
        loglevel="WARNING",
    )
    context_log = logging.getLogger("quixstreams.processing.context")
    context_log.setLevel(logging.DEBUG)
    context_log.addHandler(committed)
    source = app.topic(os.environ["PEER_INPUT"], value_deserializer="json", key_deserializer="str")
    output = app.topic(os.environ["PEER_OUTPUT"], value_serializer="json", key_serializer="str")

    def segments(event: dict[str, Any], state: Any) -> list[str] | None:
        seen[0] += 1
        if not first:
            first.extend(_clocks())
        aggregates = state.get("c") or {}
        changed, dirty = step(aggregates, event)
        if dirty:
            state.set("c", aggregates)
        if seen[0] >= count:
            committed.stopping = True
            app.stop()
        return changed

    stop = threading.Event()
    lock = threading.Lock()

    def write(last: tuple[float, float], done: bool = False) -> None:
        doc = {"seen": seen[0], "first": first, "last": list(last), "done": done}
        with lock:  # whole files only: the bench may read at any moment
            partial = progress.with_suffix(".partial")
            partial.write_bytes(orjson.dumps(doc))
            partial.replace(progress)

    def report() -> None:
        while not stop.wait(0.2):
            write(_clocks())

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    sdf = app.dataframe(source)
    sdf = sdf.apply(segments, stateful=True).filter(lambda members: members is not None)
    sdf.to_topic(output)
    try:
        app.run()
    finally:
        stop.set()
        reporter.join()
    if seen[0] >= count:
        write(committed.clocks or _clocks(), done=True)


def _clocks() -> tuple[float, float]:
    """The wall clock and this process's CPU seconds (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.monotonic(), usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
