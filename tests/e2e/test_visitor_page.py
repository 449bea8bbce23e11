"""Visitors end to end: a real worker and a real ``segmenter api`` on the session's broker and
Redis, with the default rule pack, an API key and a visitor secret.

- token scope: a token reads its own customer's segment ids only; another customer's, an
  expired one and a tampered one get 401 (segments and stream);
- resume: a stream is closed, migrations happen, a stream opened with ``Last-Event-ID`` gets
  exactly those, in order, once;
- merge: a stream of an anonymous id keeps receiving after the id is merged into a user;
- the demo page in headless Chromium: an order sent with ``segmenter send`` makes the
  ``new_customer`` banner appear without a reload.

The reference is the migrations topic itself, read with a plain Kafka consumer. One worker and
one API process serve the whole module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from streams.api.visitor_tokens import issue
from streams.stack.children import Child
from streams.stack.embedded import free_port
from tests.e2e.browser import Browser, open_page
from tests.integration.harness import Deployment, consume_until, produce, values
from tests.visitor_kit import parse_sse

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SECRET = "e2e-visitor-secret"
API_KEY = "e2e-api-key"
READY_TIMEOUT_S = 90.0
WAIT_S = 60.0
SETTLE_S = 1.0
"""After the reference has what a test waits for, how long later migrations may still come."""

Moves = list[tuple[str, int, str]]


@dataclass
class Site:
    """The running worker and API."""

    url: str
    deployment: Deployment
    env: dict[str, str]
    worker: Child
    api: Child

    async def mint(self, customer: str) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.url}/v1/visitor/tokens",
                json={"customer_id": customer},
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
            return str((await response.json())["token"])

    async def send(self, *docs: dict[str, Any]) -> None:
        items = [(str(d.get("userId") or d["anonymousId"]).encode(), orjson.dumps(d)) for d in docs]
        await produce(self.deployment.kafka, self.deployment.input, items)

    async def reference(self, customer: str, count: int, after: int = 0) -> list[dict[str, Any]]:
        """The customer's migrations on the topic numbered above ``after``, once at least
        ``count`` are there and no more came for a while."""

        def mine(records: list[Any]) -> list[dict[str, Any]]:
            found = [v for v in values(records) if v["customer_id"] == customer]
            return [v for v in found if v["sequence"] > after]

        records = await consume_until(
            self.deployment.kafka,
            self.deployment.migrations,
            lambda rs: len(mine(rs)) >= count,
            timeout=WAIT_S,
            worker=self.worker,
            settle=SETTLE_S,
        )
        return mine(records)


def moves(migrations: list[dict[str, Any]]) -> Moves:
    return [(m["direction"], m["sequence"], m["segment"]) for m in migrations]


def fold(migrations: list[dict[str, Any]]) -> list[str]:
    members: set[str] = set()
    for m in migrations:
        (members.add if m["direction"] == "entered" else members.discard)(m["segment"])
    return sorted(members)


def event(kind: str, user: str, **fields: Any) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "userId": user,
        "timestamp": stamp,
        **fields,
    }


def order(user: str, revenue: float = 40.0) -> dict[str, Any]:
    return event("track", user, event="Order Completed", properties={"revenue": revenue})


@pytest.fixture(scope="module")
def site(kafka_bootstrap: str, redis_url: str) -> Iterator[Site]:
    deployment = Deployment(kafka_bootstrap, redis_url, f"t{uuid.uuid4().hex[:8]}", REPO / "rules")
    asyncio.run(deployment.create_topics())
    env = deployment.env(api_key=API_KEY, visitor_secret=SECRET, visitor_heartbeat_s=2)
    env["SEGMENTER_CLOCK"] = "processing"
    worker = Child(["worker"], env).start()
    port = free_port()
    api = Child(["api"], {**env, "SEGMENTER_HTTP_PORT": str(port)}).start()
    site = Site(f"http://127.0.0.1:{port}", deployment, env, worker, api)
    try:
        asyncio.run(_ready(site))
        yield site
    finally:
        api.stop()
        worker.stop()


async def _ready(site: Site) -> None:
    """Until the API's visitor stream is served (its feed reads the topic)."""
    token = issue(SECRET.encode(), "nobody", int(time.time()), 600)
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for child in (site.worker, site.api):
                assert child.alive(), child.log_tail()
            try:
                async with session.get(f"{site.url}/v1/visitor/stream?token={token}") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise AssertionError(f"the API did not serve streams:\n{site.api.log_tail()}")


