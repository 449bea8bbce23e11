"""CPU time of the run's processes: figures that a busy machine barely moves.

A rate in events per second swings with whatever else the machine runs; the CPU seconds a
process spends per event swing much less. The bench reports both: for (a) and (b) the CPU time
per event of the consumer (``ceiling_cpu_us_per_event``, ``worker_cpu_us_per_event``, and
their ratio ``cpu_ratio``), and for the live phase the share of one core each process used
(worker, broker, Redis, API, the bench itself), which shows who competed for the machine.

Read from ``/proc`` (Linux): elsewhere, and for a process not started by this run, the figure is
``None``. The bench's own CPU is :func:`time.process_time` (all of its threads).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
SELF = "bench"
"""The role name of the bench process itself."""


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of process ``pid`` (all threads), or None if unreadable."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        ticks = int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _total(pids: Iterable[int]) -> float | None:
    total = 0.0
    for pid in pids:
        used = cpu_seconds(pid)
        if used is None:
            return None
        total += used
    return total


@dataclass
class CpuMeter:
    """CPU seconds of named groups of processes (``roles``) since :meth:`start`.

    ``roles`` maps a name to process ids; the bench process itself is always measured as
    :data:`SELF`. A role none of whose processes can be read is reported as None.
    """

    roles: Mapping[str, Iterable[int]] = field(default_factory=dict)
    _pids: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False)
    _start: dict[str, float | None] = field(default_factory=dict, init=False)
    _started_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._pids = {role: tuple(pids) for role, pids in self.roles.items()}

    def _now(self) -> dict[str, float | None]:
        now: dict[str, float | None] = {role: _total(p) for role, p in self._pids.items()}
        now[SELF] = time.process_time()
        return now

    def start(self) -> None:
        """Take the starting reading."""
        self._start = self._now()
        self._started_at = time.monotonic()

    def used(self) -> dict[str, float | None]:
        """CPU seconds each role used since :meth:`start`."""
        used: dict[str, float | None] = {}
        for role, value in self._now().items():
            before = self._start.get(role)
            used[role] = None if value is None or before is None else max(0.0, value - before)
        return used

    def percent(self) -> dict[str, float | None]:
        """Each role's CPU since :meth:`start` as a percentage of one core's time."""
        elapsed = max(time.monotonic() - self._started_at, 1e-9)
        return {
            role: None if used is None else 100.0 * used / elapsed
            for role, used in self.used().items()
        }


def per_event_us(seconds: float | None, events: int) -> float | None:
    """CPU microseconds per event, or None when unknown."""
    if seconds is None or events <= 0:
        return None
    return seconds * 1e6 / events
