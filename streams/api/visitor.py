"""The visitor routes: what a browser may read about its own visitor (docs/api.md#visitors).

| route | credentials | what |
| --- | --- | --- |
| ``POST /v1/visitor/tokens`` | API key (site backend) | ``{"customer_id"}`` -> token |
| ``GET /v1/visitor/segments?token=`` | the token | the visitor's segment ids |
| ``GET /v1/visitor/stream?token=`` | the token | SSE: snapshot, entered, exited |
| ``OPTIONS`` of the two above | none | CORS preflight |
| ``GET /demo`` | none | a banner that swaps live |

A token grants one customer's segment ids, nothing else: no traits, no features, no reasons, no
other customer, and not the id of a profile it was merged into. A page's origin must be in
``SEGMENTER_VISITOR_ORIGINS`` (or be the API's own) for a browser to read the answers.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from streams.api.cors import cors_headers
from streams.api.guards import read_body
from streams.api.visitor_hub import StateReader, VisitorHub, VisitorStream, published_segments
from streams.api.visitor_tokens import (
    MAX_CUSTOMER_ID_CHARS,
    TokenError,
    VisitorToken,
    issue,
    verify,
)
from streams.settings import Settings
from streams.store.base import Store

log = logging.getLogger("segmenter.visitor")

RETRY_MS = 3000
"""The reconnection delay the stream asks EventSource for."""
OWN_CREDENTIALS = frozenset({"/v1/visitor/segments", "/v1/visitor/stream"})
"""Routes under /v1/ authorised by a visitor token instead of the API key."""
NO_SECRET = "visitor tokens are off: set SEGMENTER_VISITOR_SECRET"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _resume_point(request: web.Request) -> int | None:
    """The ``Last-Event-ID`` header (or ``last_event_id`` query), when it is a sequence."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or ""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


