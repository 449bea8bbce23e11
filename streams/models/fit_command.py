"""``segmenter model fit [--calibration-end DATE] [--json]``: fit on stored customers, publish.

Every stored customer with at least one conversion (the pack's ``performance`` event) gives a
summary: orders, the days from the first to the last, the days since the first, and lifetime
revenue. BG/NBD and Gamma-Gamma are fitted on them by maximum likelihood and published
(``streams.models.published``); the API picks the new version up at its next request.

With ``--calibration-end DATE`` the fit uses only what happened before the date, and the report
compares, for each group of customers by repeat purchases before the date, the purchases the
model predicts for the time after it with those that happened (the standard calibration and
holdout check). Purchases after the date are counted from the state's conversion series, so the
date must lie within the pack's performance ``window_days``; nothing is published.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.api.queries import iter_states
from streams.engine import RuleSet, load_rules
from streams.engine.instants import HALF_MS
from streams.models.fitting import Summary, TooLittleData, fit_bgnbd, fit_gamma_gamma
from streams.models.predictor import History
from streams.models.published import publish
from streams.pipeline import rulepack
from streams.pipeline.timekeeping import namespace_now
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.state.customer import CustomerState
from streams.store.base import Store
from streams.store.redis_store import RedisStore

DAY = 86400.0
GROUPS = 7
"""Repeat-purchase groups of the calibration table: 0, 1, ..., 6 and "7+"."""


@dataclass
class Split:
    """One customer seen at the calibration end: before it, and the purchases after it."""

    row: Row
    after: int
    approximate: bool


def _say(text: str) -> None:
    print(f"segmenter model fit: {text}", file=sys.stderr, flush=True)


Row = tuple[int, float, float, float, float]
"""``(orders, t_x days, T days, revenue, revenue of the repeat orders)``."""


def summary_row(state: CustomerState, event: str, now: float) -> Row:
    """A customer's summary row at ``now`` (orders = 0 without one)."""
    h = History.of(state, event)
    if h is None:
        return (0, 0.0, 0.0, 0.0, 0.0)
    age = max(0.0, (now - h.first) / DAY)
    return (h.orders, (h.last - h.first) / DAY, age, h.revenue, h.repeat_revenue)


def split_at(state: CustomerState, rules: RuleSet, end: float) -> Split | None:
    """The customer before ``end`` and their purchases after it (None: first order after)."""
    conversion = rules.conversion
    assert conversion is not None
    h = History.of(state, conversion.event)
    if h is None or h.first >= end:
        return None
    series = state.series.get(conversion.series_id)
    entries = series.buckets if series is not None else []
    after = int(sum(e[1] for e in entries if e[0] >= end - HALF_MS))
    before = [e[0] for e in entries if e[0] < end - HALF_MS]
    count, first, last = h.orders, h.first, h.last
    approximate = False
    if after == 0:
        last_before = last
    elif before:
        last_before = max(before)
    else:  # the last purchase before the end is older than the series keeps: a lower bound
        last_before, approximate = first, count - after > 1
    orders = count - after
    mean = state.revenue / count if count else 0.0
    row = (
        orders,
        (last_before - first) / DAY,
        (end - first) / DAY,
        mean * orders,
        mean * max(orders - 1, 0),
    )
    return Split(row, after, approximate)


async def _read(
    store: Store, rules: RuleSet, now: float, end: float | None, say: Callable[[str], None]
) -> tuple[list[Row], list[Split]]:
    conversion = rules.conversion
    assert conversion is not None
    rows: list[Row] = []
    splits: list[Split] = []
    seen = 0
    async for state in iter_states(store):
        seen += 1
        if seen % 10_000 == 0:
            say(f"read {seen:,} customers")
        if end is None:
            row = summary_row(state, conversion.event, now)
            if row[0] >= 1:
                rows.append(row)
        else:
            split = split_at(state, rules, end)
            if split is not None:
                splits.append(split)
    say(f"read {seen:,} customers")
    return rows, splits


def calibration_table(splits: list[Split], model: Any, horizon_days: float) -> list[dict[str, Any]]:
    """Per group of repeat purchases before the end: customers, mean predicted and actual."""
    groups: dict[int, list[tuple[float, int]]] = {}
    for s in splits:
        orders, t_x, age, _, _ = s.row
        x = orders - 1
        predicted = model.expected_purchases(horizon_days, x, t_x, age)
        groups.setdefault(min(x, GROUPS), []).append((predicted, s.after))
    return [
        {
            "repeat_purchases": f"{g}+" if g == GROUPS else str(g),
            "customers": len(items),
            "predicted": sum(p for p, _ in items) / len(items),
            "actual": sum(a for _, a in items) / len(items),
        }
        for g, items in sorted(groups.items())
    ]


