"""Headless Chromium driven over the DevTools protocol (a websocket), for the e2e tests.

Needs the Debian packages ``chromium`` (and ``chromium-driver``). Without them a test is
skipped, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,1300",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str:
    """The Chromium binary; skips the test without one (fails it under CI)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "chromium is not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"browser e2e test cannot run under CI: {reason}")
    pytest.skip(reason)


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=(profile.parent / "chromium.log").open("wb"),
            start_new_session=True,
        )
        self.ids = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, timeout: float = 30.0) -> None:
        """Find the DevTools port (``DevToolsActivePort``) and attach to the page target."""
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.profile.parent / "chromium.log").read_text(errors="replace")
                raise AssertionError(f"chromium did not start:\n{log[-2000:]}")
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One CDP command; its result."""
        assert self.ws is not None
        mid = next(self.ids)
        await self.ws.send_str(
            orjson.dumps({"id": mid, "method": method, "params": params}).decode()
        )
        while True:
            message = orjson.loads((await self.ws.receive(timeout=60)).data)
            if message.get("id") == mid:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_json(
        self, expression: str, check: Any, timeout: float, every: float = 1.0, what: str = "page"
    ) -> dict[str, Any]:
        """The value of ``expression`` (a ``JSON.stringify(...)``) once ``check`` holds for it,
        polled every ``every`` seconds for at most ``timeout``."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            raw = await self.evaluate(expression)
            state = orjson.loads(raw) if raw else {}
            if state and check(state):
                return state
            await asyncio.sleep(every)
        raise AssertionError(f"{what} did not get there in {timeout:g}s: {state}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


async def open_page(directory: Path, url: str) -> Browser:
    """Chromium (profile under ``directory``) showing ``url``; skips without Chromium. The
    caller closes it."""
    binary = chromium_binary()
    profile = directory / "chromium-profile"
    profile.mkdir()
    browser = Browser(binary, profile)
    try:
        await browser.connect()
        await browser.call("Page.enable")
        await browser.call("Page.navigate", url=url)
    except BaseException:
        await browser.close()
        raise
    return browser
