"""Security: the API key on every ``/v1/`` route, personal traits kept out of migrations and
logs, and TLS/ACL reaching the Redis client from the URL alone."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from redis.asyncio.connection import SSLConnection

from streams.api import guards
from streams.api import http as http_module
from streams.api.http import HttpServer
from streams.engine import parse_rules
from streams.pipeline.outbox import OutboxEntry
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.store.memory import MemoryStore
from streams.store.redis_store import RedisStore
from tests.kit import memory_store, pinned_context

KEY = "k3y-Ω-s3cret"
RULES = {
    "contact.yaml": """
id: reachable
name: Reachable
description: has an email address
kind: demographic
condition: {type: trait, path: email, op: exists}
""",
    "phone.yaml": """
id: north_american_phone
name: North American phone
description: phone number with +1
kind: demographic
condition: {type: trait, path: phone, op: contains, value: "+1"}
""",
    "named.yaml": """
id: named
name: Named
description: has a first name
kind: demographic
condition: {type: trait, path: first_name, op: exists}
""",
    "street.yaml": """
id: has_street
name: Has street
description: street address known
kind: demographic
condition: {type: trait, path: address.street, op: exists}
""",
    "canada.yaml": """
id: canadians
name: Canadians
description: lives in Canada
kind: demographic
condition: {type: trait, path: address.country, op: eq, value: CA}
""",
}
PERSONAL = {
    "email": "ada.lovelace@example.com",
    "phone": "+1-555-0100-777",
    "first_name": "Augusta",
    "last_name": "Byronova",
    "address": {"street": "12 Analytical Engine Row", "postal_code": "M5V 9Z9", "country": "CA"},
}
SECRETS = [
    "ada.lovelace@example.com",
    "+1-555-0100-777",
    "Augusta",
    "Byronova",
    "12 Analytical Engine Row",
    "M5V 9Z9",
]


# -- the API key ---------------------------------------------------------------------------------


def make_server(api_key: str | None) -> HttpServer:
    settings = Settings(clock="event", http_port=0, api_key=SecretStr(api_key) if api_key else None)
    rules = parse_rules(RULES)
    store = MemoryStore()

    async def health() -> dict[str, Any]:
        return {"ok": True, "redis": True, "started": True}

    metrics = PipelineContext.create(settings, rules, store, 1).metrics
    return HttpServer(settings, rules, store, metrics, health)


def v1_routes(server: HttpServer) -> list[tuple[str, str]]:
    """Every registered ``/v1/`` route, with its placeholders filled in."""
    routes = []
    for route in server.application().router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") and route.method != "HEAD":
            routes.append((route.method, path.replace("{id}", "reachable")))
    return sorted(set(routes))


BAD_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": KEY},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": f"Bearerx {KEY}"},
    {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {KEY} x"},
    {"X-Api-Key": KEY},
]


async def test_every_v1_route_needs_the_bearer_key() -> None:
    """Every ``/v1/`` route but the browser-facing families with credentials of their own (the
    visitor token routes and the collector's write keys, tested in test_visitor_api.py and
    test_collector.py) answers 401 without the key."""
    server = make_server(KEY)
    assert {
        "/v1/visitor/segments",
        "/v1/visitor/stream",
        *(f"/v1/{name}" for name in ("batch", "track", "identify", "page", "screen", "group")),
        *(f"/v1/{name}" for name in ("alias", "b", "t", "i", "p", "s", "g", "a")),
    } == http_module.OWN_CREDENTIALS
    routes = [r for r in v1_routes(server) if r[1] not in http_module.OWN_CREDENTIALS]
    assert len(routes) >= 8, routes
    assert ("POST", "/v1/visitor/tokens") in routes
    async with TestClient(TestServer(server.application())) as client:
        for method, path in routes:
            for headers in BAD_HEADERS:
                response = await client.request(method, path, headers=headers, data=b"{}")
                body = await response.text()
                assert response.status == 401, (method, path, headers)
                assert KEY not in body
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            good = {"Authorization": f"Bearer {KEY}"}
            response = await client.request(method, path, headers=good, data=b"{}")
            assert response.status != 401, (method, path)
        # unknown /v1/ paths are refused before routing, so they reveal nothing either
        assert (await client.get("/v1/nope")).status == 401
        assert (await client.get("/v1/customers/x/../../segments")).status == 401
        # the operational routes stay open
        for path in ("/healthz", "/metrics", "/openapi.json", "/"):
            assert (await client.get(path)).status == 200, path


async def test_the_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guards.hmac, "compare_digest", spy)
    server = make_server(KEY)
    async with TestClient(TestServer(server.application())) as client:
        assert (
            await client.get("/v1/segments", headers={"Authorization": "Bearer no"})
        ).status == 401
        good = {"Authorization": f"Bearer {KEY}"}
        assert (await client.get("/v1/segments", headers=good)).status == 200
    assert len(calls) == 2
    assert calls[1] == (KEY.encode(), KEY.encode())


async def test_the_scheme_is_case_insensitive_as_rfc_7235_says() -> None:
    """``bearer``, ``BEARER`` and several spaces after the scheme carry the key as well."""
    server = make_server(KEY)
    async with TestClient(TestServer(server.application())) as client:
        for header in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer   {KEY}", f"bEaReR {KEY}"):
            response = await client.get("/v1/segments", headers={"Authorization": header})
            assert response.status == 200, header


async def test_without_a_key_the_api_is_open() -> None:
    server = make_server(None)
    async with TestClient(TestServer(server.application())) as client:
        assert (await client.get("/v1/segments")).status == 200


def test_the_key_never_shows_in_the_settings_repr() -> None:
    settings = Settings(api_key=SecretStr(KEY))
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


# -- personal traits ------------------------------------------------------------------------------


def doc(kind: str, mid: str, ts: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {"type": kind, "messageId": mid, "userId": "ada", "timestamp": ts, **fields}
    )


async def test_personal_traits_never_reach_migrations_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings()
    assert {"email", "phone", "first_name", "address.street"} <= set(settings.personal_traits)
    ctx = pinned_context(parse_rules(RULES), settings)
    values = [
        doc("identify", "m1", "2026-01-05T10:00:00Z", traits=PERSONAL),
        doc("track", "m2", "2026-01-05T10:01:00Z", event="Order Completed", properties={}),
        doc("identify", "m3", "2026-01-05T10:02:00Z", traits={"email": None, "phone": None}),
        doc("identify", "m4", "2026-01-05T10:03:00Z", traits={"email": "second@example.org"}),
        doc("consent", "m5", "2026-01-05T10:04:00Z", categoryPreferences={"marketing": False}),
        doc("erase", "m6", "2026-01-05T10:05:00Z"),
    ]
    records = [Record(settings.input_topic, 0, i, b"ada", v) for i, v in enumerate(values)]
    caplog.set_level(logging.DEBUG)
    for record in records:
        await process_batch(ctx, [record])
    store = memory_store(ctx)
    entries = [OutboxEntry.decode(raw) for raw in store.outboxes.get(0, [])]
    migrations = [e for e in entries if e.topic == settings.migrations_topic]
    entered = {orjson.loads(e.value or b"")["segment"] for e in migrations}
    assert {"reachable", "north_american_phone", "named", "has_street", "canadians"} <= entered
    secrets = [*SECRETS, "second@example.org"]
    for entry in entries:
        if entry.topic == settings.dlq_topic:
            continue  # the DLQ carries the input unchanged, by contract
        blob = (entry.value or b"") + b"".join(v for _, v in entry.headers) + (entry.key or b"")
        for secret in secrets:
            assert secret.encode() not in blob, (secret, entry)
    for migration in migrations:
        reason = orjson.loads(migration.value or b"")["reason"]["values"]
        for path in ("email", "phone", "first_name", "address.street"):
            if path in reason:
                assert reason[path] in ("[redacted]", None), reason
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in logged, secret


async def test_a_rule_on_a_parent_of_a_personal_trait_does_not_leak_it() -> None:
    rules = parse_rules(
        {
            "address.yaml": """
