"""(g) ``segmenter bench --peer``: the worker against a plain Quix Streams app, same events.

Both consume their own copy of the same synthetic events, produced to two fresh topics of the
same broker, and compute the same five segments (``peer_rules/``: lifetime, recency and a
90-day window). The worker runs with that small pack (processing time, like (b)); the peer is
``peer_app.py``. For each, events/s from its first processed event to the last one committed,
and its CPU time per event over the same span (all threads): the worker's read from ``/proc`` by
the bench (as in (b)), the peer's taken by the peer itself with ``getrusage`` at its first
message and right after the checkpoint that committed its last (the kernel's same per-process
counters, read at the exact instants). The figures are reported side by side and as ratios;
``peer_cpu_ratio`` >= 1 means the worker spends less CPU per event.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from streams.benchmarks.common import PARTITIONS, Infra, Throughput, delete_run, say
from streams.benchmarks.load import Message, preproduce
from streams.benchmarks.segmenter import drain, side_worker_env
from streams.stack.children import Child, settings_env
from streams.stack.topics import ensure_topics
from streams.store.redis_store import Keys

PEER_RULES = Path(__file__).resolve().parent / "peer_rules"
"""The pack both sides compute."""
RETENTION = {"retention.ms": "604800000", "retention.bytes": "-1"}
"""The peer's topics' retention, set explicitly (see :func:`run_peer`)."""


def peer_available() -> bool:
    """Whether Quix Streams (the ``bench`` extra) is installed."""
    return importlib.util.find_spec("quixstreams") is not None


async def peer_worker(
    infra: Infra,
    topic: str,
    count: int,
    timeout: float,
    phase: str = "(g)",
    side: str = "peer",
    **extra: object,
) -> Throughput:
    """A worker with the peer pack draining ``topic`` (``side`` names its namespace and its
    other topics; ``extra`` settings on top, e.g. the event clock)."""
    namespace = f"{infra.namespace}-{side}"
    env = side_worker_env(
        infra, f"{infra.prefix}.{side}", namespace, rules=PEER_RULES, input_topic=topic, **extra
    )
    child = Child(["worker"], env).start()
    client = infra.redis()

    async def applied() -> int:
        raw = await client.hgetall(Keys(namespace).offsets)
        return sum(int(float(v)) + 1 for v in raw.values())

    try:
        return await drain("worker", [child], count, applied, timeout, phase)
    finally:
        child.stop()
        await client.aclose()


async def quix_peer(
    infra: Infra,
    topic: str,
    quix_out: str,
    count: int,
    timeout: float,
    phase: str = "(g)",
    group: str = "quix",
) -> Throughput:
    """The Quix Streams peer (``peer_app.py``) draining ``topic`` in consumer group
    ``<run's group>-<group>``."""
    with tempfile.TemporaryDirectory(prefix="segmenter-peer-") as workdir:
        progress = Path(workdir) / "progress"
        env = settings_env()
        env.update(
            PEER_BOOTSTRAP=infra.bootstrap,
            PEER_INPUT=topic,
            PEER_OUTPUT=quix_out,
            PEER_GROUP=f"{infra.group_id}-{group}",
            PEER_STATE_DIR=str(Path(workdir) / "state"),
            PEER_COUNT=str(count),
            PEER_PROGRESS=str(progress),
        )
        child = Child([], env, module="streams.benchmarks.peer_app").start()

        async def processed() -> int:
            # the last message counts once the app has committed it (its final report)
            doc = _progress(progress)
            seen = int(doc.get("seen", 0))
            return seen if doc.get("done") else min(seen, count - 1)

        try:
            await drain("Quix Streams peer", [child], count, processed, timeout, phase)
            doc = _progress(progress)
            # from before the first message to after the checkpoint that committed the last
            (wall0, cpu0), (wall1, cpu1) = doc["first"], doc["last"]
            measured = int(doc["seen"])
            rate = measured / max(wall1 - wall0, 1e-6)
            say(f"{phase} Quix Streams peer, its own clocks: {measured} events = {rate:.0f}/s")
            return Throughput(rate, (cpu1 - cpu0) * 1e6 / measured)
        finally:
            child.stop()


def _progress(path: Path) -> dict[str, Any]:
    """The peer's progress file, or an empty dict while there is none."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def side_topics(infra: Infra, side: str = "peer", group: str = "quix") -> dict[str, str]:
    """The topics of a side-by-side phase (``side``: ``peer`` for (g)), by role; ``group`` is the
    Quix Streams consumer group's suffix (it names the changelog topic)."""
    prefix = f"{infra.prefix}.{side}"
    return {
        "ours": f"{prefix}.events",
        "theirs": f"{prefix}.quix-events",
        "quix_out": f"{prefix}.quix-out",
        "migrations": f"{prefix}.migrations",
        "dlq": f"{prefix}.dlq",
        "memberships": f"{prefix}.memberships",
        # the one Quix Streams creates for its state store ("default")
        "changelog": f"changelog__{infra.group_id}-{group}--{prefix}.quix-events--default",
    }


async def run_peer(
    infra: Infra, messages: Sequence[Message], timeout: float
) -> tuple[Throughput, Throughput]:
    """(g): the same events through the worker (peer pack) and the Quix Streams peer."""
    topics = side_topics(infra)
    ours, theirs, quix_out = topics["ours"], topics["theirs"], topics["quix_out"]
    await ensure_topics(
        infra.bootstrap,
        {
            ours: PARTITIONS,
            theirs: PARTITIONS,
            topics["migrations"]: PARTITIONS,
            topics["dlq"]: 1,
            quix_out: PARTITIONS,
        },
        # Quix Streams reads these back to configure its changelog topics; the embedded broker
        # reports only what a topic was created with
        configs={name: dict(RETENTION) for name in (theirs, quix_out)},
    )
    await preproduce(infra.bootstrap, [ours, theirs], messages)
    say("(g) peer: the worker with the peer pack")
    worker = await peer_worker(infra, ours, len(messages), timeout)
    say("(g) peer: the Quix Streams application")
    quix = await quix_peer(infra, theirs, quix_out, len(messages), timeout)
    return worker, quix


async def cleanup_peer(infra: Infra) -> None:
    """Delete what (g) made: the peer worker's Redis keys and every topic of (g) (only needed on
    configured servers, like :func:`streams.benchmarks.common.cleanup`)."""
    await delete_run(infra, f"{infra.namespace}-peer", list(side_topics(infra).values()))