async def _fit(settings: Settings, calibration_end: float | None) -> dict[str, Any]:
    store = RedisStore.from_settings(settings)
    try:
        pack = await rulepack.published(store)
        rules = pack.rules if pack is not None else load_rules(settings.rules)
        conversion = rules.conversion
        if conversion is None:
            raise TooLittleData("the rule pack has no conversion event (performance file)")
        now = await namespace_now(store, settings.clock)
        if calibration_end is not None and not (now - conversion.window_s <= calibration_end < now):
            raise TooLittleData(
                f"--calibration-end must lie within the {conversion.window_s / DAY:g} days before"
                f" the namespace's now ({datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC;"
                " the pack's performance window_days: what the states keep of each purchase)"
            )
        rows, splits = await _read(store, rules, now, calibration_end, _say)
        data = [s.row for s in splits] if calibration_end is not None else rows
        _say(f"fitting BG/NBD and Gamma-Gamma on {len(data):,} customers with orders")
        summary = Summary.of(data)
        bg = fit_bgnbd(summary)
        try:
            gg: Any = fit_gamma_gamma(summary)
        except TooLittleData as exc:
            _say(f"no Gamma-Gamma: {exc}")
            gg = None
        document: dict[str, Any] = {
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "as_of": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "customers": len(summary),
            "repeat_customers": int((summary.x > 0).sum()),
            "unit": "days",
            "conversion_event": conversion.event,
            "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
            "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.v} if gg is not None else None,
        }
        if calibration_end is not None:
            horizon = (now - calibration_end) / DAY
            document["calibration"] = {
                "end": datetime.fromtimestamp(calibration_end, UTC).isoformat(),
                "holdout_days": horizon,
                "approximate_customers": sum(s.approximate for s in splits),
                "groups": calibration_table(splits, bg, horizon),
            }
            return document
        document["version"] = await publish(store, document)
        return document
    finally:
        await store.close()


def format_fit(found: dict[str, Any]) -> str:
    """The fit (and the calibration table) as text."""
    bg, gg = found["bgnbd"], found["gamma_gamma"]
    lines = [
        f"fitted on {found['customers']:,} customers ({found['repeat_customers']:,} repeat),"
        f" conversion {found['conversion_event']!r}, time in days",
        f"  BG/NBD      r={bg['r']:.4g} alpha={bg['alpha']:.4g} a={bg['a']:.4g} b={bg['b']:.4g}",
    ]
    if gg:
        lines.append(f"  Gamma-Gamma p={gg['p']:.4g} q={gg['q']:.4g} v={gg['v']:.4g}")
    if "version" in found:
        lines.append(f"published as version {found['version']}")
    calibration = found.get("calibration")
    if calibration:
        lines.append(
            f"calibration until {calibration['end']}, holdout {calibration['holdout_days']:.1f}"
            " days: purchases per customer after it"
        )
        lines.append(f"  {'repeat':>7} {'customers':>10} {'predicted':>10} {'actual':>10}")
        for g in calibration["groups"]:
            lines.append(
                f"  {g['repeat_purchases']:>7} {g['customers']:>10,} {g['predicted']:>10.3f}"
                f" {g['actual']:>10.3f}"
            )
    return "\n".join(lines)


def run_model_fit(settings: Settings, calibration_end: str | None, as_json: bool) -> int:
    """0 when fitted, 1 with too little data or a bad date, 2 without a Redis."""
    settings = with_running_stack(settings)
    if not settings.redis_url:
        _say("set SEGMENTER_REDIS_URL or run it beside `segmenter up`")
        return 2
    end = None
    if calibration_end is not None:
        try:
            parsed = datetime.fromisoformat(calibration_end)
        except ValueError:
            _say(f"--calibration-end: expected a date like 2026-09-01, got {calibration_end!r}")
            return 1
        end = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    try:
        found = asyncio.run(_fit(settings, end))
    except TooLittleData as exc:
        _say(f"too little data: {exc}")
        return 1
    print(orjson.dumps(found).decode() if as_json else format_fit(found))
    return 0


async def _publish(settings: Settings, document: dict[str, Any]) -> str:
    store = RedisStore.from_settings(settings)
    try:
        return await publish(store, document)
    finally:
        await store.close()


def run_model_publish(settings: Settings, path: str) -> int:
    """``segmenter model publish FILE``: make a fit from elsewhere (``--json`` output of
    ``model fit``, or ``GET /v1/models``) the current one."""
    from pathlib import Path

    from streams.models.published import FittedModels, version_of

    settings = with_running_stack(settings)
    if not settings.redis_url:
        _say("set SEGMENTER_REDIS_URL or run it beside `segmenter up`")
        return 2
    try:
        document = orjson.loads(Path(path).read_bytes())
        document.pop("version", None)
        document.pop("calibration", None)
        FittedModels.of({**document, "version": version_of(document)})
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        print(f"segmenter model publish: cannot use {path}: {exc!r}", file=sys.stderr)
        return 1
    print(f"published as version {asyncio.run(_publish(settings, document))}")
    return 0