id: has_address
name: Has address
description: any address known
kind: demographic
condition: {type: trait, path: address, op: exists}
"""
        }
    )
    settings = Settings()
    ctx = pinned_context(rules, settings)
    value = doc("identify", "m1", "2026-01-05T10:00:00Z", traits=PERSONAL)
    await process_batch(ctx, [Record(settings.input_topic, 0, 0, b"ada", value)])
    store = memory_store(ctx)
    published = b"".join(
        OutboxEntry.decode(raw).value or b""
        for raw in store.outboxes.get(0, [])
        if OutboxEntry.decode(raw).topic == settings.migrations_topic
    )
    assert b"has_address" in published
    assert b"12 Analytical Engine Row" not in published


# -- Redis ACL and TLS from the URL ---------------------------------------------------------------


async def test_a_rediss_url_gives_a_tls_pool_with_the_acl_user_without_connecting() -> None:
    store = RedisStore.from_url("rediss://seguser:pw%40x@127.0.0.1:1/3", "ns")
    pool = store.client.connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    kwargs = pool.connection_kwargs
    assert kwargs["username"] == "seguser"
    assert kwargs["password"] == "pw@x"
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 1 and kwargs["db"] == 3
    assert len(pool._available_connections) == 0  # nothing connected yet
    assert pool._in_use_connections == set()
    await store.close()


async def test_a_redis_url_with_acl_but_no_tls_stays_plain() -> None:
    store = RedisStore.from_url("redis://seguser:pw@127.0.0.1:1/0", "ns")
    pool = store.client.connection_pool
    assert not issubclass(pool.connection_class, SSLConnection)
    assert pool.connection_kwargs["username"] == "seguser"
    await store.close()


def test_an_empty_secret_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SEGMENTER_API_KEY=`` (an empty line in .env or a compose passthrough) turns the key
    off instead of requiring an empty bearer token; the same for the other secrets."""
    for name in ("SEGMENTER_API_KEY", "SEGMENTER_WRITE_KEYS", "SEGMENTER_VISITOR_SECRET"):
        monkeypatch.setenv(name, " ")
    settings = Settings()
    assert (settings.api_key, settings.write_keys, settings.visitor_secret) == (None, None, None)
    assert settings.write_key_list() == ()
    monkeypatch.setenv("SEGMENTER_API_KEY", "k1")
    assert Settings().api_key == SecretStr("k1")
