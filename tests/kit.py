"""Test kit: pipeline contexts whose clock the test holds.

``pinned_context`` gives a processing-time pipeline whose clock reads a fixed instant (and can
be advanced), so tests of rules without time conditions see every change published at the end
of each batch, whatever the events' timestamps, with no wall clock involved.
"""

from __future__ import annotations

from datetime import datetime

from streams.engine import RuleSet
from streams.engine.facts import SeriesSpec
from streams.pipeline.processor import PipelineContext
from streams.pipeline.timekeeping import ManualClock
from streams.settings import Settings
from streams.store.base import Store
from streams.store.memory import MemoryStore

PINNED = "2026-06-01T00:00:00+00:00"
"""The instant a pinned clock reads: after every timestamp the unit tests use."""


def pinned_clock(at: str = PINNED) -> ManualClock:
    """A manual clock set to ``at`` (ISO 8601 with offset)."""
    return ManualClock(datetime.fromisoformat(at).timestamp())


def pinned_context(
    rules: RuleSet,
    settings: Settings | None = None,
    store: Store | None = None,
    partitions: int = 1,
    clock: ManualClock | None = None,
) -> PipelineContext:
    """A processing-time pipeline context over ``rules`` with a pinned clock."""
    return PipelineContext.create(
        settings or Settings(),
        rules,
        store if store is not None else MemoryStore(),
        partitions,
        clock=clock or pinned_clock(),
    )


def condition_series(rules: RuleSet) -> tuple[SeriesSpec, ...]:
    """The rule pack's series other than the one kept for performance (its conversion)."""
    conversion = rules.conversion
    return tuple(s for s in rules.series if conversion is None or s.id != conversion.series_id)


CONTROL_SECRET = "test-control-secret"
"""The ``SEGMENTER_CONTROL_SECRET`` of the tests that send control records (watermarks)."""


def control(until: float) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """The value and headers of a control record signed with :data:`CONTROL_SECRET`."""
    from streams.pipeline.control import control_record

    return control_record(until, CONTROL_SECRET)


def memory_store(ctx: PipelineContext) -> MemoryStore:
    """The in-memory store of a context the kit built: the one place a test narrows ``Store``
    to :class:`MemoryStore` (to read its outbox, members and states directly)."""
    store = ctx.store
    if not isinstance(store, MemoryStore):
        raise TypeError(f"this context's store is a {type(store).__name__}, not a MemoryStore")
    return store
