"""The visitor routes over HTTP (aiohttp's test server): tokens, scope, CORS, the stream, the
page and ``segmenter.js``, against states the real processor wrote to a MemoryStore."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from streams.api.http import HttpServer
from streams.api.visitor_hub import VisitorHub
from streams.api.visitor_tokens import issue
from streams.engine import parse_rules
from streams.pipeline.metrics import Metrics
from tests.fixtures import TEST_RULES
from tests.visitor_kit import Shop, canadian, moves, order, parse_sse, received

SECRET = "visitor-secret-for-tests"
API_KEY = "api-key"
SITE = "https://shop.example"
JS_LIMIT = 5 * 1024
READ_TIMEOUT_S = 20.0
"""Longest wait for the next bytes of a stream (generous: a loaded machine)."""


async def healthy() -> dict[str, Any]:
    return {"ok": True, "redis": True}


async def start(shop: Shop, hub: VisitorHub | None) -> TestClient:  # type: ignore[type-arg]
    server = HttpServer(
        shop.settings, parse_rules(TEST_RULES), shop.store, Metrics(), healthy, visitors=hub
    )
    client = TestClient(TestServer(server.application()))
    await client.start_server()
    return client


@pytest.fixture
async def shop() -> Shop:
    shop = Shop(
        visitor_secret=SecretStr(SECRET),
        api_key=SecretStr(API_KEY),
        visitor_origins=f"{SITE}, https://other.example/",
    )
    await shop.send(canadian("m1", "a"), order("m2", "a", 20), canadian("m3", "b"))
    await shop.send(order("m4", "b", 2000))
    return shop


@pytest.fixture
async def client(shop: Shop) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    shop.hub.ready.set()
    c = await start(shop, shop.hub)
    yield c
    await c.close()


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, checking its HS256 signature by hand (RFC 7515)."""
    head, body, signature = token.split(".")
    expected = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    assert header == {"alg": "HS256", "typ": "JWT"}
    return dict(orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


async def mint(client: TestClient, customer: str) -> str:  # type: ignore[type-arg]
    response = await client.post(
        "/v1/visitor/tokens",
        json={"customer_id": customer},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status == 200, await response.text()
    return str((await response.json())["token"])


async def test_the_site_backend_mints_a_token_with_the_api_key(client: TestClient) -> None:  # type: ignore[type-arg]
    before = int(time.time())
    response = await client.post(
        "/v1/visitor/tokens",
        json={"customer_id": "a"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    answer = await response.json()
    claims = claims_of(answer["token"])
    assert claims["sub"] == "a" and claims["aud"] == "segmenter:visitor"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(claims["exp"]))
    assert answer["expires_at"] == expires

    no_key = await client.post("/v1/visitor/tokens", json={"customer_id": "a"})
    assert no_key.status == 401
    for body in (b"{", b"[]", b'{"customer_id": ""}', b'{"customer_id": 7}'):
        bad = await client.post(
            "/v1/visitor/tokens", data=body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert bad.status == 400 and "error" in await bad.json()


async def test_a_token_reads_only_its_customers_segment_ids(shop: Shop, client: TestClient) -> None:  # type: ignore[type-arg]
    token = await mint(client, "a")
    response = await client.get(f"/v1/visitor/segments?token={token}")  # no API key needed
    assert response.status == 200
    assert await response.json() == {"segments": shop.segments("a"), "sequence": len(shop.of("a"))}
    assert shop.segments("a") != shop.segments("b")
    assert (await client.get("/v1/customers/a")).status == 401  # the key still guards the rest

    secret = SECRET.encode()
    now = int(time.time())
    head, body, sig = token.split(".")
    claims = claims_of(token)
    tampered_body = base64.urlsafe_b64encode(orjson.dumps({**claims, "sub": "b"})).rstrip(b"=")
    refused = {
        "another customer": f"{token}&customer_id=b",
        "expired": issue(secret, "a", now - 7200, 3600),
        "tampered": f"{head}.{tampered_body.decode()}.{sig}",
        "forged": issue(b"not-the-secret", "b", now, 3600),
        "unsigned": f"{head}.{body}.",
        "missing": "",
    }
    for why, bad in refused.items():
        for route in ("segments", "stream"):
            answer = await client.get(f"/v1/visitor/{route}?token={bad}")
            assert answer.status == 401, (why, route)
            assert (await answer.json())["error"], why
    expired = await client.get(f"/v1/visitor/segments?token={refused['expired']}")
    assert "expired" in (await expired.json())["error"]
    own = await client.get(f"/v1/visitor/segments?token={token}&customer_id=a")
    assert own.status == 200


async def test_cors_follows_the_allow_list(client: TestClient) -> None:  # type: ignore[type-arg]
    token = await mint(client, "a")
    path = f"/v1/visitor/segments?token={token}"
    allowed = await client.get(path, headers={"Origin": SITE})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in allowed.headers["Vary"]
    other = await client.get(path, headers={"Origin": "https://other.example"})
    assert other.headers["Access-Control-Allow-Origin"] == "https://other.example"
    foreign = await client.get(path, headers={"Origin": "https://evil.example"})
    assert foreign.status == 403 and "Access-Control-Allow-Origin" not in foreign.headers
    assert "SEGMENTER_VISITOR_ORIGINS" in (await foreign.json())["error"]
    plain = await client.get(path)
    assert plain.status == 200 and "Access-Control-Allow-Origin" not in plain.headers

    preflight = await client.options(
        "/v1/visitor/stream",
        headers={"Origin": SITE, "Access-Control-Request-Headers": "last-event-id"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == SITE
    assert "Last-Event-ID" in preflight.headers["Access-Control-Allow-Headers"]
    refused = await client.options("/v1/visitor/stream", headers={"Origin": "https://evil.example"})
    assert refused.status == 403


async def read_events(response: Any, count: int) -> list[tuple[str, int, dict[str, Any]]]:
    text = ""
    while len(parse_sse(text)) < count:
        chunk = await asyncio.wait_for(response.content.readany(), READ_TIMEOUT_S)
        assert chunk, f"stream ended after {text!r}"
        text += chunk.decode()
    return parse_sse(text)


async def test_the_stream_over_http(shop: Shop, client: TestClient) -> None:  # type: ignore[type-arg]
    token = await mint(client, "a")
    response = await client.get(f"/v1/visitor/stream?token={token}", headers={"Origin": SITE})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    [snapshot] = await read_events(response, 1)
    assert snapshot == (
        "snapshot",
        len(shop.of("a")),
        {"segments": shop.segments("a"), "sequence": len(shop.of("a"))},
    )
    before = len(shop.of("a"))
    await shop.send(order("m5", "a", 5000))
    events = await read_events(response, len(shop.of("a")) - before)
    assert len(events) == 2 and received(events) == moves(shop.of("a")[before:])
    response.close()

    resumed = await client.get(
        f"/v1/visitor/stream?token={token}", headers={"Last-Event-ID": str(before)}
    )
    events = await read_events(resumed, len(shop.of("a")) - before)
    assert received(events) == moves(shop.of("a")[before:])  # no snapshot: the missed ones
    resumed.close()
    by_query = await client.get(f"/v1/visitor/stream?token={token}&last_event_id={before}")
    events = await read_events(by_query, len(shop.of("a")) - before)
    assert received(events) == moves(shop.of("a")[before:])
    by_query.close()


async def test_the_stream_needs_a_hub_and_a_secret(shop: Shop) -> None:
    client = await start(shop, None)  # a worker's API: no feed
    try:
        token = await mint(client, "a")
        response = await client.get(f"/v1/visitor/stream?token={token}")
        assert response.status == 503
        assert "segmenter api" in (await response.json())["error"]
    finally:
        await client.close()
    shop.settings = shop.settings.model_copy(update={"visitor_secret": None})
    client = await start(shop, shop.hub)
    try:
        minted = await client.post(
            "/v1/visitor/tokens",
            json={"customer_id": "a"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert minted.status == 503
        assert "SEGMENTER_VISITOR_SECRET" in (await minted.json())["error"]
    finally:
        await client.close()


def minified(source: str) -> str:
    """A simple minified form: comments and indentation gone, one statement per line."""
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//"))


async def test_segmenter_js_and_the_demo_page(client: TestClient) -> None:  # type: ignore[type-arg]
    script = await client.get("/static/segmenter.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("application/javascript")
    source = await script.text()
    assert len(minified(source).encode()) < JS_LIMIT
    assert "import " not in source and "require(" not in source and "http" not in minified(source)
    for api in ("connect", "on", "close", "data-segment", "data-segment-not", "last_event_id"):
        assert api in source, api
    page = await client.get("/demo")
    assert page.status == 200
    html = await page.text()
    assert '<script src="/static/segmenter.js">' in html
    assert 'data-segment="new_customer"' in html
    assert "http://" not in html and "https://" not in html


async def test_visitor_metrics(shop: Shop, client: TestClient) -> None:  # type: ignore[type-arg]
    token = await mint(client, "a")
    response = await client.get(f"/v1/visitor/stream?token={token}")
    await read_events(response, 1)
    metrics = await (await client.get("/metrics")).text()
    assert "segmenter_visitor_streams 1" in metrics
    response.close()
