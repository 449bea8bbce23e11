"""``segmenter up`` run as a user runs it: a child process in a working directory, ready once
``.segmenter/stack.json`` is there; stopped with a signal or killed with all its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_up_stack import children_of

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0


def segmenter_command() -> list[str]:
    """The ``segmenter`` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "segmenter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "streams"]


def user_env(**extra: str) -> dict[str, str]:
    """The environment without any ``SEGMENTER_`` setting of ours, the repo's rules, a free
    HTTP port, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTER_")}
    env.update({"SEGMENTER_RULES": str(REPO / "rules"), "SEGMENTER_HTTP_PORT": "0", **extra})
    return env


RUNNING: list[UpStack] = []
"""Every stack started and not yet killed (the ``up_stacks`` fixture kills what a failed test
left running)."""


class UpStack:
    """One run of ``segmenter up`` in ``cwd`` (its output in ``cwd/up-<n>.log``)."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        RUNNING.append(self)
        self.cwd, self.env = cwd, env
        runs = len(list(cwd.glob("up-*.log")))
        self.log_path = cwd / f"up-{runs}.log"
        self._log = self.log_path.open("wb")
        (cwd / ".segmenter" / "stack.json").unlink(missing_ok=True)  # a killed run's
        self.proc = subprocess.Popen(
            [*segmenter_command(), "up", *args],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.children: set[int] = set()
        self.http_url = ""
        self.killed = False

    def output(self) -> str:
        """What ``up`` printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> UpStack:
        """Wait for ``stack.json`` (fail with the output when ``up`` dies or times out)."""
        stack_file = self.cwd / ".segmenter" / "stack.json"
        deadline = time.monotonic() + timeout
        while not stack_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"segmenter up did not get ready:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        self.http_url = orjson.loads(stack_file.read_bytes())["http_url"]
        self.children = children_of(self.proc.pid)
        return self

    def get(self, path: str) -> tuple[int, Any]:
        """``GET path`` on the API: status and JSON body."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=10) as response:
                return int(response.status), orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read() or b"null")

    def send(self, *events: dict[str, Any]) -> None:
        """``segmenter send`` of ``events`` (one JSON line each)."""
        lines = b"".join(orjson.dumps(event) + b"\n" for event in events)
        sent = subprocess.run(
            [*segmenter_command(), "send"],
            cwd=self.cwd,
            env=self.env,
            input=lines,
            capture_output=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr.decode()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Send ``sig`` to ``up`` and wait for it; its exit code."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL ``up`` and every child's process group at once (a power cut)."""
        if self.killed:
            return
        self.killed = True
        targets = [self.proc.pid, *self.children, *children_of(self.proc.pid)]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._log.close()


def wait_until(check: Any, timeout: float = 60.0, what: str = "the condition") -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture
def up_stacks() -> Iterator[list[UpStack]]:
    """Kills, at the end of the test, every stack it started and left running."""
    yield RUNNING
    while RUNNING:
        RUNNING.pop().kill()
