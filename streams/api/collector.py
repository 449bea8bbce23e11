"""The Segment-compatible HTTP collector: Segment's libraries send here as to Segment.

Routes (``POST``, and ``OPTIONS`` for browsers' CORS preflight): ``/v1/batch``, ``/v1/track``,
``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias``, and the one-letter
paths of analytics.js (``/v1/b``, ``/v1/t``...). They take a write key, not the API key:

- HTTP Basic with a key of ``SEGMENTER_WRITE_KEYS`` as the user name (the password is ignored),
  or ``writeKey`` in the body (browsers); none or a wrong one: 401 and nothing produced;
- a browser's ``Origin`` must be the API's own or one of ``SEGMENTER_COLLECTOR_ORIGINS`` (403
  otherwise); allowed origins get the CORS headers;
- bodies may be gzip-compressed (``Content-Encoding: gzip``: aiohttp inflates them, bounded);
- answers: 200 ``{"success": true}`` once every event is acknowledged by all in-sync replicas;
  400 ``{"success": false, "code", "message", "errors": [...]}`` for a refused request or
  refused events (the valid events of the same request are produced first); 503 with
  ``Retry-After`` when Kafka did not confirm (clients retry; ``messageId`` makes that safe);
  404 on processes that do not collect (workers).

What happens to the events themselves is :mod:`streams.api.tracking`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from streams.api.collector_sink import KafkaSink, SinkUnavailable
from streams.api.cors import cors_headers
from streams.api.guards import BODY_TIMEOUT_S
from streams.api.metrics import Exposition
from streams.api.tracking import (
    MAX_BODY_BYTES,
    ROUTES,
    SHORT_ROUTES,
    BodyError,
    Collected,
    Request,
    body_write_key,
    parse_body,
)
from streams.settings import Settings

log = logging.getLogger("segmenter.collector")

ALL_ROUTES = {**{name: name for name in ROUTES}, **SHORT_ROUTES}
"""Every path name under ``/v1/`` and the route it is."""
COLLECTOR_PATHS = frozenset(f"/v1/{name}" for name in ALL_ROUTES)
"""Paths that take a write key instead of ``SEGMENTER_API_KEY``."""
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Retry-Count"
RETRY_AFTER_S = "5"
SLICE = 25
"""Events checked and produced between two yields to the event loop."""


def _answer(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _refusal(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="segmenter collector"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": RETRY_AFTER_S}
    return _answer(status, {"success": False, "code": code, "message": message, **extra}, headers)


def basic_user(header: str | None) -> str | None:
    """The user name of an ``Authorization: Basic`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


class Collector:
    """The collector's routes on the API's aiohttp application.

    ``sink`` is the process's producer (``segmenter api``); without one the routes answer 404.
    """

    def __init__(self, settings: Settings, sink: KafkaSink | None) -> None:
        self.settings = settings
        self.sink = sink
        self.keys = tuple(key.encode() for key in settings.write_key_list())
        self.origins = settings.collector_origin_set
        self.requests: Counter[int] = Counter()
        self.events: Counter[str] = Counter()

    def route(self, app: web.Application) -> None:
        """Register every collector path."""
        for name, route in ALL_ROUTES.items():
            app.router.add_post(f"/v1/{name}", self._post_handler(route))
            app.router.add_route("OPTIONS", f"/v1/{name}", self._preflight)

    def _post_handler(self, route: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            cors = cors_headers(request, self.origins)
            if cors is None:
                origin = request.headers.get("Origin")
                refused = f"origin {origin} is not in SEGMENTER_COLLECTOR_ORIGINS"
                response = _refusal(403, "origin_not_allowed", refused)
            else:
                response = await self._collect(request, route)
                response.headers.update(cors)
            self.requests[response.status] += 1
            return response

        return handle

    async def _preflight(self, request: web.Request) -> web.Response:
        cors = cors_headers(request, self.origins)
        if not cors:
            return web.Response(status=403, text="origin not allowed")
        cors.update(
            {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
        return web.Response(status=204, headers=cors)

    def _known(self, key: str | None) -> bool:
        """True when ``key`` is one of the write keys (compared with every key, in constant
        time each)."""
        if key is None:
            return False
        given = key.encode()
        found = False
        for candidate in self.keys:
            found |= hmac.compare_digest(given, candidate)
        return found

    async def _read(self, request: web.Request) -> bytes:
        """The (inflated) body, at most :data:`MAX_BODY_BYTES` (a :class:`BodyError` beyond)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise BodyError(
                            "payload_too_large",
                            f"expected a body of at most {MAX_BODY_BYTES} bytes",
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f'{{"error": "the body did not arrive within {BODY_TIMEOUT_S:g}s"}}',
                content_type="application/json",
            ) from None
        return b"".join(chunks)

    async def _collect(self, request: web.Request, route: str) -> web.Response:
        sink = self.sink
        if sink is None:
            return _refusal(
                404,
                "not_collecting",
                "this process does not collect events: send them to a `segmenter api` that has"
                " SEGMENTER_KAFKA_BOOTSTRAP",
            )
        if not self.keys:
            unset = "the collector has no write keys: set SEGMENTER_WRITE_KEYS"
            return _refusal(401, "no_write_keys", unset)
        authorized = self._known(basic_user(request.headers.get("Authorization")))
        try:
            doc = parse_body(await self._read(request))
        except BodyError as exc:
            if not authorized:
                return self._unauthorized()
            return _refusal(400, exc.code, exc.message)
        if not authorized and not self._known(body_write_key(doc)):
            return self._unauthorized()
        try:
            body = Request.of(doc, route, datetime.now(UTC), self.settings.max_event_bytes)
        except BodyError as exc:
            return _refusal(400, exc.code, exc.message)
        try:
            found = await self._produce(sink, body)
        except SinkUnavailable as exc:
            log.warning("collector: %s", exc)
            return _refusal(503, "unavailable", str(exc))
        self.events["accepted"] += len(found.accepted)
        if not found.rejected:
            return _answer(200, {"success": True})
        self.events["rejected"] += len(found.rejected)
        first, accepted = found.rejected[0], len(found.accepted)
        message = (
            f"{len(found.rejected)} of {len(found.rejected) + accepted} events refused (the other"
            f" {accepted} were accepted); event {first.index}: {first.message}"
        )
        return _refusal(
            400,
            "invalid_events",
            message,
            accepted=accepted,
            errors=[r.as_json() for r in found.rejected],
        )

    @staticmethod
    async def _produce(sink: KafkaSink, body: Request) -> Collected:
        """Check and produce the request's events a slice at a time, yielding to the event
        loop between slices (so acknowledgements and other requests are not held up behind
        a large batch), and wait for the broker's acknowledgements of all of them."""
        found = Collected()
        acks: list[asyncio.Future[None]] = []
        for start in range(0, len(body.events), SLICE):
            part = body.collect(start, start + SLICE)
            found.accepted += part.accepted
            found.rejected += part.rejected
            acks += await sink.add(part.accepted)
            await asyncio.sleep(0)
        await sink.confirm(acks)
        return found

    def _unauthorized(self) -> web.Response:
        return _refusal(
            401,
            "unauthorized",
            "expected a write key: HTTP Basic with the key as user name, or 'writeKey' in the body",
        )

    def metrics_text(self) -> str:
        """The collector's counters in the Prometheus text format."""
        out = Exposition()
        out.family(
            "segmenter_collector_requests_total",
            "counter",
            "collector requests answered, by HTTP status",
            [({"status": str(status)}, count) for status, count in sorted(self.requests.items())],
        )
        out.family(
            "segmenter_collector_events_total",
            "counter",
            "collector events produced (accepted) or refused (rejected)",
            [({"outcome": o}, float(self.events[o])) for o in ("accepted", "rejected")],
        )
        return out.text()
