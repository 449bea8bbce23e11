"""A progress line on stderr: done/total, rate and time left (redrawn in place on a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR = 24


class Progress:
    """Counts for one phase; :meth:`add` redraws at most every ``interval`` seconds."""

    def __init__(
        self,
        phase: str,
        total: int | None = None,
        stream: TextIO | None = None,
        quiet: bool = False,
    ) -> None:
        self.phase = phase
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.interval = 0.25 if self.tty else 5.0
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def add(self, count: int) -> None:
        """``count`` more done."""
        self.set(self.done + count)

    def set(self, done: int) -> None:
        """``done`` so far."""
        self.done = done
        now = time.monotonic()
        if now - self.shown >= self.interval:
            self.shown = now
            self._draw(final=False)

    def close(self) -> None:
        """The phase's last line."""
        self._draw(final=True)

    def line(self) -> str:
        """The progress as text."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            share = min(1.0, self.done / self.total)
            filled = round(share * BAR)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            return (
                f"{self.phase} [{'#' * filled}{'.' * (BAR - filled)}] {self.done:,}/{self.total:,}"
                f" {share:.0%} {rate:,.0f}/s ETA {_clock(left)}"
            )
        return f"{self.phase} {self.done:,} {rate:,.0f}/s {_clock(elapsed)}"

    def _draw(self, final: bool) -> None:
        if self.quiet:
            return
        text = self.line()
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
