"""Supervising ``segmenter up``'s children: :class:`Child` processes restarted with backoff,
the :class:`Supervisor` of them all, and the :class:`StopFlag` that turns SIGINT and SIGTERM
into a clean stop."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from streams.stack.embedded import StackError

QUICK_CRASH_S = 10.0
MAX_QUICK_CRASHES = 5
STOP_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


def _warn(message: str) -> None:
    print(f"segmenter up: {message}", file=sys.stderr, flush=True)


class Stopped(Exception):
    """Raised inside ``run_up`` when SIGINT/SIGTERM arrived during start-up."""


class StopFlag:
    """Turns SIGINT and SIGTERM into a flag that the supervisor loop polls."""

    def __init__(self) -> None:
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def install(self) -> None:
        """Catch SIGINT and SIGTERM (restored by :meth:`restore`)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop was requested."""
        if self.stopping:
            raise Stopped

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early (and raising :class:`Stopped`) on a signal."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In the child: get SIGTERM when the parent dies (Linux), even if it is SIGKILLed."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


@dataclass
class Child:
    """A supervised child process in its own process group, restarted with backoff."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    restart_on_success: bool = True
    quick_crash_s: float = QUICK_CRASH_S
    max_quick_crashes: int = MAX_QUICK_CRASHES
    log: Callable[[str], None] = _warn
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pids: list[int] = field(default_factory=list)
    quick_crashes: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    done: bool = False

    def start(self) -> None:
        """Start the process (its own session and process group)."""
        self.proc = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.pids.append(self.proc.pid)
        self.started_at = time.monotonic()
        self.restart_at = None

    def poll(self) -> None:
        """Restart the process when it has died and its backoff is over.

        Raises :class:`StackError` after ``max_quick_crashes`` crashes in a row, each within
        ``quick_crash_s`` of its start.
        """
        now = time.monotonic()
        if self.done:
            return
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        code = self.proc.returncode
        if code == 0 and not self.restart_on_success:
            self.log(f"{self.name} finished")
            self.done = True
            return
        if now - self.started_at < self.quick_crash_s:
            self.quick_crashes += 1
        else:
            self.quick_crashes = 1
        if self.quick_crashes >= self.max_quick_crashes:
            raise StackError(
                f"the {self.name} crashed {self.quick_crashes} times in a row "
                f"(last exit code {code}); giving up, see its output above"
            )
        delay = min(0.5 * 2 ** (self.quick_crashes - 1), 10.0)
        self.log(f"{self.name} exited with code {code}; restarting in {delay:g}s")
        self.restart_at = now + delay

    @property
    def running(self) -> bool:
        """True while the current process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds, and reap it."""
        self.done = True
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.log(f"{self.name} did not stop within {timeout:g}s; killing it")
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # Anything the child left in its group goes too.
        _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Supervisor:
    """Children in start order; :meth:`poll` restarts the dead, :meth:`stop_all` ends them all."""

    children: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        """Start ``child`` and supervise it."""
        self.children.append(child)
        child.start()
        return child

    def poll(self) -> None:
        """Restart dead children (a :class:`StackError` when one keeps crashing)."""
        for child in self.children:
            child.poll()

    def stop_named(self, names: set[str], timeout: float = STOP_TIMEOUT_S) -> list[Child]:
        """Stop the children called one of ``names`` (in reverse start order); the ones that
        were still supervised (see :meth:`resume`)."""
        stopped = []
        for child in reversed(self.children):
            if child.name in names and not child.done:
                child.stop(timeout)
                stopped.append(child)
        return stopped

    @staticmethod
    def resume(children: list[Child]) -> None:
        """Start again children that :meth:`stop_named` stopped."""
        for child in children:
            child.done = False
            child.quick_crashes = 0
            child.start()

    def running(self, name: str) -> bool:
        """True when a child called ``name`` is alive."""
        return any(child.name == name and child.running for child in self.children)

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the children in reverse start order."""
        for child in reversed(self.children):
            child.stop(timeout)
