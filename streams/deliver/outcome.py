"""What happened to a batch, and the deliverer's counters per destination."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one batch: delivered, or to be dead-lettered with the last error."""

    delivered: bool
    attempts: int
    error: str | None = None

    @classmethod
    def ok(cls, attempts: int) -> Outcome:
        """Delivered after ``attempts`` attempts."""
        return cls(True, attempts)

    @classmethod
    def gave_up(cls, attempts: int, error: str) -> Outcome:
        """Not delivered; ``error`` says why."""
        return cls(False, attempts, error)


@dataclass
class Counters:
    """Counts since the last flush to Redis (then reset): records and requests."""

    delivered: int = 0
    """Records delivered (accepted by the receiver, or written to a file)."""
    retried: int = 0
    """Requests that failed and were tried again."""
    dead_lettered: int = 0
    """Records sent to the destination's dead-letter topic."""
    requests: int = 0
    """Requests made (every attempt)."""
    skipped: int = 0
    """Records the destination does not take (other segments or directions)."""

    def take(self) -> dict[str, int]:
        """The non-zero counts, and reset them."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}
        for f in fields(self):
            setattr(self, f.name, 0)
        return out
