"""Sorting records by time out of core: bounded sorted runs on disk, merged by a heap.

A record is ``(time, serial, payload)``: ``time`` in epoch milliseconds, ``serial`` unique and
increasing in input order (so ties keep the input order), ``payload`` one line of bytes (no
newline). At most ``run_events`` records are held in memory; each full run is sorted and written
to a temporary file. Input that is already in time order costs one pass more and no merge
(its runs follow one another and are read back one after the other); a history that fits in
one run never touches the disk.
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

Record = tuple[int, int, bytes]
RUN_EVENTS = 200_000
"""Records per sorted run: about 100 MB of memory for 300-byte events."""


class ExternalSorter:
    """Records in, records out in ``(time, serial)`` order (see the module docstring)."""

    def __init__(self, directory: Path | None = None, run_events: int = RUN_EVENTS) -> None:
        self.directory = directory
        self.run_events = max(1, run_events)
        self.buffer: list[Record] = []
        self.runs: list[Path] = []
        self.bounds: list[tuple[tuple[int, int], tuple[int, int]]] = []
        """First and last key of each run written."""
        self._tmp: Path | None = None
        self.count = 0

    def __enter__(self) -> ExternalSorter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the run files."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.runs = []

    def add(self, at: int, serial: int, payload: bytes) -> None:
        """Take one record."""
        self.buffer.append((at, serial, payload))
        self.count += 1
        if len(self.buffer) >= self.run_events:
            self._spill()

    def _spill(self) -> None:
        """Sort the buffer and write it as a run."""
        if not self.buffer:
            return
        self.buffer.sort()
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="segmenter-sort-", dir=self.directory))
        path = self._tmp / f"run-{len(self.runs):05d}"
        with path.open("wb") as sink:
            sink.writelines(b"%d %d %s\n" % record for record in self.buffer)
        first, last = self.buffer[0], self.buffer[-1]
        self.bounds.append(((first[0], first[1]), (last[0], last[1])))
        self.runs.append(path)
        self.buffer = []

    @property
    def in_order(self) -> bool:
        """True when the runs written so far follow one another (the input was sorted)."""
        return all(self.bounds[i][1] <= self.bounds[i + 1][0] for i in range(len(self.bounds) - 1))

    def merged(self) -> Iterator[Record]:
        """Every record, in ``(time, serial)`` order (call once, after the last ``add``)."""
        if not self.runs:
            self.buffer.sort()
            yield from self.buffer
            return
        self._spill()
        readers = [_read_run(path) for path in self.runs]
        if self.in_order:
            yield from itertools.chain.from_iterable(readers)
        else:
            yield from heapq.merge(*readers)


def _read_run(path: Path) -> Iterator[Record]:
    with path.open("rb") as source:
        for line in source:
            at, serial, payload = line.split(b" ", 2)
            yield int(at), int(serial), payload[:-1]


def sort_records(records: Iterable[Record], run_events: int = RUN_EVENTS) -> Iterator[Record]:
    """``records`` in ``(time, serial)`` order, with bounded memory."""
    with ExternalSorter(run_events=run_events) as sorter:
        for at, serial, payload in records:
            sorter.add(at, serial, payload)
        yield from sorter.merged()
