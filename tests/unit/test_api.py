"""The HTTP API against a MemoryStore filled through the real processor."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from streams.api.http import HttpServer
from streams.engine import parse_rules
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from tests.events import event, order
from tests.fixtures import TEST_RULES

RULES = TEST_RULES

DRAFT = """\
id: canadians
name: Canadians (draft)
description: lives in Canada or the US
kind: demographic
condition: {type: trait, path: address.country, op: in, value: [CA, US]}
"""

BAD_DRAFT = """\
id: broken
name: Broken
description: nope
kind: demographic
condition: {type: trait, path: age, op: around, value: 3}
"""


def identify(mid: str, user: str, country: str) -> dict[str, Any]:
    return event("identify", mid, user, traits={"address": {"country": country}, "plan": "pro"})


DOCS = [
    identify("i1", "u1", "CA"),
    order("o1", "u1", 1500),
    identify("i2", "u2", "CA"),
    order("o2", "u2", 20),
    identify("i3", "u3", "US"),
    order("o3", "u3", 30),
    order("o4", "u3", 40),
    identify("i4", "u4", "FR"),
    identify("i5", "u5", "CA"),
]


async def filled_store(settings: Settings) -> MemoryStore:
    store = MemoryStore()
    ctx = PipelineContext.create(settings, parse_rules(RULES), store, 1)
    recs = [
        Record("segmenter.events", 0, offset, doc["userId"].encode(), orjson.dumps(doc))
        for offset, doc in enumerate(DOCS)
    ]
    await process_batch(ctx, recs)
    return store


async def make_client(api_key: str | None = None) -> TestClient:  # type: ignore[type-arg]
    settings = Settings(clock="event", http_port=0, api_key=SecretStr(api_key) if api_key else None)
    store = await filled_store(settings)
    tables = {"2026-01-01": {"-|buyer": 3, "buyer|big_spender": 1, "bad": 5, "a|b": "x"}}

    async def matrix(day: str) -> dict[str, Any]:
        return dict(tables.get(day, {}))

    store.matrix = matrix  # type: ignore[method-assign]

    async def health() -> dict[str, Any]:
        return {"ok": True, "redis": True, "started": True}

    server = HttpServer(
        settings,
        parse_rules(RULES),
        store,
        PipelineContext.create(settings, parse_rules(RULES), store, 1).metrics,
        health,
    )
    client = TestClient(TestServer(server.application()))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    c = await make_client()
    yield c
    await c.close()


async def get(client: TestClient, path: str, status: int = 200) -> Any:  # type: ignore[type-arg]
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def test_customer_lookup(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await get(client, "/v1/customers/u1")
    assert body["customer_id"] == "u1"
    assert body["segments"] == ["big_spender", "canadians"]
    assert body["primary_segment"] == "big_spender"
    assert body["traits"]["address"]["country"] == "CA"
    assert body["features"]["orders"] == 1 and body["features"]["revenue"] == 1500


async def test_unknown_customer_is_404(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await get(client, "/v1/customers/nobody", 404)
    assert body["error"]
    await get(client, "/v1/customers/nobody/explain", 404)


async def test_explain(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await get(client, "/v1/customers/u2/explain")
    rows = {row["segment"]: row for row in body["segments"]}
    assert set(rows) == {"big_spender", "buyer", "canadians"}
    assert rows["buyer"]["member"] and rows["buyer"]["holds_now"]
    assert not rows["big_spender"]["holds_now"]
    assert rows["big_spender"]["rule"]
    assert isinstance(rows["big_spender"]["values"], dict)


async def test_segments_with_sizes(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await get(client, "/v1/segments")
    sizes = {s["id"]: s["size"] for s in body["segments"]}
    assert sizes == {"big_spender": 1, "buyer": 2, "canadians": 3}
    one = await get(client, "/v1/segments/canadians")
    assert one["members"] == 3 and one["summary"]["sampled"] == 3
    assert one["summary"]["average_lifetime_revenue"] == round(1520 / 3, 2)
    assert one["summary"]["average_order_value"] == 760
    assert {"trait": "plan", "value": "pro", "count": 3, "share": 1.0} in one["summary"][
        "top_traits"
    ]
    await get(client, "/v1/segments/nope", 404)


async def test_members_paging(client: TestClient) -> None:  # type: ignore[type-arg]
    seen: list[str] = []
    cursor: int | None = 0
    pages = 0
    while cursor is not None:
        body = await get(client, f"/v1/segments/canadians/members?limit=2&cursor={cursor}")
        seen.extend(body["members"])
        cursor = body["next_cursor"]
        pages += 1
    assert sorted(seen) == ["u1", "u2", "u5"] and pages == 2
    await get(client, "/v1/segments/nope/members", 404)
    await get(client, "/v1/segments/canadians/members?cursor=x", 400)


async def test_preview_valid_draft(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.post("/v1/segments/preview", data=DRAFT)
    assert response.status == 200
    body = await response.json()
    assert body["size"] == 4 and body["would_enter"] == 1 and body["would_leave"] == 0
    assert body["scanned"] == 5 and body["errors"] == []
    narrower = DRAFT.replace("[CA, US]", "[US]")
    body = await (await client.post("/v1/segments/preview", data=narrower)).json()
    assert (body["size"], body["would_enter"], body["would_leave"]) == (1, 1, 3)
    fresh = DRAFT.replace("id: canadians", "id: north_america")
    body = await (await client.post("/v1/segments/preview", data=fresh)).json()
    assert (body["size"], body["would_enter"], body["would_leave"]) == (4, 4, 0)
    as_json = orjson.dumps(
        {
            "id": "rich",
            "name": "Rich",
            "description": "d",
            "kind": "value",
            "condition": {"type": "in_segment", "segment": "big_spender"},
        }
    )
    response = await client.post(
        "/v1/segments/preview", data=as_json, headers={"Content-Type": "application/json"}
    )
    assert response.status in (200, 422)  # in_segment needs the active rule files on disk


async def test_preview_invalid_draft(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.post("/v1/segments/preview", data=BAD_DRAFT)
    assert response.status == 422
    body = await response.json()
    assert body["errors"] and all(re.match(r"^draft\.yaml:\d+: ", e) for e in body["errors"])
    assert any("draft.yaml:5:" in e for e in body["errors"])
    response = await client.post("/v1/segments/preview", data=RULES["value.yaml"])
    assert response.status == 422
    response = await client.post("/v1/segments/preview", data="id: [unclosed")
    assert response.status == 422


async def test_matrix(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await get(client, "/v1/migrations/matrix?day=2026-01-01")
    assert body["cells"] == [
        {"from": "-", "to": "buyer", "count": 3},
        {"from": "buyer", "to": "big_spender", "count": 1},
    ]
    assert body["total"] == 4
    assert {s["id"] for s in body["segments"]} == {"buyer", "big_spender"}
    empty = await get(client, "/v1/migrations/matrix?day=2020-01-01")
    assert empty["cells"] == [] and empty["total"] == 0
    await get(client, "/v1/migrations/matrix?day=yesterday", 400)


async def test_rfm_grid(client: TestClient) -> None:  # type: ignore[type-arg]
    body = await get(client, "/v1/rfm/grid")
    assert len(body["grid"]) == 5 and all(len(row) == 5 for row in body["grid"])
    assert sum(map(sum, body["grid"])) == body["scored"] == 3


async def test_health_and_metrics(client: TestClient) -> None:  # type: ignore[type-arg]
    assert (await get(client, "/healthz"))["ok"] is True
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert "segmenter_events_total" in text
    assert 'segmenter_segment_size{segment="canadians"} 3' in text
    assert "segmenter_timer_delay_max_seconds" in text


async def test_dashboard_is_served_without_cdn(client: TestClient) -> None:  # type: ignore[type-arg]
    response = await client.get("/")
    page = await response.text()
    assert response.status == 200 and "/static/app.js" in page
    assert "http://" not in page and "https://" not in page
    for name in ("app.js", "charts.js", "app.css"):
        asset = await client.get(f"/static/{name}")
        assert asset.status == 200
        assert "https://" not in (await asset.text()).replace("https://www.w3.org", "")
    assert (await client.get("/static/../http.py")).status == 404


V1_ROUTES = [
    ("GET", "/v1/customers/u1"),
    ("GET", "/v1/customers/u1/explain"),
    ("GET", "/v1/segments"),
    ("GET", "/v1/segments/canadians"),
    ("GET", "/v1/segments/canadians/members"),
    ("POST", "/v1/segments/preview"),
    ("GET", "/v1/migrations/matrix?day=2026-01-01"),
    ("GET", "/v1/rfm/grid"),
]


async def test_auth_on_every_v1_route() -> None:
    client = await make_client(api_key="s3cret")
    try:
        for method, path in V1_ROUTES:
            data = DRAFT if method == "POST" else None
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                response = await client.request(method, path, headers=headers, data=data)
                assert response.status == 401, (method, path, headers)
            good = {"Authorization": "Bearer s3cret"}
            response = await client.request(method, path, headers=good, data=data)
            assert response.status == 200, (method, path, await response.text())
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/openapi.json")).status == 200
    finally:
        await client.close()


async def test_health_503_when_not_ready() -> None:
    settings = Settings(http_port=0)

    async def sick() -> dict[str, Any]:
        return {"ok": True, "redis": False}

    async def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    for check in (sick, broken):
        server = HttpServer(
            settings,
            parse_rules(RULES),
            MemoryStore(),
            PipelineContext.create(settings, parse_rules(RULES), MemoryStore(), 1).metrics,
            check,
        )
        async with TestClient(TestServer(server.application())) as c:
            assert (await c.get("/healthz")).status == 503


async def test_openapi_lists_every_route(client: TestClient) -> None:  # type: ignore[type-arg]
    doc = await get(client, "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    app = client.app
    assert app is not None
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented


async def test_delivery_figures_on_metrics_and_destinations() -> None:
    settings = Settings()
    store = MemoryStore()

    async def health() -> dict[str, Any]:
        return {"ok": True, "redis": True}

    async def delivery() -> dict[str, dict[str, float]]:
        return {"crm": {"delivered": 12.0, "retried": 3.0, "lag": 4.0}, "ads": {"lag": 0.0}}

    server = HttpServer(
        settings,
        parse_rules(RULES),
        store,
        PipelineContext.create(settings, parse_rules(RULES), store, 1).metrics,
        health,
        delivery=delivery,
    )
    async with TestClient(TestServer(server.application())) as c:
        text = await (await c.get("/metrics")).text()
        assert 'segmenter_delivery_delivered_total{destination="crm"} 12' in text
        assert 'segmenter_delivery_retried_total{destination="crm"} 3' in text
        assert 'segmenter_delivery_lag{destination="crm"} 4' in text
        assert 'segmenter_delivery_dead_lettered_total{destination="ads"} 0' in text
        body = await get(c, "/v1/destinations")
        assert [d["id"] for d in body["destinations"]] == ["ads", "crm"]
        assert (
            body["destinations"][1]["delivered"] == 12 and body["destinations"][0]["retried"] == 0
        )