class Stream:
    """One visitor stream read with aiohttp: its events so far, parsed."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.text = ""

    async def events(self, count: int) -> list[tuple[str, int, dict[str, Any]]]:
        """The first ``count`` events of the stream, once they came within ``WAIT_S`` (the
        heartbeats keep the stream busy: the wait is for the events, not for any chunk)."""
        deadline = time.monotonic() + WAIT_S
        while len(parse_sse(self.text)) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{count} events did not come in {WAIT_S}s: {self.text!r}"
            with contextlib.suppress(asyncio.TimeoutError):
                chunk = await asyncio.wait_for(self.response.content.readany(), left)
                assert chunk, f"the stream ended: {self.text!r}"
                self.text += chunk.decode()
        return parse_sse(self.text)[:count]


@contextlib.asynccontextmanager
async def stream(
    site: Site, token: str, last: int | None = None, query: str = ""
) -> AsyncIterator[Stream]:
    """``GET /v1/visitor/stream?token=`` (with ``Last-Event-ID: last``) while in the block."""
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        url = f"{site.url}/v1/visitor/stream?token={token}{query}"
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            yield Stream(response)


def received(events: list[tuple[str, int, dict[str, Any]]]) -> Moves:
    return [(e, i, d["segment"]) for e, i, d in events]


async def status_of(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_a_token_reads_its_own_customer_only(site: Site) -> None:
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    await site.send(order(a), event("identify", b, traits={"age": 30}))
    of_a = await site.reference(a, 2)
    of_b = await site.reference(b, 1)
    assert fold(of_a) != fold(of_b)
    token = await site.mint(a)
    code, body = await status_of(f"{site.url}/v1/visitor/segments?token={token}")
    assert code == 200
    assert body == {"segments": fold(of_a), "sequence": max(m["sequence"] for m in of_a)}

    head, claims, signature = token.split(".")
    doc = orjson.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    swapped = base64.urlsafe_b64encode(orjson.dumps({**doc, "sub": b})).rstrip(b"=").decode()
    refused = {
        "another customer": f"{token}&customer_id={b}",
        "expired": issue(SECRET.encode(), a, int(time.time()) - 7200, 3600),
        "tampered": f"{head}.{swapped}.{signature}",
    }
    for why, bad in refused.items():
        for route in ("segments", "stream"):
            code, body = await status_of(f"{site.url}/v1/visitor/{route}?token={bad}")
            assert code == 401 and body["error"], (why, route, body)
    code, _ = await status_of(f"{site.url}/v1/customers/{a}")
    assert code == 401  # the API key still guards the rest of /v1/


async def test_resume_with_last_event_id_gets_the_missed_migrations_once(site: Site) -> None:
    visitor = f"r-{uuid.uuid4().hex[:6]}"
    token = await site.mint(visitor)
    async with stream(site, token) as first:
        [snapshot] = await first.events(1)
        assert snapshot == ("snapshot", 0, {"segments": [], "sequence": 0})
        await site.send(event("identify", visitor, traits={"age": 30}))
        before = await site.reference(visitor, 1)
        got = await first.events(1 + len(before))
        assert received(got[1:]) == moves(before)
    last = before[-1]["sequence"]

    await site.send(order(visitor))  # while no stream is open
    missed = await site.reference(visitor, 2, after=last)
    async with stream(site, token, last=last) as resumed:
        got = await resumed.events(len(missed))
        assert received(got) == moves(missed)
        assert [i for _, i, _ in got] == list(range(last + 1, last + 1 + len(missed)))
        await site.send(order(visitor))  # what comes next follows, with nothing sent twice
        later = await site.reference(visitor, 1, after=missed[-1]["sequence"])
        got = await resumed.events(len(missed) + len(later))
        assert received(got) == moves(missed + later)


async def test_an_anonymous_visitor_keeps_receiving_after_a_merge(site: Site) -> None:
    anonymous, user = f"anon-{uuid.uuid4().hex[:6]}", f"user-{uuid.uuid4().hex[:6]}"
    page = event("page", user, name="Home", anonymousId=anonymous)
    del page["userId"]
    await site.send(page)
    of_anonymous = await site.reference(anonymous, 1)
    token = await site.mint(anonymous)
    async with stream(site, token) as live:
        [snapshot] = await live.events(1)
        assert snapshot[2]["segments"] == fold(of_anonymous)
        merge = event("identify", user, anonymousId=anonymous, traits={"age": 30})
        await site.send(merge)
        exits = await site.reference(anonymous, 1, after=of_anonymous[-1]["sequence"])
        got = await live.events(1 + len(exits) + 1)
        assert received(got[1 : 1 + len(exits)]) == moves(exits)
        kind, sequence, data = got[-1]
        assert kind == "snapshot"
        of_user = await site.reference(user, 1)
        assert data == {"segments": fold(of_user), "sequence": sequence}
        await site.send(order(user))
        later = await site.reference(user, 2, after=sequence)
        got = await live.events(len(got) + len(later))
        assert received(got[-len(later) :]) == moves(later)
        assert ("entered", "new_customer") in {(m["direction"], m["segment"]) for m in later}


BANNER_JS = """JSON.stringify({
  connected: document.body.dataset.connected,
  segments: document.body.dataset.segments,
  moves: Number(document.body.dataset.moves),
  banner: !document.querySelector('[data-segment="new_customer"]').hidden,
  fallback: !document.querySelector('[data-segment-not]').hidden,
  same: window.sameDocument === true,
  snapshots: [...document.querySelectorAll('#log div')]
    .filter(row => row.textContent.includes('snapshot #')).length,
})"""
RECONNECT_JS = """document.body.dataset.connected = '0'; Segmenter.close();
Segmenter.connect(new URLSearchParams(location.search).get('token')); 1"""


async def page_state(browser: Browser, check: Any) -> dict[str, Any]:
    return await browser.wait_json(BANNER_JS, check, WAIT_S, every=0.25, what="the demo page")


async def test_the_demo_page_swaps_its_banner_live(site: Site, tmp_path: Path) -> None:
    visitor = f"v-{uuid.uuid4().hex[:6]}"
    token = await site.mint(visitor)
    browser = await open_page(tmp_path, f"{site.url}/demo?token={token}")
    try:
        state = await page_state(browser, lambda s: s["connected"] == "1")
        assert not state["banner"] and state["fallback"]
        await browser.evaluate("window.sameDocument = true; 1")  # a reload would forget it
        sent = subprocess.run(
            [sys.executable, "-m", "streams", "send", orjson.dumps(order(visitor)).decode()],
            env=site.env,
            capture_output=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr.decode()
        first = await site.reference(visitor, 2)
        state = await page_state(browser, lambda s: s["segments"].split() == fold(first))
        assert state["banner"] and not state["fallback"] and state["same"]
        assert "new_customer" in fold(first)

        # segmenter.js reconnects from the last id it saw: nothing again, then what follows
        await browser.evaluate(RECONNECT_JS)
        before = (await page_state(browser, lambda s: s["connected"] == "1"))["moves"]
        await site.send(order(visitor))
        later = await site.reference(visitor, 1, after=first[-1]["sequence"])
        state = await page_state(browser, lambda s: s["segments"].split() == fold(first + later))
        assert not state["banner"] and state["fallback"] and state["same"]
        assert state["moves"] == before + len(later)
        assert state["snapshots"] == 1  # the first connection's only
    finally:
        await browser.close()
