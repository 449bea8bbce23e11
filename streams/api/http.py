"""The HTTP API served by every worker: lookups, segment sizes, health and metrics.

Routes (see CONTRACT.md): ``GET /v1/customers/{id}``, ``GET /v1/customers/{id}/explain``,
``GET /v1/segments``, ``GET /v1/segments/{id}/members?cursor=``, ``GET /healthz``,
``GET /metrics``, ``GET /openapi.json`` and the dashboard at ``/``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from streams.api.customers import customer_view, explain_view
from streams.api.openapi import openapi_document
from streams.engine import RuleSet
from streams.pipeline.processor import Metrics
from streams.settings import Settings
from streams.stack.embedded import free_port
from streams.store.base import Store

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class HttpServer:
    """An aiohttp server bound to ``settings.http_host``/``http_port`` (0 picks a free port)."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        store: Store,
        metrics: Metrics,
        health: HealthCheck,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.store = store
        self.metrics = metrics
        self.health = health
        self.port = settings.http_port or free_port(settings.http_host)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://{self.settings.http_host}:{self.port}"

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._dashboard)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/v1/segments", self._segments)
        app.router.add_get("/v1/segments/{segment}/members", self._members)
        app.router.add_get("/v1/customers/{customer_id}", self._customer)
        app.router.add_get("/v1/customers/{customer_id}/explain", self._explain)
        return app

    async def start(self) -> None:
        """Bind and serve."""
        self._runner = web.AppRunner(self.application(), access_log=None)
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
        if key is not None and request.path.startswith("/v1/"):
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {key.get_secret_value()}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _error(401, "expected 'Authorization: Bearer <SEGMENTER_API_KEY>'")
        return await handler(request)

    async def _dashboard(self, request: web.Request) -> web.Response:
        page = resources.files("streams.api").joinpath("static", "index.html").read_text()
        return web.Response(text=page, content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        status = await self.health()
        return _json(status, 200 if status.get("ok") else 503)

    async def _openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())

    async def _metrics(self, request: web.Request) -> web.Response:
        m = self.metrics
        lines = [
            "# TYPE segmenter_events_total counter",
            f"segmenter_events_total {m.events}",
            "# TYPE segmenter_dlq_total counter",
            f"segmenter_dlq_total {m.dlq}",
            "# TYPE segmenter_duplicates_total counter",
            f"segmenter_duplicates_total {m.duplicates}",
            "# TYPE segmenter_redelivered_total counter",
            f"segmenter_redelivered_total {m.redelivered}",
            "# TYPE segmenter_rerouted_total counter",
            f"segmenter_rerouted_total {m.forwarded}",
            "# TYPE segmenter_late_events_total counter",
            f"segmenter_late_events_total {m.late}",
            "# TYPE segmenter_batches_total counter",
            f"segmenter_batches_total {m.batches}",
            "# TYPE segmenter_rule_eval_seconds_total counter",
            f"segmenter_rule_eval_seconds_total {m.eval_seconds:.6f}",
            "# TYPE segmenter_migrations_total counter",
        ]
        for (segment, direction, trigger), count in sorted(m.migrations_by.items()):
            lines.append(
                f'segmenter_migrations_total{{segment="{segment}",direction="{direction}",'
                f'trigger="{trigger}"}} {count}'
            )
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _segments(self, request: web.Request) -> web.Response:
        sizes = await self.store.segment_sizes()
        return _json(
            {
                "rule_version": self.rules.version,
                "segments": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "description": s.description,
                        "kind": s.kind,
                        "family": s.family,
                        "priority": s.priority,
                        "size": sizes.get(s.id, 0),
                    }
                    for s in self.rules.segments
                ],
            }
        )

    async def _members(self, request: web.Request) -> web.Response:
        segment = request.match_info["segment"]
        if segment not in {s.id for s in self.rules.segments}:
            return _error(404, f"no segment {segment!r}")
        try:
            cursor = int(request.query.get("cursor", "0"))
            limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        except ValueError:
            return _error(400, "expected integer 'cursor' and 'limit'")
        following, members = await self.store.members(segment, cursor, limit)
        return _json({"segment": segment, "members": members, "next_cursor": following or None})

    async def _customer(self, request: web.Request) -> web.Response:
        view = await customer_view(self.store, self.rules, request.match_info["customer_id"])
        if view is None:
            return _error(404, "unknown customer")
        return _json(view)

    async def _explain(self, request: web.Request) -> web.Response:
        now = time.time()
        view = await explain_view(self.store, self.rules, request.match_info["customer_id"], now)
        if view is None:
            return _error(404, "unknown customer")
        return _json(view)
