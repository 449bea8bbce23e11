"""The HTTP API at the door: every bad parameter or body is a 4xx that says why, a bad stored
state is one customer's problem, Redis down is a 503, and slow or malformed clients cost
nothing (issue: poison input)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.api import guards
from streams.api.http import HttpServer
from streams.engine import parse_rules
from streams.pipeline.metrics import Metrics
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.base import StoredState
from streams.store.memory import MemoryStore
from streams.store.redis_store import RedisStore
from tests.fixtures import TEST_RULES

DRAFT_HEAD = "id: d\nname: D\ndescription: draft\nkind: demographic\n"


async def health() -> dict[str, Any]:
    return {"ok": True, "redis": True, "started": True}


async def filled() -> MemoryStore:
    store = MemoryStore()
    settings = Settings(clock="event")
    ctx = PipelineContext.create(settings, parse_rules(TEST_RULES), store, 1)
    docs = [
        {
            "type": "track",
            "messageId": f"m{i}",
            "userId": cid,
            "timestamp": "2026-01-01T10:00:00Z",
            "event": "Order Completed",
            "properties": {"revenue": 10 * (i + 1)},
        }
        for i, cid in enumerate(["ada", "x{1}y", "bob"])
    ]
    records = [Record("segmenter.events", 0, i, None, orjson.dumps(d)) for i, d in enumerate(docs)]
    await process_batch(ctx, records)
    return store


def server_of(store: Any) -> HttpServer:
    settings = Settings(clock="event", http_port=0)
    return HttpServer(settings, parse_rules(TEST_RULES), store, Metrics(), health)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(server_of(await filled()).application())) as c:
        yield c


async def status_and_error(
    client: TestClient, method: str, path: str, **kw: Any
) -> tuple[int, str]:  # type: ignore[type-arg]
    response = await client.request(method, path, **kw)
    body = await response.read()
    message = orjson.loads(body).get("error", "") if body.startswith(b"{") else body.decode()
    errors = orjson.loads(body).get("errors", []) if body.startswith(b"{") else []
    return response.status, " ".join([str(message), *map(str, errors)])


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (
            "/v1/segments/buyer/members?cursor=18446744073709551616",
            "cursor: expected a whole number",
        ),
        ("/v1/segments/buyer/members?cursor=-1", "cursor"),
        ("/v1/segments/buyer/members?limit=-1", "limit: expected a whole number from 1 to 1000"),
        ("/v1/segments/buyer/members?limit=0", "limit"),
        ("/v1/segments/buyer/members?limit=%D9%A3", "limit"),
        ("/v1/segments/buyer/members?cursor=" + "9" * 5000, "cursor"),
        ("/v1/migrations/matrix?day=%D9%A2%D9%A0%D9%A2%D9%A6-01-01", "day"),
        ("/v1/segments/buyer/performance?window=2e305s", "window"),
        ("/v1/segments/buyer/performance?window=" + "9" * 400 + "d", "window"),
        ("/v1/report?window=1.8e305", "window"),
    ],
)
async def test_out_of_range_parameters_are_400_with_the_range(
    client: TestClient, path: str, why: str
) -> None:  # type: ignore[type-arg]
    status, error = await status_and_error(client, "GET", path)
    assert status == 400, (path, error)
    assert why in error


async def test_a_plain_number_of_seconds_is_a_window(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/v1/report?window=3600")
    assert response.status == 200, await response.text()


async def test_customer_ids_with_braces_can_be_looked_up(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/v1/customers/x%7B1%7Dy")
    assert response.status == 200
    assert (await response.json())["customer_id"] == "x{1}y"
    assert (await client.get("/v1/customers/x%7B1%7Dy/explain")).status == 200


BOMB = "id: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b]\n"
DEEP = DRAFT_HEAD + "condition: " + "{type: all, conditions: [" * 300 + "]}" * 300 + "\n"
DRAFTS = {
    "aliases": (BOMB.encode(), "anchors and aliases"),
    "brackets": (b"[" * 20000, "nested deeper"),
    "control character": (b"\x1f", "special characters are not allowed"),
    "deep all": (DEEP.encode(), "nested deeper"),
    "not UTF-8": (
        DRAFT_HEAD.encode() + b"condition: {type: trait, path: \xff, op: exists}",
        "UTF-8",
    ),
    "huge integer": (
        (
            DRAFT_HEAD
            + "condition: {type: lifetime, metric: orders, op: ge, value: "
            + "9" * 5000
            + "}"
        ).encode(),
        "100 digits",
    ),
    "huge duration": (
        (DRAFT_HEAD + "condition: {type: recency, event: x, within: 1.8e+305}").encode(),
        "1000 years",
    ),
    "infinite value": (
        (DRAFT_HEAD + "condition: {type: lifetime, metric: orders, op: ge, value: .inf}").encode(),
        "finite",
    ),
    "too large": (
        (
            DRAFT_HEAD
            + "condition: {type: trait, path: z, op: in, value: ["
            + ",".join(["1234567"] * 20000)
            + "]}"
        ).encode(),
        "larger than",
    ),
}


@pytest.mark.parametrize("name", sorted(DRAFTS))
async def test_hostile_drafts_are_422_and_quick(client: TestClient, name: str) -> None:  # type: ignore[type-arg]
    body, why = DRAFTS[name]
    started = time.monotonic()
    status, error = await status_and_error(client, "POST", "/v1/segments/preview", data=body)
    assert status == 422, (name, error)
    assert why in error, (name, error)
    assert time.monotonic() - started < 30  # not a speed test: a guard against a hang


async def test_a_preview_does_not_hold_up_other_requests(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[type-arg]
    """The draft compiles in a thread: while one is compiling, lookups are answered."""
    from streams.api import preview

    compiling = asyncio.Event()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = preview.compile_draft

    def slow(*args: Any) -> Any:
        loop.call_soon_threadsafe(compiling.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)
        return real(*args)

    monkeypatch.setattr(preview, "compile_draft", slow)
    draft = DRAFT_HEAD + "condition: {type: trait, path: plan, op: exists}\n"
    pending = asyncio.create_task(client.post("/v1/segments/preview", data=draft))
    await asyncio.wait_for(compiling.wait(), 30)
    assert (await client.get("/v1/customers/ada")).status == 200
    release.set()
    assert (await pending).status == 200


async def test_an_unreadable_state_is_skipped_by_shared_views_and_counted() -> None:
    store = await filled()
    store.states["broken"] = StoredState(1, b'{"id": "broken", "rv": null}')
    store.segments.setdefault("buyer", set()).add("broken")
    async with TestClient(TestServer(server_of(store).application())) as client:
        for path in (
            "/v1/rfm/grid",
            "/v1/report",
            "/v1/segments/buyer",
            "/v1/segments/buyer/performance",
        ):
            response = await client.get(path)
            assert response.status == 200, (path, await response.text())
        status, error = await status_and_error(client, "GET", "/v1/customers/broken")
        assert (status, error) == (500, "this customer's stored state cannot be read")
        assert (await client.get("/v1/customers/ada")).status == 200
        metrics = await (await client.get("/metrics")).text()
    [line] = [x for x in metrics.splitlines() if x.startswith("segmenter_unreadable_states_total")]
    assert int(line.split()[1]) >= 1


async def test_redis_down_is_503_not_500() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:9/0", "ns")  # nothing listens on port 9
    try:
        async with TestClient(TestServer(server_of(store).application())) as client:
            for path in ("/v1/customers/ada", "/v1/customers/ada/explain", "/v1/segments"):
                response = await client.get(path)
                assert response.status == 503, path
                assert response.headers["Retry-After"] == "2"
    finally:
        await store.close()


async def raw_server(monkeypatch: pytest.MonkeyPatch) -> HttpServer:
    monkeypatch.setattr(guards, "IDLE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(guards, "BODY_TIMEOUT_S", 1.0)
    server = server_of(await filled())
    await server.start()
    return server


async def test_half_sent_requests_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    server = await raw_server(monkeypatch)
    try:
        host, port = server.url.split("//")[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /v1/segments HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 20) == b""  # closed by the server
        writer.close()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/segments/preview HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nid: x"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 20)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        writer.transport.abort()
    finally:
        await server.stop()


async def test_a_malformed_request_line_logs_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = await raw_server(monkeypatch)
    try:
        host, port = server.url.split("//")[1].split(":")
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"\x16\x03\x01 garbage \x00\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 20)
            writer.close()
    finally:
        await server.stop()
    assert answer.startswith(b"HTTP/1.")
    assert b" 400 " in answer.split(b"\r\n")[0]
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.exc_info is None and r.exc_text is None for r in records)
    assert all("bad request from a client" in r.getMessage() for r in records)
