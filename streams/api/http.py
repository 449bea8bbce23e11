"""The HTTP API served by every worker: lookups, segments, previews, health, metrics, dashboard.

Routes (documented in ``docs/api.md`` and ``GET /openapi.json``):

| route | what |
| --- | --- |
| ``GET /v1/customers/{id}`` | segments, primary segment, traits, key features |
| ``GET /v1/customers/{id}/explain`` | every segment: holds or not, deciding clause, values |
| ``GET /v1/segments`` | every segment with its live size |
| ``GET /v1/segments/{id}`` | a segment's summary over a sample of its members |
| ``GET /v1/segments/{id}/members?cursor=&limit=`` | a page of members |
| ``POST /v1/segments/preview`` | what a draft segment would do, without activating it |
| ``GET /v1/migrations/matrix?day=YYYY-MM-DD`` | moves between segments on a day |
| ``GET /v1/rfm/grid`` | a 5x5 recency x frequency grid of a sample of customers |
| ``GET /healthz``, ``GET /metrics``, ``GET /openapi.json``, ``GET /`` | ops and dashboard |
| ``POST /v1/batch``, ``/v1/track``... | the Segment-compatible collector (:mod:`.collector`) |
| ``/v1/visitor/...``, ``GET /demo`` | browsers' own tokens (:mod:`streams.api.visitor`) |

Every ``/v1/`` route needs ``Authorization: Bearer <SEGMENTER_API_KEY>`` when that is set,
except those with credentials of their own (``OWN_CREDENTIALS``, the collector's write keys).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from streams.api import guards, queries
from streams.api.analytics import AnalyticsRoutes
from streams.api.collector import COLLECTOR_PATHS, Collector
from streams.api.collector_sink import KafkaSink
from streams.api.customers import customer_view, explain_view
from streams.api.guards import (
    MAX_CURSOR,
    bearer_matches,
    errors,
    query_int,
    quiet_bad_requests,
    read_body,
)
from streams.api.metrics import CONTENT_TYPE, render
from streams.api.openapi import openapi_document
from streams.api.preview import DraftError, PreviewTimeout, run_preview
from streams.api.visitor import OWN_CREDENTIALS as VISITOR_CREDENTIALS
from streams.api.visitor import VisitorRoutes
from streams.api.visitor_hub import VisitorHub
from streams.engine import RuleSet
from streams.models.published import ModelReader
from streams.pipeline.metrics import Metrics
from streams.pipeline.timekeeping import namespace_now
from streams.settings import Settings
from streams.stack.embedded import free_port
from streams.store.base import Store

log = logging.getLogger("segmenter.http")

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]
LagProbe = Callable[[], Awaitable[Mapping[int, int]]]
"""Input partition -> records behind the end of the partition (for ``/metrics``)."""
DELIVERY_FIGURES = (
    "delivered",
    "retried",
    "dead_lettered",
    "requests",
    "skipped",
    "lag",
    "updated_at",
)
DeliveryProbe = Callable[[], Awaitable[Mapping[str, Mapping[str, float]]]]
"""Each destination's counters and lag (see ``streams.deliver.metrics``)."""