class VisitorRoutes:
    """Tokens, segments, the live stream and the demo page; ``hub`` is None where no feed
    runs (a worker's HTTP API): the stream then answers 503."""

    def __init__(self, settings: Settings, store: Store, hub: VisitorHub | None) -> None:
        self.settings = settings
        self.hub = hub
        self.reader = hub.reader if hub is not None else StateReader(store)

    def route(self, app: web.Application) -> None:
        """Add the routes to ``app``."""
        app.router.add_post("/v1/visitor/tokens", self._tokens)
        app.router.add_get("/v1/visitor/segments", self._segments)
        app.router.add_route("OPTIONS", "/v1/visitor/segments", self._preflight)
        app.router.add_get("/v1/visitor/stream", self._stream)
        app.router.add_route("OPTIONS", "/v1/visitor/stream", self._preflight)
        app.router.add_get("/demo", self._demo)

    # -- CORS and credentials ----------------------------------------------------------------

    def _cors(self, request: web.Request) -> dict[str, str] | None:
        """CORS headers for the request's origin; None when a page of that origin may not read
        the answer (no ``Origin``, or the API's own, needs none)."""
        return cors_headers(request, self.settings.visitor_origin_set)

    def _refused(self, request: web.Request) -> tuple[VisitorToken | None, web.Response | None]:
        """The request's grant, or the answer refusing it (403 origin, 401 token, 503 off)."""
        cors = self._cors(request)
        if cors is None:
            origin = request.headers.get("Origin")
            message = f"origin {origin} is not in SEGMENTER_VISITOR_ORIGINS"
            return None, _json({"error": message}, 403)
        secret = self.settings.visitor_secret
        if secret is None:
            return None, _json({"error": NO_SECRET}, 503, cors)
        try:
            grant = verify(
                secret.get_secret_value().encode(), request.query.get("token", ""), time.time()
            )
        except TokenError as exc:
            return None, _json({"error": str(exc)}, 401, cors)
        wanted = request.query.get("customer_id")
        if wanted is not None and wanted != grant.customer_id:
            return None, _json({"error": "this token is for another customer"}, 401, cors)
        return grant, None

    async def _preflight(self, request: web.Request) -> web.Response:
        cors = self._cors(request)
        if cors is None:
            return _json({"error": "origin not allowed"}, 403)
        cors.update(
            {
                "Access-Control-Allow-Methods": "GET",
                "Access-Control-Allow-Headers": "Last-Event-ID, Cache-Control",
                "Access-Control-Max-Age": "600",
            }
        )
        return web.Response(status=204, headers=cors)

    # -- routes ------------------------------------------------------------------------------

    async def _demo(self, request: web.Request) -> web.Response:
        page = resources.files("streams.api").joinpath("static", "demo.html").read_bytes()
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def _tokens(self, request: web.Request) -> web.Response:
        secret = self.settings.visitor_secret
        if secret is None:
            return _json({"error": NO_SECRET}, 503)
        try:
            body = orjson.loads(await read_body(request))
        except orjson.JSONDecodeError:
            return _json({"error": 'expected a JSON body {"customer_id": "..."}'}, 400)
        customer = body.get("customer_id") if isinstance(body, dict) else None
        if not isinstance(customer, str) or not 0 < len(customer) <= MAX_CUSTOMER_ID_CHARS:
            message = f"'customer_id' must be a string of 1 to {MAX_CUSTOMER_ID_CHARS} characters"
            return _json({"error": message}, 400)
        now = int(time.time())
        ttl = self.settings.visitor_token_ttl_s
        token = issue(secret.get_secret_value().encode(), customer, now, ttl)
        return _json({"token": token, "expires_at": _iso(now + ttl)})

    async def _segments(self, request: web.Request) -> web.Response:
        grant, refused = self._refused(request)
        if refused is not None:
            return refused
        assert grant is not None
        state = await self.reader.resolved(grant.customer_id)
        body = {
            "segments": published_segments(state),
            "sequence": state.sequence if state is not None else 0,
        }
        headers = {"Cache-Control": "no-store", **(self._cors(request) or {})}
        return _json(body, headers=headers)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        grant, refused = self._refused(request)
        if refused is not None:
            return refused
        assert grant is not None
        cors = self._cors(request) or {}
        hub = self.hub
        if hub is None:
            error = {
                "error": "live visitor streams are served by `segmenter api` with"
                " SEGMENTER_KAFKA_BOOTSTRAP set"
            }
            return _json(error, 503, cors)
        if hub.count >= self.settings.visitor_max_connections:
            error = {"error": "too many open visitor streams on this API process; retry later"}
            return _json(error, 503, {"Retry-After": "5", **cors})
        if not hub.ready.is_set():
            error = {"error": f"not reading {self.settings.migrations_topic} yet; retry later"}
            return _json(error, 503, {"Retry-After": "2", **cors})
        stream = VisitorStream(grant.customer_id)
        try:
            await hub.open(stream, _resume_point(request))
        except Exception as exc:  # Redis unreachable: the browser retries
            log.warning("cannot open a visitor stream: %r", exc)
            error = {"error": f"cannot read the visitor's segments now: {type(exc).__name__}"}
            return _json(error, 503, {"Retry-After": "2", **cors})
        try:
            return await self._serve(request, stream, cors)
        finally:
            hub.close(stream)

    async def _serve(
        self, request: web.Request, stream: VisitorStream, cors: dict[str, str]
    ) -> web.StreamResponse:
        """Write the stream's frames until it closes or the client leaves."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                **cors,
            }
        )
        transport = request.transport
        if transport is not None:
            stream.abort = transport.close
        await response.prepare(request)
        try:
            await response.write(b"retry: %d\n\n" % RETRY_MS)
            while (frames := await stream.next_frames()) is not None:
                await response.write(frames)
        except (ConnectionError, RuntimeError):  # the client left (aiohttp: closing transport)
            pass
        return response
