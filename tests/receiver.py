"""A real local HTTP receiver for the delivery tests, with faults on purpose.

It runs an aiohttp server on a thread of its own. ``faults`` is a cycle of what to do with each
request: ``ok``, ``500``, ``429`` (with ``Retry-After``), ``slow`` (answer after the sender's
timeout), ``reset`` (close the connection with a TCP RST). It verifies each request's signature
with :mod:`hmac` directly (not with the code under test) and keeps every accepted body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Receiver:
    """The receiver's state, readable from the test thread (under :attr:`lock`)."""

    secret: bytes
    faults: list[str] = field(default_factory=lambda: ["ok"])
    retry_after_s: int = 1
    slow_s: float = 2.0
    accepted: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    _cycle: Iterator[str] = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._cycle = itertools.cycle(self.faults)

    def set_faults(self, faults: list[str]) -> None:
        """From now on, answer by this cycle."""
        with self.lock:
            self._cycle = itertools.cycle(faults)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self.lock:
            what = next(self._cycle)
            self.answered[what] = self.answered.get(what, 0) + 1
        if what == "500":
            return web.Response(status=500, text="boom")
        if what == "503":
            return web.Response(status=503, text="down")
        if what == "429":
            return web.Response(status=429, headers={"Retry-After": str(self.retry_after_s)})
        if what == "slow":
            await asyncio.sleep(self.slow_s)
            return web.Response(status=200)
        if what == "reset":
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.close()
            return web.Response(status=200)
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        with self.lock:
            if not hmac.compare_digest(expected, request.headers.get("X-Segmenter-Signature", "")):
                self.bad_signatures += 1
                return web.Response(status=401)
            self.accepted.append((dict(request.headers), orjson.loads(body)))
        return web.Response(status=200)

    def start(self) -> Receiver:
        """Serve on a free loopback port (:attr:`port`)."""
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/hook", self._handle)
            runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    @property
    def url(self) -> str:
        """The endpoint to configure."""
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def items(self) -> list[Any]:
        """Every item of every accepted batch, in arrival order."""
        with self.lock:
            return [item for _, body in self.accepted for item in body]