STATIC = {
    "app.js": "application/javascript",
    "report.js": "application/javascript",
    "charts.js": "application/javascript",
    "app.css": "text/css",
    "segmenter.js": "application/javascript",
}
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
RFM_SAMPLE = 5000
OWN_CREDENTIALS = VISITOR_CREDENTIALS | COLLECTOR_PATHS
"""Routes under /v1/ that take credentials of their own instead of the API key."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


def _static(name: str) -> bytes:
    return resources.files("streams.api").joinpath("static", name).read_bytes()


class HttpServer:
    """An aiohttp server bound to ``settings.http_host``/``http_port`` (0 picks a free port).

    ``lag``, when given, reports consumer lag per input partition on ``/metrics``; a
    ``consumer_lag`` mapping attribute on ``metrics`` is read too when present. ``sink``, the
    producer of ``segmenter api``, makes the collector routes take events (without it they
    answer 404). ``visitors``, the fan-out hub of ``segmenter api``, serves the live visitor
    streams (without it they answer 503).
    """

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        store: Store,
        metrics: Metrics,
        health: HealthCheck,
        lag: LagProbe | None = None,
        delivery: DeliveryProbe | None = None,
        sink: KafkaSink | None = None,
        visitors: VisitorHub | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.store = store
        self.metrics = metrics
        self.health = health
        self.lag = lag
        self.delivery = delivery
        self.models = ModelReader()
        self.analytics = AnalyticsRoutes(settings, store, lambda: self.rules, self.models)
        self.collector = Collector(settings, sink)
        self.visitors = visitors
        self.visitor_routes = VisitorRoutes(settings, store, visitors)
        self.port = settings.http_port or free_port(settings.http_host)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.settings.http_host}:{self.port}"

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(middlewares=[self._auth, errors], client_max_size=1024 * 1024)
        app.router.add_get("/", self._dashboard)
        app.router.add_get("/report", self._report_page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/v1/segments", self._segments)
        app.router.add_post("/v1/segments/preview", self._preview)
        self.analytics.route(app)
        app.router.add_get("/v1/segments/{id:[^/]+}", self._segment)
        app.router.add_get("/v1/segments/{id:[^/]+}/members", self._members)
        app.router.add_get("/v1/customers/{id:[^/]+}", self._customer)
        app.router.add_get("/v1/customers/{id:[^/]+}/explain", self._explain)
        app.router.add_get("/v1/migrations/matrix", self._matrix)
        app.router.add_get("/v1/rfm/grid", self._rfm)
        app.router.add_get("/v1/destinations", self._destinations)
        app.router.add_get("/v1/models", self._models)
        self.collector.route(app)
        self.visitor_routes.route(app)
        return app

    async def start(self) -> None:
        """Bind and serve."""
        quiet_bad_requests()
        self._runner = web.AppRunner(
            self.application(),
            access_log=None,
            keepalive_timeout=guards.IDLE_TIMEOUT_S,
            lingering_time=guards.LINGER_S,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.port)
        await site.start()

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key = self.settings.api_key
        path = request.path
        if key is not None and path.startswith("/v1/") and path not in OWN_CREDENTIALS:
            given = request.headers.get("Authorization", "")
            if not bearer_matches(given, key.get_secret_value()):
                response = _error(401, "expected 'Authorization: Bearer <SEGMENTER_API_KEY>'")
                response.headers["WWW-Authenticate"] = 'Bearer realm="segmenter"'
                return response
        return await handler(request)

    # -- dashboard and operations ------------------------------------------------------------

    async def _dashboard(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")

    async def _report_page(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("report.html"), content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            return _error(404, "no such file")
        return web.Response(body=_static(name), content_type=STATIC[name], charset="utf-8")

    async def _status(self) -> dict[str, Any]:
        try:
            status = dict(await self.health())
        except Exception as exc:
            return {"ok": False, "error": repr(exc)}
        ok = bool(status.get("ok"))
        ok = ok and status.get("redis") is not False and not status.get("stalled")
        status["ok"] = ok
        return status

    async def _healthz(self, request: web.Request) -> web.Response:
        status = await self._status()
        return _json(status, 200 if status["ok"] else 503)

    async def _openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def _lag(self) -> Mapping[int, int] | None:
        if self.lag is not None:
            try:
                return await self.lag()
            except Exception as exc:
                log.debug("consumer lag unavailable: %r", exc)
                return None
        found = getattr(self.metrics, "consumer_lag", None)
        return found if isinstance(found, Mapping) else None

    async def _delivery(self) -> Mapping[str, Mapping[str, float]]:
        if self.delivery is None:
            return {}
        try:
            return await self.delivery()
        except Exception as exc:
            log.debug("delivery metrics unavailable: %r", exc)
            return {}

    async def _destinations(self, request: web.Request) -> web.Response:
        found = await self._delivery()
        return _json(
            {
                "destinations": [
                    {"id": destination, **dict.fromkeys(DELIVERY_FIGURES, 0.0), **figures}
                    for destination, figures in sorted(found.items())
                ]
            }
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.unreadable_states = queries.Skipped.count
        status = await self._status()
        try:
            sizes = await self.store.segment_sizes()
        except Exception as exc:
            log.debug("segment sizes unavailable: %r", exc)
            sizes = {}
        text = render(
            self.metrics,
            sizes,
            list(self.rules.ids),
            await self._lag(),
            status["ok"],
            await self._delivery(),
        )
        if self.collector.sink is not None:
            text += self.collector.metrics_text()
        if self.visitors is not None:
            text += self.visitors.metrics_text()
        response = web.Response(text=text)
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    # -- segments ----------------------------------------------------------------------------

    def _describe(self, segment_id: str, size: int) -> dict[str, Any]:
        s = self.rules.segment(segment_id)
        return {
            "id": s.id,
            "name": s.name,
            "description": s.description,
            "kind": s.kind,
            "family": s.family,
            "priority": s.priority,
            "size": size,
        }

    async def _segments(self, request: web.Request) -> web.Response:
        sizes = await self.store.segment_sizes()
        return _json(
            {
                "rule_version": self.rules.version,
                "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "segments": [self._describe(sid, sizes.get(sid, 0)) for sid in self.rules.ids],
            }
        )

    async def _segment(self, request: web.Request) -> web.Response:
        segment = request.match_info["id"]
        if segment not in self.rules:
            return _error(404, f"no segment {segment!r}")
        sizes = await self.store.segment_sizes()
        ids = await queries.sample_members(self.store, segment, queries.SAMPLE_SIZE)
        states = await queries.load_states(self.store, ids)
        return _json(
            {
                **self._describe(segment, sizes.get(segment, 0)),
                "members": sizes.get(segment, 0),
                "summary": queries.summarize(states),
            }
        )

    async def _members(self, request: web.Request) -> web.Response:
        segment = request.match_info["id"]
        if segment not in self.rules:
            return _error(404, f"no segment {segment!r}")
        cursor = query_int(request, "cursor", 0, 0, MAX_CURSOR)
        limit = query_int(request, "limit", 100, 1, 1000)
        following, members = await self.store.members(segment, cursor, limit)
        return _json({"segment": segment, "members": members, "next_cursor": following or None})

    async def _preview(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _error(422, "invalid draft", errors=[f"draft.yaml:0: expected UTF-8: {exc}"])
        if text.lstrip().startswith("{"):
            text = text.replace("\t", " ")  # JSON may indent with tabs, YAML may not
        now = await namespace_now(self.store, self.settings.clock)
        try:
            preview = await run_preview(self.store, self.rules, text, self.settings.rules, now)
        except DraftError as exc:
            return _error(422, "invalid draft", errors=exc.lines)
        except PreviewTimeout as exc:
            return _error(422, "draft too complex", errors=[f"draft.yaml:0: {exc}"])
        return _json(preview.as_json())

    # -- customers ---------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        models = await self.models.current(self.store)
        if models is None:
            return _error(404, "no model fitted yet: run `segmenter model fit`")
        return _json(models.document)

    async def _customer(self, request: web.Request) -> web.Response:
        models = await self.models.current(self.store)
        now = await namespace_now(self.store, self.settings.clock)
        view = await customer_view(self.store, self.rules, request.match_info["id"], models, now)
        if view is None:
            return _error(404, "unknown customer")
        return _json(view)

    async def _explain(self, request: web.Request) -> web.Response:
        now = await namespace_now(self.store, self.settings.clock)
        models = await self.models.current(self.store)
        view = await explain_view(self.store, self.rules, request.match_info["id"], now, models)
        if view is None:
            return _error(404, "unknown customer")
        return _json(view)

    # -- analytics ---------------------------------------------------------------------------

    async def _matrix(self, request: web.Request) -> web.Response:
        day = request.query.get("day") or datetime.now(UTC).strftime("%Y-%m-%d")
        if not DAY.match(day):
            return _error(400, "expected 'day' as YYYY-MM-DD")
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            return _error(400, f"no such day {day!r}")
        cells = await queries.migration_matrix(self.store, day)
        names = {s.id: s.name for s in self.rules.segments}
        used = sorted({sid for pair in cells for sid in pair} - {queries.NONE_SEGMENT})
        return _json(
            {
                "day": day,
                "segments": [{"id": sid, "name": names.get(sid, sid)} for sid in used],
                "cells": [
                    {"from": a, "to": b, "count": n}
                    for (a, b), n in sorted(cells.items(), key=lambda kv: (-kv[1], kv[0]))
                ],
                "total": sum(cells.values()),
            }
        )

    async def _rfm(self, request: web.Request) -> web.Response:
        states = [s async for s in queries.iter_states(self.store, RFM_SAMPLE)]
        return _json(queries.rfm_grid(states, await namespace_now(self.store, self.settings.clock)))
