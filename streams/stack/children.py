"""Running ``segmenter`` commands as child processes (the worker, mostly)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def settings_env(**values: object) -> dict[str, str]:
    """The current environment plus ``SEGMENTER_<NAME>`` for each keyword (None removes it)."""
    env = dict(os.environ)
    for name, value in values.items():
        key = f"SEGMENTER_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


@dataclass
class Child:
    """One ``python -m streams ...`` child with its output in a log file."""

    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    module: str = "streams"
    """The module run with ``python -m`` (the bench's peer app runs its own)."""
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="segmenter-child-", suffix=".log")[1])
    )

    def start(self) -> Child:
        """Start the child in its own process group."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the child's group, SIGKILL it after ``timeout``; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the child's group at once (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the child printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
