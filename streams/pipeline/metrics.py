"""The worker's counters (exposed on ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(slots=True)
class Metrics:
    """Counters the worker exposes on ``/metrics``."""

    events: int = 0
    batches: int = 0
    dlq: int = 0
    duplicates: int = 0
    redelivered: int = 0
    forwarded: int = 0
    migrations: int = 0
    late: int = 0
    suppressed: int = 0
    timers_fired: int = 0
    timer_lateness_max: float = 0.0
    eval_seconds: float = 0.0
    quarantined: int = 0
    """Customers whose processing failed in a batch: their events of it went to the DLQ."""
    state_cache_hits: int = 0
    """Customer states a batch took from the worker's state cache instead of Redis."""
    state_cache_misses: int = 0
    """Customer states a batch read from Redis (not in the state cache, or it is off)."""
    unreadable_states: int = 0
    """Stored customer states that could not be read (skipped by shared views)."""
    migrations_by: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def count_migration(self, segment: str, direction: str, trigger: str) -> None:
        """Count one migration by segment, direction and trigger kind."""
        self.migrations += 1
        label = (segment, direction, trigger)
        self.migrations_by[label] = self.migrations_by.get(label, 0) + 1

    def snapshot(self) -> Metrics:
        """A copy, to :meth:`restore` when a batch is applied again."""
        return replace(self, migrations_by=dict(self.migrations_by))

    def restore(self, before: Metrics) -> None:
        """Put every counter back to ``before`` (in place: the HTTP API holds this object)."""
        for name in self.__dataclass_fields__:
            value = getattr(before, name)
            setattr(self, name, dict(value) if isinstance(value, dict) else value)
