"""The analytics routes: size history, overlap, performance and the MIDAS report.

Performance and the report read every customer state once (see ``streams.analytics``); the
result of that pass is kept for ``CACHE_S`` seconds per window and rule version, so a dashboard
polling several routes pays for one pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from streams.analytics import history as h
from streams.analytics.overlap import Overlap, matrix, pair
from streams.analytics.performance import performance
from streams.analytics.population import Population, measure
from streams.analytics.report import report
from streams.api import queries
from streams.engine import RuleSet
from streams.engine.durations import DurationError, parse_duration
from streams.models.predictor import History, Predictor
from streams.models.published import ModelReader
from streams.pipeline.timekeeping import namespace_now
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.base import Store

CACHE_S = 10.0
PREDICTION_SAMPLE = 1000
OVERLAP_CACHE_S = 60.0
"""How long the API reuses an overlap matrix (each pair is one ``SINTERCARD``, up to about
100 ms of Redis time for sets of hundreds of thousands of members)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class BadRequest(Exception):
    """A query parameter the route cannot use; the message says why."""


def _epoch(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"{name}: expected an ISO 8601 time, got {value!r}") from exc


class AnalyticsRoutes:
    """Handlers that read the store and the current rule set (``rules()``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        rules: Callable[[], RuleSet],
        models: ModelReader | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.models = models or ModelReader()
        self._cache: dict[tuple[float, str], tuple[float, Population]] = {}
        self._pairs: dict[tuple[str, ...], tuple[float, list[Overlap]]] = {}

    def route(self, app: web.Application) -> None:
        """Add the routes (before ``/v1/segments/{id}``, which would take ``overlap``)."""
        app.router.add_get("/v1/segments/overlap", self._overlap)
        app.router.add_get("/v1/segments/{id}/history", self._history)
        app.router.add_get("/v1/segments/{id}/performance", self._performance)
        app.router.add_get("/v1/report", self._report)
        app.router.add_get("/v1/segments/{id}/predictions", self._predictions)

    async def population(self, rules: RuleSet, window_s: float) -> Population:
        """The pass over every customer for ``window_s`` (cached for ``CACHE_S``)."""
        key = (window_s, rules.version)
        cached = self._cache.get(key)
        now = time.time()
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        at = await namespace_now(self.store, self.settings.clock)
        found = await measure(self.store, rules, at, window_s, self.settings.report_device_traits)
        self._cache = {key: (now, found)}
        return found

    async def overlaps(self, rules: RuleSet, ids: list[str]) -> list[Overlap]:
        """Every pair of ``ids`` (cached for ``OVERLAP_CACHE_S`` per rule version and ids)."""
        key = (rules.version, *ids)
        cached = self._pairs.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < OVERLAP_CACHE_S:
            return cached[1]
        found = await matrix(self.store, await self.store.segment_sizes(), ids)
        self._pairs = {key: (now, found)}
        return found

    def _window(self, rules: RuleSet, raw: str | None) -> float:
        conversion = rules.conversion
        if conversion is None:
            raise BadRequest("this rule pack has no conversion for performance")
        if raw is None:
            return min(self.settings.report_window_days * 86400, conversion.window_s)
        try:
            window = parse_duration(raw)
        except DurationError as exc:
            raise BadRequest(f"window: {exc}") from exc
        if window > conversion.window_s:
            days = conversion.window_s / 86400
            raise BadRequest(
                f"window: at most {days:g}d (the pack's performance window_days; the states keep"
                " no more)"
            )
        return window

    async def _history(self, request: web.Request) -> web.Response:
        segment = request.match_info["id"]
        if segment not in self.rules():
            return _error(404, f"no segment {segment!r}")
        asked = request.query.get("granularity", "hour")
        if asked not in ("hour", "day"):
            return _error(400, f"granularity: expected 'hour' or 'day', got {asked!r}")
        granularity: h.Granularity = "day" if asked == "day" else "hour"
        try:
            since = _epoch(request.query.get("since"), "since")
            until = _epoch(request.query.get("until"), "until")
        except BadRequest as exc:
            return _error(400, str(exc))
        if since is not None and until is not None and since > until:
            return _error(400, "since is after until")
        points = h.hourly(await self.store.history(), segment)
        if granularity == "day":
            points = h.daily(points)
        length = 3600 if granularity == "hour" else 86400
        chosen = [
            p.as_dict(granularity)
            for p in points
            if (since is None or p.start + length > since) and (until is None or p.start <= until)
        ]
        return _json({"segment": segment, "granularity": granularity, "points": chosen})

    async def _overlap(self, request: web.Request) -> web.Response:
        rules = self.rules()
        raw = request.query.get("segments")
        ids = [s for s in raw.split(",") if s] if raw else list(rules.ids)
        unknown = [s for s in ids if s not in rules]
        if unknown:
            return _error(404, f"no segment {unknown[0]!r}")
        if len(set(ids)) != len(ids):
            twice = next(s for s in ids if ids.count(s) > 1)
            return _error(400, f"segment {twice!r} is listed twice (a segment with itself)")
        if len(ids) < 2:
            return _error(400, "segments: name at least two segments to compare")
        if len(ids) == 2:
            sizes = await self.store.segment_sizes()
            pairs = [await pair(self.store, sizes, ids[0], ids[1])]
        else:
            pairs = await self.overlaps(rules, ids)
        return _json({"segments": ids, "pairs": [p.as_dict() for p in pairs]})

    async def _performance(self, request: web.Request) -> web.Response:
        rules = self.rules()
        segment = request.match_info["id"]
        if segment not in rules:
            return _error(404, f"no segment {segment!r}")
        try:
            window = self._window(rules, request.query.get("window"))
        except BadRequest as exc:
            return _error(400, str(exc))
        return _json(performance(await self.population(rules, window), rules, segment))

    async def _predictions(self, request: web.Request) -> web.Response:
        rules = self.rules()
        segment = request.match_info["id"]
        if segment not in rules:
            return _error(404, f"no segment {segment!r}")
        models = await self.models.current(self.store)
        if models is None or rules.conversion is None:
            return _error(404, "no model fitted yet: run `segmenter model fit`")
        ids = await queries.sample_members(self.store, segment, PREDICTION_SAMPLE)
        states = await queries.load_states(self.store, ids)
        predictor = Predictor(models, rules.conversion.event)
        now = await namespace_now(self.store, self.settings.clock)
        return _json(predictions_view(segment, states, predictor, now))

    async def _report(self, request: web.Request) -> web.Response:
        rules = self.rules()
        try:
            window = self._window(rules, request.query.get("window"))
        except BadRequest as exc:
            return _error(400, str(exc))
        return _json(await build_report(self.store, rules, self.settings, window, self))


def predictions_view(
    segment: str, states: list[CustomerState], predictor: Predictor, now: float
) -> dict[str, Any]:
    """A segment's members by P(alive) (ten bins) and their expected orders in 90 days."""
    bins = [0] * 10
    expected: list[float] = []
    without = 0
    for state in states:
        history = History.of(state, predictor.event)
        if history is None:
            without += 1
            continue
        alive = predictor.value("p_alive", None, history, now)
        orders = predictor.value("expected_orders", 90 * 86400.0, history, now)
        if alive is None or orders is None:
            without += 1
            continue
        bins[min(9, int(alive * 10))] += 1
        expected.append(orders)
    expected.sort()
    return {
        "segment": segment,
        "model_version": predictor.version,
        "sampled": len(states),
        "without_orders": without,
        "p_alive_bins": bins,
        "expected_orders_90d": {
            "mean": sum(expected) / len(expected) if expected else None,
            "median": expected[len(expected) // 2] if expected else None,
            "total": sum(expected),
        },
    }


async def build_report(
    store: Store,
    rules: RuleSet,
    settings: Settings,
    window_s: float,
    routes: AnalyticsRoutes | None = None,
) -> dict[str, Any]:
    """The report over ``window_s`` (``routes`` lends its cached pass, when given)."""
    population = (
        await routes.population(rules, window_s)
        if routes is not None
        else await measure(
            store,
            rules,
            await namespace_now(store, settings.clock),
            window_s,
            settings.report_device_traits,
        )
    )
    sizes = await store.segment_sizes()
    ids = list(rules.ids)
    pairs = (
        await routes.overlaps(rules, ids) if routes is not None else await matrix(store, sizes, ids)
    )
    return report(population, rules, sizes, await store.history(), pairs, settings)
